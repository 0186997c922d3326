"""Baseline: the same GRPO work under TRL's GRPOTrainer, in one process, for comparison.

Same tiny Qwen2.5-VL and synthetic MMAD set as the embedded tiny recipe (both from the cache,
as `anomalyr1 train` finds them), same AnomalyR1 prompt, 8 prompts x G=8 completions of up to 32
tokens a step, fp32 on CPU, the tiny recipe's rewards (roam, accuracy without the format
requirement, format), beta (KL) as given. Prints the median step time over the steps after the
first and the start-up time (process start until the first step begins). `benchmarks/vs_trl.py`
runs it beside the platform.

    pip install trl==1.16.0
    python benchmarks/trl_baseline.py [--steps 10] [--beta 0.04] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

import psutil
import torch
from transformers import TrainerCallback

from anomalyr1.data_pipelines import build_prompt, shuffle_options
from anomalyr1.data_pipelines.images import load_image
from anomalyr1.platform.models import load_policy, load_processor, resolve_model_path, suppressed_token_ids
from anomalyr1.platform.prompt_source import load_training_data
from anomalyr1.platform.recipe import load_recipe
from anomalyr1.rewards import load_reward


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self.first_step_at: float | None = None
        """Wall-clock time (time.time) the first step began."""
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step_at is None:
            self.first_step_at = time.time()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def reward_function(spec: str, **params):
    reward = load_reward(spec, **params)

    def score(completions, answer, **kwargs):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [reward(text, {"answer": a}).score for text, a in zip(texts, answer)]

    score.__name__ = spec
    return score


def main() -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = tempfile.mkdtemp(prefix="trl-baseline-")
    recipe = load_recipe(None)  # the embedded tiny recipe: its model, data, prompt and image size
    model_path = resolve_model_path(recipe.model)
    samples = load_training_data(recipe.data, recipe.model.cache_dir).samples
    rng = random.Random(0)
    rows = []
    for sample in rng.sample(samples, len(samples)):
        sample = shuffle_options(sample, rng)
        spec = build_prompt(sample, recipe.prompt.name)
        rows.append({"prompt": spec.messages, "image": load_image(spec.images[0], recipe.data.max_image_pixels, recipe.data.max_image_size),
                     "answer": sample.answer})
    processor = load_processor(model_path)
    processor.tokenizer.padding_side = "left"  # TRL re-tokenizes prompts and pairs them with left-padded generations
    config = GRPOConfig(
        output_dir=f"{work}/out", max_steps=args.steps, per_device_train_batch_size=64, num_generations=8,
        max_completion_length=32, temperature=1.0, beta=args.beta, learning_rate=1e-3, use_cpu=True, bf16=False,
        logging_steps=1, report_to=[], save_strategy="no", reward_weights=[1.0, 1.0, 0.5], dataloader_num_workers=0,
        # as the platform does: a sampled image placeholder breaks TRL's log-prob pass
        generation_kwargs={"suppress_tokens": suppressed_token_ids(processor.tokenizer)},
    )
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=load_policy(model_path),
        args=config,
        processing_class=processor,
        reward_funcs=[reward_function("roam"), reward_function("accuracy", require_format=False), reward_function("format")],
        train_dataset=Dataset.from_list(rows),
        callbacks=[timer],
    )
    start = time.perf_counter()
    trainer.train()
    steps = timer.times[1:] or timer.times
    figures = {"median_step_s": statistics.median(steps), "startup_s": timer.first_step_at - psutil.Process().create_time(),
               "train_s": time.perf_counter() - start}
    print(f"TRL {__import__('trl').__version__} GRPOTrainer, 64 completions x 32 tokens, beta {args.beta}: "
          f"median step {figures['median_step_s']:.2f}s over steps 2..{len(timer.times)}, "
          f"start-up {figures['startup_s']:.1f}s, training {figures['train_s']:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f)


if __name__ == "__main__":
    main()
