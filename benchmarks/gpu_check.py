"""One prepared check of the GPU path, for the few minutes a GPU is lent.

Nothing in this project runs on a GPU in CI, and a lent machine (one H200, minutes of time, no
network, no Ray, vLLM or verl) allows one short script, not a session of trial and error. This
one runs each GPU-facing part of the platform once, each in its own try so that one broken part
still leaves the others' figures:

- rollout: the hf engine loads the model and generates (timed after a warm-up);
- learner: a torch.distributed world of one (NCCL on GPU, gloo on CPU) sets up FSDP2, the
  reference, AdamW, and trains GRPO updates (timed after a warm-up);
- weight_sync: the learner's full weights go into the hf engine, which then holds exactly them
  and generates again;
- sam2: a random SAM2 segments boxes on a batch of images (timed after a warm-up).

    python benchmarks/gpu_check.py                 # on a GPU: the random Qwen2.5-VL-3B of gpu_3b.py, bf16, sdpa
    python benchmarks/gpu_check.py --device cpu    # anywhere: the tiny model of the tests, fp32, gloo

Progress goes to stderr; stdout gets one JSON line (README "Checking a GPU" says what each field
means), with "ok": true, and exit status 0, only when every part ran.

The project need not be installed: where `anomalyr1` does not import, this checkout is imported as
it (pyproject.toml maps each of its subpackages to the folder of the same name). verl imports Ray
at module level but the GRPO math the learners take from it never calls Ray; where Ray is missing
(the lent machine), a stand-in module lets verl import and raises on any use.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.machinery
import importlib.util
import json
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def import_checkout_when_not_installed() -> None:
    if importlib.util.find_spec("anomalyr1") is not None:
        return
    package = types.ModuleType("anomalyr1")
    package.__spec__ = importlib.machinery.ModuleSpec("anomalyr1", None, is_package=True)
    package.__spec__.submodule_search_locations = package.__path__ = [str(REPO)]
    sys.modules["anomalyr1"] = package


def stand_in_for_missing_ray() -> None:
    """verl/__init__ -> verl.protocol and verl.workers.config -> verl.utils.profiler ->
    verl.single_controller.base.worker run `import ray`; at import time they only name
    ray.ObjectRef (in an annotation)."""
    if importlib.util.find_spec("ray") is not None:
        return
    ray = types.ModuleType("ray")
    ray.__spec__ = importlib.machinery.ModuleSpec("ray", None)
    ray.ObjectRef = type("ObjectRef", (), {})

    def missing(name: str):
        raise AttributeError(f"ray is not installed here (gpu_check's stand-in): ray.{name} was used")

    ray.__getattr__ = missing
    sys.modules["ray"] = ray


import_checkout_when_not_installed()
stand_in_for_missing_ray()

import numpy as np  # noqa: E402  (after the two set-ups above, which these imports need)
import torch  # noqa: E402
import transformers  # noqa: E402
from gpu_3b import build_3b, learner_recipe, mfu, prompts, random_sequences  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Sam2Config, Sam2Model  # noqa: E402

from anomalyr1.platform.learner.worker import LearnerWorker, free_port  # noqa: E402
from anomalyr1.platform.models import build_tiny_qwen2_5_vl, load_processor  # noqa: E402
from anomalyr1.platform.rollout.hf_engine import HFEngine  # noqa: E402
from anomalyr1.platform.rollout.sampling import SamplingSettings  # noqa: E402
from anomalyr1.platform.segment import Sam2Segmenter, build_tiny_sam2  # noqa: E402
from anomalyr1.rewards.boxes import Box  # noqa: E402

SIZES = {
    "cuda": dict(prompts=8, n=8, response=256, image=448, micro_batch=8, steps=2, sam2_images=32, sam2_side=512),
    "cpu": dict(prompts=2, n=4, response=16, image=112, micro_batch=8, steps=1, sam2_images=4, sam2_side=128),
}
"""The work per part: on an H200 the whole script stays within a few minutes (3B model built,
saved and loaded three times included); on CPU within tens of seconds."""


class Check:
    """The figures and errors of the parts run so far; `run` keeps one part's failure its own."""

    def __init__(self, device: str):
        self.device = device
        self.figures: dict[str, object] = {
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__, "model_params": None,
            "rollout_tokens_per_s": None, "learner_tokens_per_s": None, "learner_mfu": None,
            "weight_sync_s": None, "sam2_images_per_s": None, "peak_gpu_memory_gib": None,
        }
        self.errors: dict[str, str] = {}
        self.start = time.perf_counter()

    def run(self, name: str, part: Callable[[], object], needs: tuple[str, ...] = ()) -> object:
        """part()'s result, or None when it raised or a part it needs had failed."""
        failed = [n for n in needs if n in self.errors]
        if failed:
            self.errors[name] = f"not run: needs {', '.join(failed)}"
            return None
        began, before = time.perf_counter(), dict(self.figures)
        try:
            result = part()
        except Exception as exc:  # noqa: BLE001  (every failure is this part's figure)
            traceback.print_exc()
            self.errors[name] = f"{type(exc).__name__}: {exc}"[:1000]
            log(f"{name} FAILED after {time.perf_counter() - began:.1f}s: {self.errors[name]}")
            return None
        figures = {key: value for key, value in self.figures.items() if value != before[key]}
        log(f"{name} ran in {time.perf_counter() - began:.1f}s {json.dumps(figures)}")
        return result

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def report(self) -> dict:
        if self.device == "cuda":
            self.figures["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return {**self.figures, "wall_s": round(time.perf_counter() - self.start, 1), "errors": self.errors, "ok": not self.errors}


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def timed(check: Check, action: Callable[[], object]) -> tuple[object, float]:
    check.synchronize()
    start = time.perf_counter()
    result = action()
    check.synchronize()
    return result, time.perf_counter() - start


def build_model(check: Check, folder: Path, size: dict):
    """The model folder, its processor and the prompts every part uses."""
    if check.device == "cuda":
        build_3b(folder)
    else:
        build_tiny_qwen2_5_vl(folder)
    processor = load_processor(str(folder), max_pixels=size["image"] ** 2)
    return processor, prompts(processor, size["prompts"], size["image"], folder)


def rollout(check: Check, folder: Path, model, size: dict) -> HFEngine:
    processor, encoded = model
    dtype = "bfloat16" if check.device == "cuda" else "float32"
    engine = HFEngine(str(folder), processor.tokenizer, dtype=dtype, attn_implementation="sdpa", device=check.device)
    engine.generate(encoded[:1], SamplingSettings(n=2, max_new_tokens=8, seed=0))
    groups, seconds = timed(check, lambda: engine.generate(encoded, SamplingSettings(n=size["n"], max_new_tokens=size["response"], seed=0)))
    generated = sum(len(r) for g in groups for r in g.responses)
    check.figures["rollout_tokens_per_s"] = round(generated / seconds, 1)
    return engine


def learn(check: Check, folder: Path, model, size: dict, peak_tflops: float) -> LearnerWorker:
    processor, encoded = model
    gpu = check.device == "cuda"
    learner = LearnerWorker(0, 1, learner_recipe(folder, size["micro_batch"], gpu).model_dump(mode="json"))
    learner.setup("127.0.0.1", free_port())
    if learner.device.type != check.device:
        raise RuntimeError(f"the learner chose {learner.device}, not {check.device}")
    sequences = random_sequences(encoded, size["n"], size["response"], len(processor.tokenizer))
    tokens = sum(len(s.group.prompt_ids) + len(s.response) for s in sequences)
    learner.update(sequences, len(sequences), seed=0)  # warm-up
    times = []
    for step in range(size["steps"]):
        result, seconds = timed(check, lambda: learner.update(sequences, len(sequences), seed=step + 1))
        times.append(seconds)
        if result.metrics["actor/skipped_updates"] or not result.metrics["actor/grad_norm"] > 0:
            raise RuntimeError(f"update {step + 1} did not train: {result.metrics}")
    median = sorted(times)[len(times) // 2]
    params = sum(p.numel() for p in learner.policy.parameters())
    check.figures["model_params"] = params
    check.figures["learner_tokens_per_s"] = round(tokens / median, 1)
    if gpu:
        check.figures["learner_mfu"] = round(mfu(params, tokens, median, peak_tflops), 4)
    return learner


def sync_weights(check: Check, learner: LearnerWorker, engine: HFEngine, model) -> None:
    """Timed from the gather of the sharded weights to the engine holding them; then checked
    tensor by tensor, and the engine generates with them."""
    def sync() -> dict[str, torch.Tensor]:
        state = learner.engine.rollout_weights(engine.model.dtype)
        engine.update_weights(state.items())
        return state

    expected, seconds = timed(check, sync)
    check.figures["weight_sync_s"] = round(seconds, 3)
    held = engine.model.state_dict()
    differ = [name for name, tensor in expected.items() if not torch.equal(held[name].cpu(), tensor)]
    if differ:
        raise RuntimeError(f"{len(differ)} of {len(expected)} tensors differ from the learner's after the sync, e.g. {differ[:3]}")
    engine.generate(model[1][:1], SamplingSettings(n=2, max_new_tokens=8, seed=0))


def build_sam2(check: Check, folder: Path) -> Path:
    """The builtin tiny SAM2 on CPU; on GPU a random one of the platform's default SAM2's size
    (sam2.1-hiera-tiny: transformers' default Sam2Config, 1024 x 1024 input)."""
    if check.device == "cpu":
        return build_tiny_sam2(folder)
    torch.manual_seed(0)
    Sam2Model(Sam2Config()).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "Sam2ImageProcessor", "size": {"height": 1024, "width": 1024}}))
    return folder


