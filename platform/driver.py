"""The GRPO driver: the step pipeline, run over the roles that roles.py starts on Ray.

One step:
  1. draw prompts                      (PromptSource, seeded)
  2. roll out G completions per prompt  (the rollout side's actors, in parallel: rollout
                                         workers, or the learner ranks when colocated)
  3. score them                        (reward pool; each actor's groups are scored as soon as
                                         they arrive, so scoring overlaps the slower ones)
  4. group-relative advantages         (verl's estimator, on the driver: it needs whole groups)
  5. update the policy                 (learners: old/ref log-probs, clipped loss + KL)
  6. sync the new weights              (separate: learner rank 0 -> object store -> every rollout
                                         worker; colocated: each rank into its engine, in memory)
  7. log (metrics; completions of logged steps), evaluate and checkpoint on schedule

With trainer.max_staleness > 0 (separate placement) the same stages run in the same order; only
the start of a later step's 1-2 moves up, to just before this step's 5 (see staleness.py and
`launch_ahead`), and 6 hands the weights to each worker behind the rollout it is running
instead of waiting for them.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch

from anomalyr1.data_pipelines.holdout import split_held_out
from anomalyr1.platform.batch import RolloutGroup, TrainSequence, split_evenly
from anomalyr1.platform.checkpoint import TrainerState, checkpoints_dir, commit, find_resumable, prune, staging_dir
from anomalyr1.platform.eval_answers import EVALS_DIR
from anomalyr1.platform.eval_rollout import held_out_metrics
from anomalyr1.platform.grpo import compute_advantages
from anomalyr1.platform.metrics import MetricsLog, mean_std, metric_sinks
from anomalyr1.platform.models import resolve_model_path
from anomalyr1.platform.prompt_source import PromptSource, load_training_data
from anomalyr1.platform.ray_session import connect_ray
from anomalyr1.platform.recipe import Recipe, RecipeError, dump_recipe
from anomalyr1.platform.remote_calls import LOST
from anomalyr1.platform.roles import MAX_RESTARTS, LearnerFailure, Roles
from anomalyr1.platform.rollout_log import RolloutLog, drop_steps_after
from anomalyr1.platform.rollout.sampling import SamplingSettings
from anomalyr1.platform.staleness import may_launch, staleness_metrics
from anomalyr1.rewards import RewardResult

log = logging.getLogger("anomalyr1")


def class_of(sample) -> tuple[str, str, str]:
    return sample.dataset, sample.category, sample.defect_type



@dataclass
class StepTimes:
    rollout_s: float = 0.0
    reward_s: float = 0.0
    learner_s: float = 0.0
    sync_s: float = 0.0
    rollout_compute_s: float = 0.0
    reward_compute_s: float = 0.0
    learner_compute_s: float = 0.0


@dataclass
class Launched:
    """One step's rollout: started (ahead of its step when max_staleness > 0), not yet collected."""

    step: int
    samples: list
    shares: list[list]
    """Each rollout worker's prompts, by rank."""
    pending: dict = field(default_factory=dict)
    """generate ObjectRef -> rank."""
    holders: dict = field(default_factory=dict)
    """rank -> the incarnation holding the weights it generates with, or the ref of the push that loads them."""
    draw: int = 0
    """0 for a step's own prompts, n for filter_groups' n-th extra draw (its own seeds)."""
    versions: dict = field(default_factory=dict)
    """rank -> version of those weights (see staleness.py)."""


def has_spread(results: list[RewardResult]) -> bool:
    """Whether a group's completions scored differently: otherwise GRPO's advantages are all 0."""
    return len({r.score for r in results}) > 1


