"""The `anomalyr1` command.

User mistakes (a bad recipe, broken data, a cluster too small) end with one line on stderr and
exit code 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from anomalyr1.platform.recipe import RecipeError, load_recipe

USER_ERRORS = (RecipeError,)


def _user_errors() -> tuple[type[BaseException], ...]:
    from anomalyr1.data_pipelines import DataError
    from anomalyr1.platform.placement import PlacementError
    from anomalyr1.platform.report.run import ReportError

    return USER_ERRORS + (DataError, PlacementError, ReportError)


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (default: the embedded tiny CPU recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set trainer.steps=20 (repeatable)")


def cmd_validate(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    print(f"ok: {args.recipe or 'tiny_cpu.yaml'} (model {recipe.model.path}, {recipe.trainer.steps} steps, G={recipe.rollout.n})")
    return 0


def cmd_train(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)  # a bad recipe fails here, before Ray
    from anomalyr1.platform.ray_session import connect_ray

    # Ray's processes start (main thread: Ray wants it for its signal handler) while the driver's
    # modules (torch, transformers: seconds of one core) import in a second thread
    with ThreadPoolExecutor(1) as pool:
        importing = pool.submit(importlib.import_module, "anomalyr1.platform.driver")
        begin = time.perf_counter()
        connect_ray(recipe)
        ray_start_s = time.perf_counter() - begin
        driver = importing.result()
    trainer = driver.Trainer(recipe, resume=args.resume)  # loads data and the model path: bad input fails here, before any actor starts
    final = trainer.train(ray_start_s)
    print(f"final model: {final}\nmetrics: {trainer.output / 'metrics.jsonl'}")
    print(f"report: anomalyr1 report {trainer.output}   (writes {trainer.output / 'report.html'}; open it in a browser)")
    return 0


def cmd_submit(args) -> int:
    # fails here, before any contact with the cluster (a relative path too, in job_spec); files are looked for where the job runs
    recipe = load_recipe(args.recipe, args.overrides, check_files=False)
    from pathlib import Path

    from anomalyr1.platform.submit import SubmitError, follow, job_spec, submit

    try:
        job_id = submit(job_spec(args.recipe, args.overrides, recipe, Path.cwd()), args.address)
        print(f"job: {job_id}", flush=True)
        if args.no_follow:
            print(f"logs: ray job logs --address {args.address} --follow {job_id}")
            return 0
        status, message = follow(args.address, job_id)
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on (ray job stop --address {args.address} JOB_ID stops it)", file=sys.stderr)
        return 130
    if status != "SUCCEEDED":
        print(f"error: job {job_id} {status}: {message}", file=sys.stderr)
        return 1
    print(f"job {job_id} SUCCEEDED")
    return 0


def cmd_keys(args) -> int:
    from anomalyr1.platform.recipe import recipe_keys

    print("| key | default | meaning |\n|---|---|---|")
    for key, default, description in recipe_keys():
        meaning = " ".join(description.split()).replace("|", "/")  # one table row per key, however the docstring wraps
        print(f"| `{key}` | `{default}` | {meaning} |")
    return 0


def cmd_build_dataset(args) -> int:
    from anomalyr1.data_pipelines.hf_dataset import build_hf_dataset
    from anomalyr1.platform.prompt_source import load_training_data

    recipe = load_recipe(args.recipe, args.overrides)
    loaded = load_training_data(recipe.data, recipe.model.cache_dir)
    out = build_hf_dataset(loaded.samples, args.out)
    print(f"{out}: {len(loaded.samples)} questions; train from it with --set data.source=hf --set data.root={out}")
    return 0


def cmd_build_tiny_model(args) -> int:
    from anomalyr1.platform.models import build_tiny_qwen2_5_vl

    print(build_tiny_qwen2_5_vl(args.out, seed=args.seed))
    return 0


def cmd_synthetic_data(args) -> int:
    from anomalyr1.data_pipelines import generate_synthetic_mmad

    print(generate_synthetic_mmad(args.out, seed=args.seed))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def cmd_fewshot(args) -> int:
    from anomalyr1.data_pipelines import load_mmad
    from anomalyr1.data_pipelines.fewshot import FewShotSettings, read_image_keys, select_fewshot

    loaded = load_mmad(args.root)
    exclude = read_image_keys(args.exclude) if args.exclude else ()
    given = {name: getattr(args, name) for name in ("per_class", "total", "seed") if hasattr(args, name)}
    chosen = select_fewshot(loaded.samples, FewShotSettings(**given), exclude)
    chosen.save(args.out)
    print(f"{args.out}: {len(chosen.images)} images from {chosen.classes} classes "
          f"({chosen.excluded} evaluation images excluded, {len(loaded.problems)} broken entries skipped)")
    return 0


def cmd_score(args) -> int:
    import json

    from anomalyr1.data_pipelines.scoring import read_answers, score_answers

    scores = score_answers(read_answers(args.answers), source=args.answers)
    print(scores.render())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump(scores.to_json(), file, indent=1)
    return 0


def cmd_eval(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    from anomalyr1.platform.evaluate import evaluate

    out = args.out or f"{recipe.trainer.output_dir}/eval"
    result = evaluate(recipe, args.checkpoint, out, prompt=args.prompt)
    print(result.scores.render())
    print(f"{result.questions} questions in {result.answer_s:.1f} s ({result.questions_per_s:.1f}/s)\n"
          f"answers: {result.answers_path}\ntable: {result.table_path}")
    return 0


def cmd_masks(args) -> int:
    from anomalyr1.platform.localize import make_masks

    result = make_masks(args.answers, args.root, args.out, sam2=args.sam2, cache_dir=args.cache_dir,
                        batch_size=args.batch_size, device=args.device)
    print(result.scores.render())
    for problem in result.scores.problems[:10]:
        print(f"  {problem}")
    print(f"masks: {result.index_path}\nscores: {result.scores_path}")
    return 0


def cmd_report(args) -> int:
    from anomalyr1.platform.report.build import write_report

    out = write_report(args.folder, args.out, args.masks)
    print(f"{out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def cmd_convert_mvtec3d(args) -> int:
    from anomalyr1.data_pipelines.mvtec3d import convert_mvtec3d

    result = convert_mvtec3d(args.source, args.out, seed=args.seed)
    print(f"{result.root}: {result.images} images, {result.questions} questions, {len(result.problems)} problems")
    for problem in result.problems[:10]:
        print(f"  {problem}")
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
    train.add_argument("--resume", action="store_true", help="continue from the newest readable checkpoint in trainer.output_dir")
    train.set_defaults(run=cmd_train)
    submit = commands.add_parser("submit", help="run a recipe as a Ray job on a cluster and follow its logs")
    submit.add_argument("recipe", help="recipe YAML inside the repository (uploaded as the job's working_dir)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set trainer.steps=20 (repeatable)")
    submit.add_argument("--address", required=True, help="the cluster's job server, e.g. http://HEAD:8265")
    submit.add_argument("--no-follow", action="store_true", help="print the job id and return without waiting for the job")
    submit.set_defaults(run=cmd_submit)
    keys = commands.add_parser("keys", help="print every recipe key with its default and meaning (Markdown)")
    keys.set_defaults(run=cmd_keys)
    build = commands.add_parser("build-dataset", help="write the recipe's data as a Hugging Face dataset with its images inside")
    _recipe_args(build)
    build.add_argument("--out", required=True, help="dataset folder to write (reused when unchanged)")
    build.set_defaults(run=cmd_build_dataset)
    tiny = commands.add_parser("build-tiny-model", help="write a tiny random Qwen2.5-VL (offline)")
    tiny.add_argument("out")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=cmd_build_tiny_model)
    synth = commands.add_parser("synthetic-data", help="write a small synthetic MMAD-format dataset")
    synth.add_argument("out")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=cmd_synthetic_data)
    fewshot = commands.add_parser("fewshot", help="choose a few-shot training set from an MMAD root and save it")
    fewshot.add_argument("root", metavar="MMAD_ROOT")
    fewshot.add_argument("--out", required=True, metavar="FILE", help="the few-shot file to write (JSON)")
    fewshot.add_argument("--per-class", type=_positive_int, default=argparse.SUPPRESS,
                         help="images per (dataset, category, defect type) at most (default 3)")
    fewshot.add_argument("--total", type=_positive_int, default=argparse.SUPPRESS,
                         help="images in all at most (default 600, as in the paper)")
    fewshot.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="default 0")
    fewshot.add_argument("--exclude", metavar="EVAL_FILE",
                         help="images never to choose: a list of mmad.json keys, an answers file, a few-shot file or an mmad.json")
    fewshot.set_defaults(run=cmd_fewshot)
    score = commands.add_parser("score", help="the MMAD table of an answers file")
    score.add_argument("answers", metavar="ANSWERS.json")
    score.add_argument("--out", metavar="TABLE.json", help="also write the table as JSON")
    score.set_defaults(run=cmd_score)
    evaluation = commands.add_parser("eval", help="answer the recipe's data greedily and write answers.json and the MMAD table")
    _recipe_args(evaluation)
    evaluation.add_argument("--checkpoint", metavar="DIR", help="model folder to evaluate (e.g. RUN/final; default: the recipe's model)")
    evaluation.add_argument("--out", metavar="DIR", help="where answers.json and table.json go (default: trainer.output_dir/eval)")
    evaluation.add_argument("--prompt", help="prompt to ask with (default: MMAD's own, mmad_eval; a recipe with the localization prompt keeps it; "
                            "anomalyr1_eval: the AnomalyR1 reference's protocol, 1024 greedy tokens, shuffled options, its letter reading)")
    evaluation.set_defaults(run=cmd_eval)
    masks = commands.add_parser("masks", help="SAM2 masks from the boxes in an answers file, scored against the ground-truth masks")
    masks.add_argument("answers", metavar="ANSWERS", help="answers.json from `anomalyr1 eval` (records with image and response)")
    masks.add_argument("--root", required=True, metavar="DATA_ROOT", help="the MMAD-format root the answers' images are relative to")
    masks.add_argument("--out", required=True, metavar="DIR", help="where masks/, masks.json and localization.json go")
    masks.add_argument("--sam2", metavar="MODEL",
                       help="SAM2 in transformers' format: a local folder, a hub id or builtin:tiny-sam2 (default: facebook/sam2.1-hiera-tiny)")
    masks.add_argument("--batch-size", type=_positive_int, default=8, help="images per SAM2 forward pass (default 8)")
    masks.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    masks.add_argument("--cache-dir", default="~/.cache/anomalyr1", help="where builtin:tiny-sam2 is built (default ~/.cache/anomalyr1)")
    masks.set_defaults(run=cmd_masks)
    report = commands.add_parser("report", help="one self-contained HTML page of a training run or an eval output")
    report.add_argument("folder", metavar="RUN_DIR", help="a run's trainer.output_dir, or an `anomalyr1 eval` --out folder")
    report.add_argument("--out", metavar="FILE.html", help="where to write it (default: RUN_DIR/report.html)")
    report.add_argument("--masks", metavar="MASKS_DIR", help="an eval folder's `anomalyr1 masks --out` folder: the gallery "
                        "fills each image's SAM2 mask (default: the eval folder, if it holds masks.json)")
    report.set_defaults(run=cmd_report)
    mvtec3d = commands.add_parser("convert-mvtec3d", help="MVTec 3D-AD's RGB test images as an MMAD-format set")
    mvtec3d.add_argument("source", metavar="MVTEC3D_ROOT")
    mvtec3d.add_argument("--out", required=True, metavar="DIR", help="the MMAD root to write (links + mmad.json)")
    mvtec3d.add_argument("--seed", type=int, default=0)
    mvtec3d.set_defaults(run=cmd_convert_mvtec3d)
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
