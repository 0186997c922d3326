"""Metrics out: one JSON line per step (always), a console progress bar, TensorBoard and
Weights & Biases when the recipe asks (trainer.tensorboard, trainer.wandb_project).

Names follow one scheme so dashboards and scripts can rely on them: reward/<term>,
actor/<name>, timing/<stage>_s, compute/<stage>_s, throughput/<name>, perf/<name>.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from tqdm import tqdm


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


class MetricsLog:
    def __init__(self, path: Path, total_steps: int, progress_bar: bool, records: list[dict] = (), sinks: list | None = None):
        """Starts the file afresh with `records` (the metrics of the steps already run, when resuming)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", encoding="utf-8")
        self._bar = tqdm(total=total_steps, desc="train", unit="step", dynamic_ncols=True) if progress_bar else None
        self._sinks = sinks or []
        self.rewrite(list(records))

    def write(self, step: int, metrics: dict[str, float]) -> dict:
        """Append the step's line (non-finite values as null) and return it as written."""
        record = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in sorted(metrics.items())}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        finite = {k: v for k, v in record.items() if k != "step" and v is not None}
        for sink in self._sinks:
            sink.log(step, finite)
        if self._bar is not None:
            self._bar.set_postfix(
                reward=f"{metrics.get('reward/mean', 0):.3f}",
                kl=f"{metrics.get('actor/kl', 0):.4f}",
                len=f"{metrics.get('response_length/mean', 0):.0f}",
                step_s=f"{metrics.get('timing/step_s', 0):.2f}",
                refresh=False,
            )
            self._bar.update(1)
        return record

    def rewrite(self, records: list[dict]) -> None:
        """Back to `records` (a resume, or a rewind to a checkpoint): later lines are dropped, to be redone."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write("".join(json.dumps(record) + "\n" for record in records))
        self._file.flush()
        if self._bar is not None:
            self._bar.n = records[-1]["step"] if records else 0
            self._bar.refresh()

    def close(self) -> None:
        self._file.close()
        for sink in self._sinks:
            sink.close()
        if self._bar is not None:
            self._bar.close()


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class TensorBoardSink:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(folder))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def log_records(self, step: int, key: str, records: list[dict]) -> None:
        """Records (e.g. logged completions) as a Markdown table in TensorBoard's Text tab."""
        if not records:
            return
        columns = list(records[0])
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(_cell(r.get(c))).replace("|", "\\|").replace("\n", "<br>") for c in columns) + " |" for r in records]
        self._writer.add_text(key, "\n".join(lines), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """A W&B run named after the output folder; WANDB_MODE=offline keeps it on disk."""

    def __init__(self, project: str, name: str, config: dict, folder: Path):
        import wandb

        self._run = wandb.init(project=project, name=name, config=config, dir=str(folder), resume="allow", id=name)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(metrics, step=step)

    def log_records(self, step: int, key: str, records: list[dict]) -> None:
        """Records (e.g. logged completions) as a W&B table, nested values as JSON text."""
        import wandb

        if not records:
            return
        columns = list(records[0])
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in records])
        self._run.log({key: table}, step=step)

    def close(self) -> None:
        self._run.finish()


def _cell(value) -> str | float | int | bool | None:
    """A table cell: scalars as they are, lists and dicts as JSON."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def metric_sinks(trainer, output: Path, recipe_dict: dict) -> list:
    sinks: list = []
    if trainer.tensorboard:
        sinks.append(TensorBoardSink(output / "tensorboard"))
    if trainer.wandb_project:
        sinks.append(WandbSink(trainer.wandb_project, output.name, recipe_dict, output))
    return sinks

