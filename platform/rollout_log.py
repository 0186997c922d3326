"""Rollout logs: what the model wrote, one JSON line per completion, for people to read.

metrics.jsonl says that the reward moved; these files say why. On a logged step (every
trainer.log_rollouts_every steps, and always the first and the last) the driver hands the step's
groups, scores and advantages here, and up to trainer.log_rollout_groups prompt groups land in
<output_dir>/rollouts/step_<N>.jsonl, mirrored to the run's TensorBoard text / W&B table sinks.
`anomalyr1 report` reads the files back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from anomalyr1.platform.batch import RolloutGroup, TrainSequence
    from anomalyr1.rewards import RewardResult

ROLLOUTS_DIR = "rollouts"
_STEP_NAME = re.compile(r"step_(\d+)(\.jsonl)?$")


def step_of(path: Path) -> int | None:
    """N of a `step_N` folder or `step_N.jsonl` file, else None."""
    match = _STEP_NAME.match(path.name)
    return int(match.group(1)) if match else None


def drop_steps_after(folder: Path, step: int) -> None:
    """Remove `step_N` entries with N > step: a fresh run (step 0) or a resumed one must not show
    an earlier run's later steps as its own."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        number = step_of(path)
        if number is None or number <= step:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def is_logged_step(step: int, total_steps: int, every: int) -> bool:
    return every > 0 and (step == 1 or step == total_steps or step % every == 0)


def completion_records(
    step: int,
    groups: Sequence[RolloutGroup],
    scores: Sequence[Sequence[RewardResult]],
    advantages: Sequence[float],
    max_new_tokens: int,
    chosen: Sequence[int],
) -> list[dict]:
    """One record per completion of the `chosen` groups; `advantages` is flat over all groups'
    completions in order (as the driver's TrainSequences are)."""
    offsets, total = [], 0
    for group in groups:
        offsets.append(total)
        total += len(group.responses)
    records = []
    for gi in chosen:
        group, sample = groups[gi], groups[gi].sample
        extra = sample.get("extra") or {}
        for i, text in enumerate(group.texts):
            length = len(group.responses[i])
            records.append({
                "step": step,
                "sample_id": sample["id"],
                "group": gi,
                "completion_index": i,
                "dataset": sample["dataset"],
                "category": sample["category"],
                "defect_type": sample["defect_type"],
                "question_type": sample["question_type"],
                "image": sample["image"],
                "reference_images": list(sample.get("reference_images") or ()),
                "question": sample["question"],
                "options": sample["options"],
                "truth": sample["answer"],
                "bbox": list(sample["bbox"]) if sample.get("bbox") is not None else None,
                "mask_path": sample.get("mask_path"),
                "image_size": extra.get("image_size"),
                "input_size": list(group.model_input_size) if group.model_input_size else None,
                "completion": text,
                "reward": scores[gi][i].score,
                "reward_parts": dict(scores[gi][i].parts),
                "advantage": float(advantages[offsets[gi] + i]),
                "length": length,
                "cut": length >= max_new_tokens,
            })
    return records


class RolloutLog:
    """Writes the logged steps' completions; one instance per training run."""

    def __init__(self, output: Path, trainer, max_new_tokens: int, sinks: list = (), start_step: int = 0):
        """trainer: the recipe's trainer section (steps, log_rollouts_every, log_rollout_groups)."""
        self.folder = output / ROLLOUTS_DIR
        self.every, self.max_groups, self.total = trainer.log_rollouts_every, trainer.log_rollout_groups, trainer.steps
        self.max_new_tokens = max_new_tokens
        self.sinks = list(sinks)
        drop_steps_after(self.folder, start_step)
        first = self.path(1)
        self.first_ids = {r["sample_id"] for r in read_rollouts(first)} if first.is_file() else set()
        """Prompts logged at step 1 (read back on resume): preferred later, so that when a prompt
        comes round again the report can set its first and later completions side by side."""

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step}.jsonl"

    def write(self, step: int, groups, scores, sequences: Sequence[TrainSequence]) -> Path | None:
        """The step's file when the step is logged (written whole, then renamed), else None."""
        if not is_logged_step(step, self.total, self.every):
            return None
        again = [gi for gi, g in enumerate(groups) if g.sample["id"] in self.first_ids]
        chosen = (again + [gi for gi in range(len(groups)) if gi not in again])[: self.max_groups]
        records = completion_records(step, groups, scores, [s.advantage for s in sequences], self.max_new_tokens, sorted(chosen))
        if step == 1:
            self.first_ids = {r["sample_id"] for r in records}
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(step)
        staging = target.with_suffix(".partial")
        staging.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        os.replace(staging, target)
        for sink in self.sinks:
            sink.log_records(step, "rollouts", records)
        return target


def read_rollouts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
