"""Checkpoints: what a run needs to continue exactly where it stopped.

    <output_dir>/checkpoints/step_N/
        model/                 the policy as a Hugging Face folder (safetensors, from_pretrained-loadable)
        learner/rankR.*        each learner rank's optimizer shard and RNG (safetensors + JSON)
        trainer_state.json     step, data position, class frequencies, the metrics so far

A checkpoint is written into a hidden sibling folder and renamed into place, so `step_N` either
exists whole or not at all; `trainer_state.json` is written last inside it. On resume the newest
checkpoint that reads back is used; one that does not (truncated, corrupt, partial) is reported
and the one before is tried.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import safe_open

log = logging.getLogger("anomalyr1")

STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"step_(\d+)")


@dataclass
class TrainerState:
    step: int
    prompts: dict
    class_counts: list[dict]
    metrics: list[dict] = field(default_factory=list)
    """Every step's metrics up to `step`: a resumed run rewrites metrics.jsonl from them."""


def checkpoints_dir(output: Path) -> Path:
    return output / "checkpoints"


def staging_dir(target: Path) -> Path:
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path, target: Path, state: TrainerState | None = None) -> Path:
    """Finish a checkpoint written in `staging` and move it to `target` in one rename."""
    if state is not None:
        (staging / STATE_FILE).write_text(json.dumps(asdict(state)))
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)
    return target


def prune(output: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for old in _by_step(output)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _by_step(output: Path) -> list[Path]:
    folder = checkpoints_dir(output)
    found = [(int(m.group(1)), p) for p in folder.glob("step_*") if (m := _STEP.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def _check(checkpoint: Path, learners: int) -> TrainerState:
    """Read everything a resume will read; raise on the first thing that does not read back."""
    state = TrainerState(**json.loads((checkpoint / STATE_FILE).read_text()))
    model = checkpoint / "model"
    if not (model / "config.json").is_file():
        raise ValueError("model/config.json is missing")
    weights = sorted(model.glob("*.safetensors"))
    if not weights:
        raise ValueError("model/ has no safetensors weights")
    optimizer_shards = [checkpoint / "learner" / f"rank{r}.safetensors" for r in range(learners)]
    if not optimizer_shards[0].exists():
        optimizer_shards = []  # a DeepSpeed checkpoint keeps no optimizer shards (see learner/deepspeed.py)
    for file in weights + optimizer_shards:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                handle.get_slice(key)  # reads the header entry; a truncated file fails here or below
        if file.stat().st_size < _declared_size(file):
            raise ValueError(f"{file.relative_to(checkpoint)} is truncated")
    for r in range(learners):
        json.loads((checkpoint / "learner" / f"rank{r}.json").read_text())
    return state


def _declared_size(file: Path) -> int:
    """Header length + the largest data offset the header declares: what a whole file must hold."""
    with file.open("rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return 8 + header_length + max(ends, default=0)


def find_resumable(output: Path, learners: int) -> tuple[Path, TrainerState] | None:
    for checkpoint in _by_step(output):
        try:
            return checkpoint, _check(checkpoint, learners)
        except Exception as exc:  # any unreadable part disqualifies the checkpoint, whatever the error
            log.warning("checkpoint %s cannot be resumed from (%s: %s); trying the one before", checkpoint, type(exc).__name__, exc)
    return None