def segment(check: Check, folder: Path, size: dict) -> None:
    segmenter = Sam2Segmenter(str(build_sam2(check, folder)), device=check.device)
    rng = np.random.default_rng(0)
    side = size["sam2_side"]
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(size["sam2_images"])]
    boxes = [[Box(side // 8, side // 8, side // 2, side // 2), Box(side // 2, side // 4, side - 1, side - 1)]] * len(images)
    segmenter.segment(images[:2], boxes[:2])
    masks, seconds = timed(check, lambda: segmenter.segment(images, boxes))
    if [m.shape for m in masks] != [(side, side)] * len(images):
        raise RuntimeError(f"mask shapes {sorted({m.shape for m in masks})}, expected ({side}, {side})")
    check.figures["sam2_images_per_s"] = round(len(images) / seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for the MFU (989: H100 and H200 SXM)")
    parser.add_argument("--deadline-s", type=float, default=420.0,
                        help="print every thread's stack and exit after this long: a hung collective still says where it hung")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.deadline_s, exit=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here (use --device cpu)")
    size = SIZES[args.device]
    check = Check(args.device)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    folder = work / "qwen2.5-vl"
    model = check.run("model", lambda: build_model(check, folder, size))
    engine = check.run("rollout", lambda: rollout(check, folder, model, size), needs=("model",))
    learner = check.run("learner", lambda: learn(check, folder, model, size, args.peak_tflops), needs=("model",))
    check.run("weight_sync", lambda: sync_weights(check, learner, engine, model), needs=("rollout", "learner"))
    if torch.distributed.is_initialized():  # also after a learner that failed past joining
        torch.distributed.destroy_process_group()
    check.run("sam2", lambda: segment(check, work / "sam2", size))
    faulthandler.cancel_dump_traceback_later()
    report = check.report()
    print(json.dumps(report), flush=True)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
