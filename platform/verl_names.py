"""The names verl's `core_algos` registers, read from its source instead of importing it.

A recipe names verl's advantage estimators and policy losses, and a typo must fail when the
recipe is checked. Importing verl for that costs torch, transformers and about 8 s, on a
laptop that only submits a job or validates a file. Registration in verl is a decorator with a
literal argument (`@register_adv_est(AdvantageEstimator.GRPO)` or `("grpo")`,
`@register_policy_loss("vanilla")`), so the names, and each estimator's required parameters, can
be read from the module's syntax tree. A test checks this reading against verl's live registries.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

OUTCOME_ARGS = {"token_level_rewards", "response_mask", "index"}
"""What the platform gives an estimator: outcome (one scalar per completion) rewards and groups."""


@functools.cache
def _registrations() -> dict[str, dict[str, ast.FunctionDef]]:
    spec = importlib.util.find_spec("verl")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("verl is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "trainer" / "ppo" / "core_algos.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    enum_values: dict[str, str] = {}
    found: dict[str, dict[str, ast.FunctionDef]] = {"register_adv_est": {}, "register_policy_loss": {}}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "AdvantageEstimator":
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
                    enum_values.update({target.id: item.value.value for target in item.targets if isinstance(target, ast.Name)})
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name) and decorator.func.id in found and decorator.args):
                continue
            argument = decorator.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found[decorator.func.id][argument.value] = node
            elif isinstance(argument, ast.Attribute) and argument.attr in enum_values:
                found[decorator.func.id][enum_values[argument.attr]] = node
    return found


def _required_parameters(function: ast.FunctionDef) -> set[str]:
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    without_default = positional[: len(positional) - len(arguments.defaults)]
    keyword_only = [a for a, default in zip(arguments.kwonlyargs, arguments.kw_defaults) if default is None]
    return {a.arg for a in without_default + keyword_only}


def known_adv_estimators() -> set[str]:
    """verl's estimators that need nothing beyond outcome rewards and group ids (no critic)."""
    return {name for name, fn in _registrations()["register_adv_est"].items() if _required_parameters(fn) <= OUTCOME_ARGS}


def known_policy_losses() -> set[str]:
    return set(_registrations()["register_policy_loss"])
