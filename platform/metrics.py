"""Metrics out: one JSON line per step (always), a console progress bar, TensorBoard if asked.

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
    def __init__(self, path: Path, total_steps: int, progress_bar: bool, start_step: int = 0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True) if progress_bar else None

    def write(self, step: int, metrics: dict[str, float]) -> dict:
        """Append the step's line (non-finite values as null) and return it as written."""
        record = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in sorted(metrics.items())}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
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

    def rewrite(self, records: list[dict], step: int) -> None:
        """Back to `records` (a rewind to a checkpoint): later lines are dropped, to be redone."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write("".join(json.dumps(record) + "\n" for record in records))
        self._file.flush()
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()

    def close(self) -> None:
        self._file.close()
        if self._bar is not None:
            self._bar.close()


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
