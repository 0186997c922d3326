"""Reading a run folder (what `anomalyr1 train` leaves) or an eval folder (`anomalyr1 eval`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from anomalyr1.data_pipelines.scoring import score_answers
from anomalyr1.platform.eval_answers import ANSWERS_FILE, EVALS_DIR, TABLE_FILE
from anomalyr1.platform.mask_index import INDEX_FILE, read_mask_index
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.rollout_log import ROLLOUTS_DIR, read_rollouts, step_of

METRICS_FILE = "metrics.jsonl"
RECIPE_FILE = "recipe.yaml"


class ReportError(ValueError):
    """The folder is not a run or an eval output (one line for the user)."""


@dataclass
class Evaluation:
    step: int | None
    """Training step of an evaluation during training; None for an `anomalyr1 eval` folder."""
    table: dict
    """table.json's content: {"table": {row: {column: percent or None}}, "scored", "left_out"}."""


@dataclass
class RunData:
    folder: Path
    kind: str
    """"train" (metrics.jsonl) or "eval" (answers.json)."""
    metrics: list[dict] = field(default_factory=list)
    recipe_text: str | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    """In step order; the last is the latest."""
    rollouts: list[dict] = field(default_factory=list)
    """Logged completion records (rollouts/step_N.jsonl), in step order."""
    answers: list[dict] = field(default_factory=list)
    """An eval folder's answer records (full responses)."""
    masks: dict[str, str] = field(default_factory=dict)
    """An eval folder's SAM2 masks (`anomalyr1 masks`): answered image key -> mask PNG."""

    @property
    def restart_steps(self) -> list[int]:
        """Steps at which some role's actor had died and was recovered (a fault counter rose)."""
        steps, before = [], 0.0
        for record in self.metrics:
            total = sum(v or 0.0 for k, v in record.items() if k.startswith("fault/"))
            if total > before:
                steps.append(record["step"])
            before = max(before, total)
        return steps


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from exc


def _steps(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return sorted((n, p) for p in folder.iterdir() if (n := step_of(p)) is not None)


def read_run(folder: str | Path, masks: str | Path | None = None) -> RunData:
    """`masks`: the folder `anomalyr1 masks --out` wrote for an eval folder's answers; by default
    the eval folder itself when it holds a masks.json (masks written with --out EVAL_DIR)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder (expected a training run's trainer.output_dir or an `anomalyr1 eval` --out folder)")
    if masks is not None and not (folder / ANSWERS_FILE).is_file():
        raise ReportError(f"--masks goes with an `anomalyr1 eval` folder (one holding {ANSWERS_FILE}); {folder} is not one")
    if (folder / METRICS_FILE).is_file():
        try:
            metrics = read_metrics(folder / METRICS_FILE)
        except ValueError as exc:
            raise ReportError(f"{folder / METRICS_FILE}: not JSON lines ({exc})") from exc
        recipe = folder / RECIPE_FILE
        return RunData(
            folder=folder,
            kind="train",
            metrics=metrics,
            recipe_text=recipe.read_text(encoding="utf-8") if recipe.is_file() else None,
            evaluations=[Evaluation(n, _json(p / TABLE_FILE)) for n, p in _steps(folder / EVALS_DIR) if (p / TABLE_FILE).is_file()],
            rollouts=[r for _, p in _steps(folder / ROLLOUTS_DIR) for r in read_rollouts(p)],
        )
    if (folder / ANSWERS_FILE).is_file():
        answers = _json(folder / ANSWERS_FILE)
        if not isinstance(answers, list):
            raise ReportError(f"{folder / ANSWERS_FILE}: expected a JSON list of answer records")
        table = score_answers(answers, source=str(folder / ANSWERS_FILE)).to_json()  # table.json is this same table
        if masks is None and (folder / INDEX_FILE).is_file():
            masks = folder
        try:
            index = read_mask_index(masks) if masks is not None else {}
        except ValueError as exc:
            raise ReportError(str(exc)) from exc
        return RunData(folder=folder, kind="eval", answers=answers, evaluations=[Evaluation(None, table)], masks=index)
    raise ReportError(f"{folder}: holds neither {METRICS_FILE} (a training run) nor {ANSWERS_FILE} (an `anomalyr1 eval` output)")
