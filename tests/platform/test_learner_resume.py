"""A learner group resumed from a checkpoint continues exactly: AdamW moments and the learning-rate
schedule come back (as safetensors and JSON, never pickles) for FSDP2 and DeepSpeed ZeRO-2/3.

Each group runs as Ray actors, one process per rank, as the trainer runs them."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import TrainSequence
from anomalyr1.platform.encoding import encode_prompt
from anomalyr1.platform.learner.worker import LearnerWorker
from anomalyr1.platform.models import load_processor
from anomalyr1.platform.rollout.hf_engine import HFEngine, SamplingSettings

WORLD = 2


class Group:
    def __init__(self, ray, recipe, resume_from: Path | None = None):
        self.ray = ray
        raw = recipe.model_dump(mode="json")
        cls = ray.remote(LearnerWorker).options(num_cpus=0.5)
        self.actors = [cls.remote(rank, WORLD, raw) for rank in range(WORLD)]
        address, port = ray.get(self.actors[0].rendezvous.remote())
        ray.get([a.setup.remote(address, port, str(resume_from) if resume_from else None) for a in self.actors])

    def all(self, method: str, *args, per_rank=None) -> list:
        calls = per_rank or [args] * WORLD
        return self.ray.get([getattr(a, method).remote(*call) for a, call in zip(self.actors, calls)])

    def update(self, batch: list[TrainSequence], seed: int) -> dict[str, float]:
        return self.all("update", per_rank=[(batch[rank::WORLD], len(batch), seed) for rank in range(WORLD)])[0].metrics

    def weights(self, directory: Path) -> dict[str, torch.Tensor]:
        self.all("save_model", str(directory))
        return load_file(str(directory / "model.safetensors"))

    def close(self) -> None:
        self.all("shutdown")
        for actor in self.actors:
            self.ray.kill(actor)


def rollout(model_path: str, synthetic_root: Path, recipe, seed: int) -> list[TrainSequence]:
    processor = load_processor(model_path)
    samples = load_mmad(synthetic_root).samples[seed * 2:seed * 2 + 2]
    prompts = [encode_prompt(processor, s, recipe.prompt, 112 * 112) for s in samples]
    groups = HFEngine(model_path, processor.tokenizer).generate(prompts, SamplingSettings(n=2, max_new_tokens=8, seed=seed))
    return [TrainSequence(group=g, response_index=i, advantage=1.0 if i == 0 else -1.0) for g in groups for i in range(2)]


@pytest.mark.parametrize("backend", [("fsdp2", 2), ("deepspeed", 2), ("deepspeed", 3)], ids=["fsdp2", "zero2", "zero3"])
def test_resumed_learners_keep_moments_and_schedule(ray_session, tiny_recipe, tiny_model, synthetic_root, tmp_path, backend):
    name, stage = backend
    recipe = tiny_recipe(f"learner.backend={name}", f"learner.zero_stage={stage}", f"learner.workers={WORLD}",
                         "learner.lr=1e-3", "learner.lr_scheduler=linear", "trainer.steps=4", "algorithm.kl_coef=0")
    first, second = rollout(tiny_model, synthetic_root, recipe, 0), rollout(tiny_model, synthetic_root, recipe, 1)
    checkpoint = tmp_path / "ckpt"

    group = Group(ray_session, recipe)
    try:
        assert group.update(first, seed=1)["actor/lr"] == pytest.approx(1e-3)
        group.all("save_model", str(checkpoint / "model"))
        group.all("save_state", str(checkpoint / "learner"))
        expected_lr = group.update(second, seed=2)["actor/lr"]
        expected = group.weights(tmp_path / "uninterrupted")
    finally:
        group.close()
    assert expected_lr == pytest.approx(0.75e-3), "linear over 4 steps: the second trains at 3/4 of the peak"

    shard = load_file(str(checkpoint / "learner" / "rank0.safetensors"))
    moments = [t for key, t in shard.items() if key.endswith(("/exp_avg", "/exp_avg_sq"))]
    assert moments and all(t.abs().sum() > 0 for t in moments), "the shard holds AdamW's (nonzero) moments"
    assert not list((checkpoint / "learner").glob("*.pt")), "no pickled optimizer state"

    resumed = Group(ray_session, recipe, resume_from=checkpoint)
    try:
        assert resumed.update(second, seed=2)["actor/lr"] == expected_lr
        weights = resumed.weights(tmp_path / "resumed")
    finally:
        resumed.close()
    assert weights.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(expected[k], weights[k])]
    assert not different, f"resumed weights differ from the uninterrupted run's in {len(different)} tensors, e.g. {different[:3]}"