class Trainer:
    def __init__(self, recipe: Recipe, resume: bool = False):
        self.recipe = recipe
        self.output = Path(recipe.trainer.output_dir).expanduser().absolute()  # the learners' working folder is their raylet's, not ours
        self.model_path = resolve_model_path(recipe.model)
        self.data = load_training_data(recipe.data, recipe.model.cache_dir)
        held_out = recipe.trainer.eval_samples if recipe.trainer.eval_every else 0
        self.data.samples, self.held_out = split_held_out(self.data.samples, held_out, recipe.data.seed)
        log.info("training data: %s", self.data.summary())
        self.prompts = PromptSource(self.data.samples, recipe.data.seed, recipe.data.shuffle_options)
        self.sampling = SamplingSettings.of(recipe.rollout)
        self._start_over()
        self.roles = Roles(recipe, self.output, self._count_fault)
        self.faults = Counter({"rollout": 0, "learner": 0})
        """Deaths recovered from, per role; reward actors are restarted by Ray and counted by the pool."""
        self._sync_checked = False
        if resume:
            self._restore()
        elif any(checkpoints_dir(self.output).glob("step_*")):
            # Starting over here would mix two runs' checkpoints, and pruning (newest step first)
            # could then delete the new run's: refuse, nothing is touched.
            raise RecipeError(
                f"trainer.output_dir = {str(self.output)!r} already holds checkpoints of an earlier run: "
                "pass --resume to continue it, or choose another trainer.output_dir"
            )

    def _start_over(self) -> None:
        """Step 0: no metrics, the first prompt, class frequencies of the training set alone."""
        self.step, self.history = 0, []
        self.resume_from: Path | None = None
        self.prompts.load_state({"epoch": 0, "position": 0})
        self.ahead: dict[int, Launched] = {}
        """Rollouts started before their step (max_staleness > 0), by step; dropped on a rewind."""
        self.class_counts = Counter(class_of(s) for s in self.data.samples)
        """Training-set class frequencies, updated with every prompt drawn (lr_iad's f)."""

    def _restore(self) -> None:
        found = find_resumable(self.output, self.recipe.learner.workers)
        if found is None:
            log.warning("no checkpoint to resume from under %s: starting at step 0", self.output)
            return
        self.resume_from, state = found
        self.step, self.history = state.step, state.metrics
        self.prompts.load_state(state.prompts)
        self.class_counts = Counter({(r["dataset"], r["category"], r["defect_type"]): r["count"] for r in state.class_counts})
        log.warning("resuming from %s (step %d)", self.resume_from, self.step)

    def _rewind(self) -> None:
        """Back to the newest checkpoint (or the start): the state a learner restart reloads."""
        self._start_over()
        self._restore()

    # -- roles (roles.py) ------------------------------------------------------------------------

    def start_roles(self) -> None:
        self.roles.start()
        self._start_learners()

    def _start_learners(self) -> None:
        self.roles.learners.start(self.resume_from)
        self.sync_weights(StepTimes())  # the engines start from the learners' weights (a checkpoint's, on resume)

    def _recover_learners(self, failure: LearnerFailure) -> None:
        """Rebuild the group (again, if a learner dies while it forms) and rewind to the last checkpoint."""
        while True:
            self._count_fault("learner", failure, failure.deaths)
            self._rewind()
            self.metrics_log.rewrite(self.history)
            try:
                return self._start_learners()
            except LearnerFailure as again:
                failure = again

    def _count_fault(self, role: str, cause: object, deaths: int = 1) -> None:
        self.faults[role] += deaths
        log.warning("%s fault %d: %s", role, self.faults[role], cause)
        if self.faults[role] > MAX_RESTARTS:
            raise RuntimeError(f"{role} actors failed {self.faults[role]} times (limit {MAX_RESTARTS}); stopping. Last: {cause}")

    # -- the step pipeline -----------------------------------------------------------------------

    def train(self, ray_start_s: float | None = None) -> Path:
        """Runs the steps; `ray_start_s`: the seconds a caller spent starting Ray before this (the
        CLI starts it while this module's imports load), reported as step 1's perf/ray_start_s."""
        recipe = self.recipe
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "recipe.yaml").write_text(dump_recipe(recipe))
        try:
            start_times = self._start(ray_start_s)
            sinks = metric_sinks(recipe.trainer, self.output, recipe.model_dump(mode="json"))
            self.metrics_log = MetricsLog(self.output / "metrics.jsonl", recipe.trainer.steps, recipe.trainer.progress_bar, self.history, sinks)
            self.rollout_log = RolloutLog(self.output, recipe.trainer, recipe.rollout.max_new_tokens, sinks, self.step)
            drop_steps_after(self.output / EVALS_DIR, self.step)
            while self.step < recipe.trainer.steps:
                self.step += 1
                try:
                    metrics = {**self.train_step(), **start_times}
                    start_times = {}
                    if recipe.trainer.eval_every and self.step % recipe.trainer.eval_every == 0:
                        rollout = self.roles.rollout
                        rollout.settle()
                        evals = self.output / EVALS_DIR / f"step_{self.step}"
                        metrics.update(held_out_metrics(rollout.actors, self.held_out, recipe, rollout.incarnations, rollout.recover, evals))
                    self.history.append(self.metrics_log.write(self.step, metrics))
                    if recipe.trainer.save_every and self.step % recipe.trainer.save_every == 0:
                        self.save_checkpoint()
                except LearnerFailure as failure:
                    self._recover_learners(failure)  # back to the last checkpoint; its later steps are redone
            final = self._with_learner_recovery(lambda: self.save_model(self.output / "final"))
        finally:
            if hasattr(self, "metrics_log"):
                self.metrics_log.close()
            self.roles.stop()
        return final

    def _start(self, ray_start_s: float | None) -> dict[str, float]:
        """Ray and the roles, timed: the figures go into the first step's metrics, because on a
        small machine starting them takes longer than many steps (see the README's start-up figures)."""
        begin = time.perf_counter()
        connect_ray(self.recipe)
        ray_up = time.perf_counter()
        self.start_roles()
        ray_s = ray_up - begin if ray_start_s is None else ray_start_s
        return {"perf/ray_start_s": ray_s, "perf/roles_start_s": time.perf_counter() - ray_up}

    def _with_learner_recovery(self, action):
        while True:
            try:
                return action()
            except LearnerFailure as failure:
                self._recover_learners(failure)
                if self.step < self.recipe.trainer.steps:
                    raise RuntimeError("learners failed while saving the final model and had to rewind; rerun with --resume") from failure

    def train_step(self) -> dict[str, float]:
        step_start = time.perf_counter()
        times = StepTimes()
        launched = self.ahead.pop(self.step, None) or self.launch(self.step)  # 1, 2 (started early with max_staleness)
        groups, scores = self.rollout_and_score(launched, times)  # 2, 3
        spread = [has_spread(results) for results in scores]
        filtering = {}
        train_groups, train_scores = groups, scores
        if self.recipe.algorithm.filter_groups:
            train_groups, train_scores, draws = self.groups_with_spread(groups, scores, spread, times)
            filtering = {"train/groups_kept": float(len(train_groups)), "train/extra_draws": float(draws)}
        sequences = self.advantages(train_groups, train_scores) if train_groups else []  # 4
        self.launch_ahead()  # max_staleness > 0: later steps' rollouts run during 5 and 6
        update_metrics = self.update(sequences, times)  # 5
        self.sync_weights(times)  # 6
        step_s = time.perf_counter() - step_start
        self.rollout_log.write(self.step, train_groups, train_scores, sequences)  # 7
        metrics = self.step_metrics(groups, scores, update_metrics, times, step_s)
        metrics["train/groups_with_spread"] = sum(spread) / len(spread)
        return {**metrics, **filtering, **staleness_metrics(sequences)}

    def groups_with_spread(self, groups, scores, spread: list[bool], times: StepTimes):
        """DAPO's dynamic sampling: only groups whose completions scored differently carry a
        GRPO signal (a group scored alike has zero advantages), so the others are dropped, and
        up to algorithm.filter_groups_max_draws more draws of prompts try to fill the step with
        prompts_per_step groups that have spread. May return fewer (even none); also returns
        the number of extra draws."""
        wanted = self.recipe.trainer.prompts_per_step
        kept = [(g, s) for g, s, keep in zip(groups, scores, spread) if keep]
        draws = 0
        while len(kept) < wanted and draws < self.recipe.algorithm.filter_groups_max_draws:
            draws += 1
            more_groups, more_scores = self.rollout_and_score(self.launch(self.step, wanted - len(kept), draws), times)
            kept += [(g, s) for g, s in zip(more_groups, more_scores) if has_spread(s)]
        kept = kept[:wanted]
        return [g for g, _ in kept], [s for _, s in kept], draws

    def launch(self, step: int, count: int | None = None, draw: int = 0) -> Launched:
        """Stage 1 and the start of 2 for `step`: draw its prompts (prompts_per_step unless
        `count`), send each worker its share. `draw` numbers filter_groups' extra draws."""
        samples = self.prompts.next(count or self.recipe.trainer.prompts_per_step)
        workers = len(self.roles.rollout.actors)
        launched = Launched(step, samples, [samples[i::workers] for i in range(workers)], draw=draw)
        for rank, share in enumerate(launched.shares):
            if share:
                self._generate(launched, rank)
        return launched

    def launch_ahead(self) -> None:
        """Start the rollouts of the next steps that max_staleness allows, from the current weights."""
        step = max([self.step, *self.ahead]) + 1
        while may_launch(step, self.version, self.recipe.trainer):
            self.ahead[step] = self.launch(step)
            step += 1

    def rollout_and_score(self, launched: Launched, times: StepTimes) -> tuple[list[RolloutGroup], list[list[RewardResult]]]:
        """Steps 2 and 3 for one draw of prompts; times add up over a step's draws."""
        start = time.perf_counter()
        rollout_compute_s = reward_compute_s = 0.0
        self.class_counts.update(class_of(s) for s in launched.samples)  # counted at its step, wherever it was drawn
        shared = {"class_counts": self.class_records()}
        pending = launched.pending
        by_rank: dict[int, list[RolloutGroup]] = {}
        scoring = {}
        remaining = list(pending)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            rank = pending.pop(done[0])
            try:
                result = ray.get(done[0])
                cause = self.roles.rollout.stale(result.incarnation, launched.holders[rank])
            except LOST as exc:  # lost with its process or node (Ray restarts it) or its result with the node
                result, cause = None, exc
            if cause is not None:  # lost its weights: give it the current ones and redo its share
                self.roles.rollout.recover(rank, cause)
                remaining.append(self._generate(launched, rank))
                continue
            for group in result.groups:
                group.policy_version = launched.versions[rank]
            by_rank[rank] = result.groups
            rollout_compute_s = max(rollout_compute_s, result.compute_s)
            scoring[rank] = self.roles.reward_pool.submit(result.groups, shared)
        times.rollout_s += time.perf_counter() - start
        times.rollout_compute_s += rollout_compute_s
        reward_start = time.perf_counter()
        groups, scores = [], []
        for rank in sorted(by_rank):
            results, compute_s = self.roles.reward_pool.gather(scoring[rank])
            reward_compute_s = max(reward_compute_s, compute_s)
            groups += by_rank[rank]
            scores += results
        times.reward_s += time.perf_counter() - reward_start
        times.reward_compute_s += reward_compute_s
        return groups, scores

    def _generate(self, launched: Launched, rank: int) -> ray.ObjectRef:
        """Worker `rank`'s rollout of its share, seeded by step and rank (the same on a retry),
        with the weights it was last given (queued behind them when they are still loading)."""
        sampling = self.sampling.seeded(self._seed("rollout", rank, launched.step, launched.draw))
        ref = self.roles.rollout.actors[rank].generate.remote([s.to_dict() for s in launched.shares[rank]], sampling)
        launched.pending[ref] = rank
        launched.holders[rank] = self.roles.rollout.holder(rank)
        launched.versions[rank] = self.version
        return ref

    def class_records(self) -> list[dict]:
        return [{"dataset": d, "category": c, "defect_type": t, "count": n} for (d, c, t), n in sorted(self.class_counts.items())]

    def advantages(self, groups: list[RolloutGroup], scores: list[list[RewardResult]]) -> list[TrainSequence]:
        flat = [(g, i) for g in groups for i in range(len(g.responses))]
        lengths = [len(g.responses[i]) for g, i in flat]
        width = max(1, max(lengths))
        mask = torch.zeros((len(flat), width))
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        values = torch.tensor([scores[gi][i].score for gi, g in enumerate(groups) for i in range(len(g.responses))])
        group_ids = [g.sample["id"] + f"@{gi}" for gi, g in enumerate(groups) for _ in g.responses]
        algorithm = self.recipe.algorithm
        advantages = compute_advantages(values, group_ids, mask, algorithm.adv_estimator, algorithm.norm_adv_by_std, algorithm.adv_epsilon)
        # outcome estimators give every token of a response the same advantage: keep one per sequence
        return [
            TrainSequence(
                group=g, response_index=i, advantage=float(advantages[row, 0]) if lengths[row] else 0.0, staleness=self.version - g.policy_version
            )
            for row, (g, i) in enumerate(flat)
        ]

    def update(self, sequences: list[TrainSequence], times: StepTimes) -> dict[str, float]:
        start = time.perf_counter()
        world = len(self.roles.learners.actors)
        if len(sequences) < world:
            # filter_groups left too little to give every rank a share: the learners only
            # advance their schedule, so the step counts as skipped.
            sequences = []
        seed = self._seed("update", 0)
        results = self.roles.learners.call("update", per_rank=[(share, len(sequences), seed) for share in split_evenly(sequences, world)])
        times.learner_s = time.perf_counter() - start
        times.learner_compute_s = max(r.compute_s for r in results)
        return results[0].metrics

    def sync_weights(self, times: StepTimes) -> None:
        """The learners' weights into every engine (the first time, checked against theirs)."""
        start = time.perf_counter()
        self.roles.rollout.sync(check=not self._sync_checked, wait=not self.recipe.trainer.max_staleness)
        self._sync_checked = True
        self.version = self.step
        times.sync_s = time.perf_counter() - start

    def step_metrics(self, groups, scores, update_metrics, times: StepTimes, step_s: float) -> dict[str, float]:
        flat = [r for group_results in scores for r in group_results]
        values = [r.score for r in flat]
        reward_mean, reward_std = mean_std(values)
        lengths = [len(r) for g in groups for r in g.responses]
        metrics = {"reward/mean": reward_mean, "reward/std": reward_std}
        for key in sorted({k for r in flat for k in r.parts}):
            metrics[f"reward/{key}"] = mean_std([r.parts.get(key, 0.0) for r in flat])[0]
        metrics.update(update_metrics)
        length_mean, _ = mean_std(lengths)
        metrics["response_length/mean"] = length_mean
        metrics["response_length/max"] = float(max(lengths, default=0))
        metrics["response_length/clip_frac"] = mean_std([float(n >= self.recipe.rollout.max_new_tokens) for n in lengths])[0]
        for name, value in times.__dict__.items():
            prefix = "compute" if "compute" in name else "timing"
            metrics[f"{prefix}/{name.replace('_compute', '')}"] = value
        metrics["timing/step_s"] = step_s
        hidden_reward = min(times.reward_s, times.reward_compute_s)
        overhead = step_s - times.rollout_compute_s - hidden_reward - times.learner_compute_s
        metrics["perf/overhead_s"] = max(0.0, overhead)
        metrics["perf/overhead_frac"] = max(0.0, overhead) / step_s if step_s > 0 else 0.0
        for role in ("rollout", "learner"):  # the busiest actor of the role; a step's wall time is one cycle
            busy = getattr(times, f"{role}_compute_s")
            metrics[f"perf/{role}_idle_frac"] = max(0.0, 1.0 - busy / step_s) if step_s > 0 else 0.0
        metrics["throughput/tokens_per_s"] = sum(lengths) / step_s if step_s > 0 else 0.0
        metrics["throughput/rollout_tokens_per_s"] = sum(lengths) / times.rollout_s if times.rollout_s > 0 else 0.0
        for role, count in {**self.faults, "reward": self.roles.reward_pool.restarts}.items():
            metrics[f"fault/{role}_restarts"] = float(count)
        return metrics

    # -- outputs ---------------------------------------------------------------------------------

    def save_model(self, target: Path) -> Path:
        """Written beside the target and renamed, so a crash never leaves a half-written model."""
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(target)
        self.roles.learners.call("save_model", str(staging))
        return commit(staging, target)

    def save_checkpoint(self) -> Path:
        target = checkpoints_dir(self.output) / f"step_{self.step}"
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(target)
        self.roles.learners.call("save_model", str(staging / "model"))
        self.roles.learners.call("save_state", str(staging / "learner"))
        state = TrainerState(step=self.step, prompts=self.prompts.state(), class_counts=self.class_records(), metrics=self.history)
        commit(staging, target, state)
        prune(self.output, self.recipe.trainer.keep_checkpoints)
        return target

    def _seed(self, purpose: str, rank: int, step: int | None = None, draw: int = 0) -> int:
        """Stable across processes and runs (unlike hash(), which Python salts per process); by
        default for the current step. An extra draw of prompts (filter_groups) samples afresh,
        the first draw keeps its seeds."""
        step = self.step if step is None else step
        extra = f":draw{draw}" if draw else ""
        return zlib.crc32(f"{self.recipe.trainer.seed}:{purpose}{extra}:{step}:{rank}".encode()) & 0x7FFFFFFF
