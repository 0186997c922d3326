"""Sample -> model input: the recipe's prompt, the images (capped), the processor's tokens.

Done once per prompt on the rollout worker; the tokens and pixels travel with the rollout to the
learners, so both score exactly the same input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomalyr1.data_pipelines.images import image_size
from anomalyr1.data_pipelines.prompts import build_prompt, load_image
from anomalyr1.data_pipelines.schema import Sample
from anomalyr1.platform.batch import RolloutGroup
from anomalyr1.platform.recipe import PromptConfig


@dataclass
class EncodedPrompt:
    """One prompt as the rollout engines take it; `group` pairs it with its completions."""

    sample: dict
    prompt_ids: list[int]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    model_input_size: tuple[int, int]
    """(width, height) of the query image as the model sees it."""
    chat_text: str
    """The prompt text as the model reads it, one placeholder per image (what vLLM takes): the
    chat template's output, or a raw-text prompt as written."""
    images: list
    """The PIL images behind the placeholders, capped; stays on the worker."""

    def group(self, responses: list[list[int]], texts: list[str], log_probs: list[list[float]] | None = None) -> RolloutGroup:
        return RolloutGroup(
            sample=self.sample,
            prompt_ids=self.prompt_ids,
            pixel_values=self.pixel_values,
            image_grid_thw=self.image_grid_thw,
            responses=responses,
            texts=texts,
            log_probs=log_probs,
            model_input_size=self.model_input_size,
        )


def encode_prompt(processor, sample: Sample, prompt: PromptConfig, max_image_pixels: int | None,
                  max_image_size: tuple[int, int] | None = None) -> EncodedPrompt:
    spec = build_prompt(sample, prompt.name, k_shot=prompt.k_shot, domain_knowledge=prompt.domain_knowledge)
    images = [load_image(path, max_image_pixels, max_image_size) for path in spec.images]
    if spec.raw_text is not None:  # a prompt meant to reach the model as written (anomalyr1_eval)
        text = spec.raw_text
    else:
        text = processor.apply_chat_template(spec.messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[text], images=images or None, return_tensors="pt")
    grid = encoded["image_grid_thw"]
    patch = processor.image_processor.patch_size
    query = grid[-1]  # the query image is the last one shown
    record = sample.to_dict()
    record["extra"] = {**record["extra"], "image_size": list(image_size(sample.image))}
    return EncodedPrompt(
        sample=record,
        prompt_ids=encoded["input_ids"][0].tolist(),
        pixel_values=encoded["pixel_values"],
        image_grid_thw=grid,
        model_input_size=(int(query[2]) * patch, int(query[1]) * patch),
        chat_text=text,
        images=images,
    )
