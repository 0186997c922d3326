"""Reward specs -> reward objects.

A recipe names a reward as a string so that it travels to Ray workers as plain data: a
registered name (`roam`), a file (`path/to/file.py:fn`, relative to the working directory)
or an importable attribute (`package.module:fn`). Any mistake in the spec fails here, at
load time, with a ValueError naming the spec, long before a training step runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, TypeVar

from .base import Reward
from .function import FunctionReward, declared_range

T = TypeVar("T")

_REGISTRY: dict[str, Any] = {}


def _identity(obj: Any) -> tuple[Any, Any]:
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)


def register_reward(name: str) -> Callable[[T], T]:
    """Register a Reward subclass or a `fn(completion, sample, **params)` under `name`.

    Registering the same definition again (a re-imported module) is allowed; claiming a name
    that another definition holds is an error, since a silent swap would change what a
    recipe trains with.
    """
    if not name or ":" in name:
        raise ValueError(f"reward name must be non-empty and without ':', got {name!r}")

    def decorate(obj: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and _identity(existing) != _identity(obj):
            raise ValueError(f"reward name {name!r} is already registered to {'.'.join(map(str, _identity(existing)))}")
        _REGISTRY[name] = obj
        if isinstance(obj, type) and issubclass(obj, Reward):
            obj.name = name
        return obj

    return decorate


def list_rewards() -> list[str]:
    return sorted(_REGISTRY)


def load_reward(spec: str, **params: Any) -> Reward:
    """Build the reward `spec` names, with `params` overriding its parameters."""
    target, name = _resolve(spec)
    try:
        return _build(target, name, params)
    except Exception as exc:  # a bad parameter value, or a user constructor that rejects it
        raise ValueError(f"reward {spec!r}: {exc}") from exc


def _resolve(spec: str) -> tuple[Any, str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"reward spec must be a non-empty string, got {spec!r}")
    if ":" not in spec:
        if spec in _REGISTRY:
            return _REGISTRY[spec], spec
        raise ValueError(
            f"unknown reward {spec!r}; registered: {', '.join(list_rewards())}; "
            "or give 'path/to/file.py:fn' or 'package.module:fn'"
        )
    location, _, attr = spec.rpartition(":")
    if not location or not attr:
        raise ValueError(f"reward spec {spec!r} must look like 'path/to/file.py:fn' or 'package.module:fn'")
    is_file = location.endswith(".py") or "/" in location or "\\" in location
    module = _load_file(location, spec) if is_file else _import_module(location, spec)
    if not hasattr(module, attr):
        raise ValueError(f"reward {spec!r}: {location} has no attribute {attr!r}")
    return getattr(module, attr), attr


def _load_file(location: str, spec: str) -> ModuleType:
    path = Path(location).resolve()
    if not path.is_file():
        raise ValueError(f"reward {spec!r}: file {path} not found")
    module_name = "_anomalyr1_user_reward_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"reward {spec!r}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing so dataclasses and pickling inside the file can find it.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ValueError(f"reward {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(location: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(location)
    except Exception as exc:
        raise ValueError(f"reward {spec!r}: cannot import module {location!r}: {type(exc).__name__}: {exc}") from exc


def _build(target: Any, name: str, params: dict[str, Any]) -> Reward:
    if isinstance(target, type) and issubclass(target, Reward):
        _check_params(params, _keyword_names(target, skip=0))
        return target(**params)
    if isinstance(target, Reward):
        _check_params(params, set())
        return target
    if isinstance(target, type):
        # A user class that is not a Reward: its instances are the scoring functions.
        _check_params(params, _keyword_names(target, skip=0))
        return _build(target(**params), name, {})
    if callable(target):
        _check_params(params, _keyword_names(target, skip=2))
        return FunctionReward(target, name, dict(params), declared_range(target))
    raise ValueError(f"{name!r} is a {type(target).__name__}, not a reward")


def _keyword_names(target: Callable[..., Any], skip: int) -> set[str] | None:
    """Parameters `target` accepts by keyword after its first `skip` ones (completion,
    sample); None when it takes **kwargs or its signature cannot be read."""
    try:
        parameters = list(inspect.signature(target).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _check_params(params: dict[str, Any], accepted: set[str] | None) -> None:
    unknown = set(params) - accepted if accepted is not None else set()
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; accepted: {sorted(accepted or ())}")
