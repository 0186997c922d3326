"""`anomalyr1 eval`: a model's MMAD table on the recipe's data, answered greedily by rollout
workers placed as the trainer places them.

The recipe says what to load and how (data, model dtype, rollout engine and workers, k-shot,
domain knowledge); evaluation overrides the model path with the checkpoint and the prompt with
MMAD's own (mmad_eval) unless told otherwise or the recipe asks for boxes, and reads the whole
data set: a few-shot file names training images, not evaluation ones. `anomalyr1_eval` is the
AnomalyR1 reference's protocol instead (see PAPER_PROMPT).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from anomalyr1.data_pipelines.prompts import BOX_PROMPTS, shuffle_options
from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.data_pipelines.scoring import MMADScores
from anomalyr1.platform.ray_session import connect_ray
from anomalyr1.platform.eval_answers import ANSWERS_FILE, TABLE_FILE, choose_letter, reference_letter, write_answers
from anomalyr1.platform.eval_rollout import eval_batch_size, greedy_answers
from anomalyr1.platform.placement import actor_options, eval_demand, release, reserve
from anomalyr1.platform.prompt_source import load_training_data
from anomalyr1.platform.recipe import Recipe, parse_recipe
from anomalyr1.platform.rollout.worker import RolloutWorker

PAPER_PROMPT = "anomalyr1_eval"
"""The AnomalyR1 reference's own evaluation (eval/thinkad_query.py): its raw-text prompt, greedy
decoding of up to PAPER_MAX_NEW_TOKENS, options shuffled per question and its letter reading.
The reference shuffles with an unseeded random.shuffle; here each question's order is seeded
with data.seed and its id, so a run can be repeated."""
PAPER_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class EvalResult:
    answers_path: Path
    table_path: Path
    scores: MMADScores
    questions: int
    answer_s: float
    """Wall time of answering, from loaded workers to the last answer (startup excluded)."""

    @property
    def questions_per_s(self) -> float:
        return self.questions / self.answer_s if self.answer_s > 0 else 0.0


def eval_recipe(recipe: Recipe, checkpoint: str | None, prompt: str) -> Recipe:
    """The recipe as evaluation runs it; a bad checkpoint or prompt is a RecipeError."""
    raw = recipe.model_dump(mode="json")
    if checkpoint is not None:
        raw["model"]["path"] = checkpoint
    raw["prompt"]["name"] = prompt
    raw["data"]["fewshot_file"] = None
    if prompt == PAPER_PROMPT:
        raw["rollout"]["max_new_tokens"] = PAPER_MAX_NEW_TOKENS
    return parse_recipe(raw, origin="evaluation")


def default_eval_prompt(recipe: Recipe) -> str:
    """MMAD's own prompt, except for a recipe whose prompt asks for boxes (MMAD's asks for a
    letter): its answers are what `anomalyr1 masks` segments and scores."""
    return recipe.prompt.name if recipe.prompt.name in BOX_PROMPTS else "mmad_eval"


def paper_shuffle(samples: list[Sample], seed: int) -> list[Sample]:
    """Each question's options in a new order (answer letter following), as the reference's
    evaluation shuffles them, seeded per question so a rerun asks the same."""
    return [shuffle_options(s, random.Random(f"{seed}:eval:{s.id}")) for s in samples]


def evaluate(recipe: Recipe, checkpoint: str | None, out_dir: str | Path, prompt: str | None = None) -> EvalResult:
    """Answers every question of the recipe's data with the checkpoint (None: recipe's model),
    writes out_dir/answers.json (MMAD's answer format) and out_dir/table.json ({"table": ...}).
    prompt None: `default_eval_prompt`."""
    recipe = eval_recipe(recipe, checkpoint, prompt or default_eval_prompt(recipe))
    samples = load_training_data(recipe.data, recipe.model.cache_dir).samples  # before Ray: bad data fails fast
    paper = prompt == PAPER_PROMPT
    if paper:
        samples = paper_shuffle(samples, recipe.data.seed)
    connect_ray(recipe)
    demand = eval_demand(recipe)
    groups = reserve([demand], recipe.trainer.placement_timeout_s)
    raw = recipe.model_dump(mode="json")
    worker_cls = ray.remote(RolloutWorker)
    workers = [worker_cls.options(**actor_options(groups["rollout"], i, demand)).remote(i, raw) for i in range(demand.count)]
    try:
        ray.get([worker.__ray_ready__.remote() for worker in workers])
        start = time.perf_counter()
        reader = reference_letter if paper else choose_letter
        records = greedy_answers(workers, samples, recipe.rollout.max_new_tokens, eval_batch_size(recipe), reader=reader)
        answer_s = time.perf_counter() - start
    finally:
        for worker in workers:
            ray.kill(worker)
        release(groups)
    out = Path(out_dir).expanduser()
    scores = write_answers(out, records)
    return EvalResult(out / ANSWERS_FILE, out / TABLE_FILE, scores, len(records), answer_s)
