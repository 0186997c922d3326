"""The `anomalyr1` command.

User mistakes (a bad recipe, broken data, a cluster too small) end with one line on stderr and
exit code 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from anomalyr1.platform.recipe import RecipeError, load_recipe

USER_ERRORS = (RecipeError,)


def _user_errors() -> tuple[type[BaseException], ...]:
    from anomalyr1.data_pipelines import DataError
    from anomalyr1.platform.placement import PlacementError

    return USER_ERRORS + (DataError, PlacementError)


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (default: the embedded tiny CPU recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set trainer.steps=20 (repeatable)")


def cmd_validate(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    print(f"ok: {args.recipe or 'tiny_cpu.yaml'} (model {recipe.model.path}, {recipe.trainer.steps} steps, G={recipe.rollout.n})")
    return 0


def cmd_train(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    from anomalyr1.platform.driver import Trainer, connect_ray

    trainer = Trainer(recipe)  # loads data and the model path: fails here, before Ray, on bad input
    connect_ray(recipe)
    final = trainer.train()
    print(f"final model: {final}\nmetrics: {trainer.output / 'metrics.jsonl'}")
    return 0


def cmd_keys(args) -> int:
    from anomalyr1.platform.recipe import recipe_keys

    print("| key | default | meaning |\n|---|---|---|")
    for key, default, description in recipe_keys():
        print(f"| `{key}` | `{default}` | {description.replace('|', '/')} |")
    return 0


def cmd_build_tiny_model(args) -> int:
    from anomalyr1.platform.models import build_tiny_qwen2_5_vl

    print(build_tiny_qwen2_5_vl(args.out, seed=args.seed))
    return 0


def cmd_synthetic_data(args) -> int:
    from anomalyr1.data_pipelines import generate_synthetic_mmad

    print(generate_synthetic_mmad(args.out, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomalyr1", description="GRPO training of multimodal LLMs for industrial anomaly detection, on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a recipe without running it")
    _recipe_args(validate)
    validate.set_defaults(run=cmd_validate)
    train = commands.add_parser("train", help="run a recipe")
    _recipe_args(train)
    train.set_defaults(run=cmd_train)
    keys = commands.add_parser("keys", help="print every recipe key with its default and meaning (Markdown)")
    keys.set_defaults(run=cmd_keys)
    tiny = commands.add_parser("build-tiny-model", help="write a tiny random Qwen2.5-VL (offline)")
    tiny.add_argument("out")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=cmd_build_tiny_model)
    synth = commands.add_parser("synthetic-data", help="write a small synthetic MMAD-format dataset")
    synth.add_argument("out")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=cmd_synthetic_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
