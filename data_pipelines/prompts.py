"""Prompts a recipe names: a Sample in, chat messages with image placeholders out.

Messages are in the Hugging Face multimodal chat format, so a processor's chat template turns
them into model input; image paths travel beside them in placeholder order, so each rollout
engine (transformers, vLLM) loads them its own way, e.g. with `load_image`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.images import load_image
from anomalyr1.data_pipelines.schema import OPTION_LETTERS, Sample

__all__ = [
    "PROMPTS", "PromptSpec", "build_prompt", "format_options", "load_image", "shuffle_options",
    "anomalyr1_prompt", "anomalyr1_eval_prompt", "mmad_eval_prompt", "localization_prompt", "BOX_PROMPTS",
]

ANOMALYR1_INSTRUCTION = (
    "A conversation between User and Assistant. The user asks a choice question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer.Respond with your reasoning in <think> </think> tags followed by a single letter answer in "
    "<answer> </answer> tags."
)
"""The reference's training instruction (grpo_rec.py's SYSTEM_PROMPT, appended to the question);
the missing space after "answer." is theirs: its string pieces are joined without one."""
ANOMALYR1_EVAL_INSTRUCTION = (
    "First output the thinking process in <think> </think> tags and then output the final answer "
    "letter in <answer> </answer> tags."
)
"""The reference's evaluation instruction (eval/thinkad_query.py)."""
QWEN_IMAGE_PLACEHOLDER = "<|image_pad|>"
"""Where a raw-text prompt puts an image: the token Qwen's processor expands into the image's
vision tokens (the reference's evaluation writes it bare, without vision start/end tokens)."""
INSPECTOR_INSTRUCTION = (
    "You are an industrial inspector who checks products by images. You should judge whether "
    "there is a defect in the query image and answer the questions about it."
)
LETTER_ONLY = "Answer with the option's letter from the given choices directly."
LOCALIZATION_QUESTION = "Locate every defect in the query image."
THINK_BOXES_FORMAT = (
    "First output the thinking process in <think> </think> tags and then output the final answer "
    "in <answer> </answer> tags in JSON format: the bounding box of each defect in the query "
    'image\'s pixels, [{"bbox_2d": [x1, y1, x2, y2], "label": "defect type"}], or [] when there is no defect.'
)


@dataclass(frozen=True)
class PromptSpec:
    messages: list[dict[str, Any]]
    """Chat messages; each {"type": "image"} item stands for the next path in `images`."""
    images: list[str]
    raw_text: str | None = None
    """A prompt the processor takes as it is, without the chat template (then `messages` is
    empty); each QWEN_IMAGE_PLACEHOLDER stands for the next path in `images`."""


PromptBuilder = Callable[[Sample, int, bool], PromptSpec]
"""(sample, k_shot, domain_knowledge) -> PromptSpec."""


def format_options(options: Mapping[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def shuffle_options(sample: Sample, rng: random.Random) -> Sample:
    """The sample with its options in a new order, relettered from A, and the answer letter
    following its text: stops a policy from learning MMAD's letter positions."""
    texts = list(sample.options.values())
    right = list(sample.options).index(sample.answer)
    order = list(range(len(texts)))
    rng.shuffle(order)
    options = {OPTION_LETTERS[new]: texts[old] for new, old in enumerate(order)}
    return replace(sample, options=options, answer=OPTION_LETTERS[order.index(right)])


@dataclass
class _Content:
    """One user turn under construction, keeping placeholders and paths in step."""
    items: list[dict[str, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.items.append({"type": "text", "text": text})

    def image(self, path: str) -> None:
        self.items.append({"type": "image"})
        self.images.append(path)

    def spec(self) -> PromptSpec:
        # Chat templates concatenate items as they are; a newline after each text but the last
        # keeps sentences apart.
        items = [dict(item) for item in self.items]
        for item in items[:-1]:
            if item["type"] == "text":
                item["text"] += "\n"
        return PromptSpec([{"role": "user", "content": items}], self.images)


def _context(content: _Content, sample: Sample, k_shot: int, domain_knowledge: bool) -> None:
    """Domain knowledge and normal templates ahead of the query image, as MMAD's evaluation
    scripts order them. Asking for more than the sample has is an error, not a quietly weaker
    prompt, since it changes what a benchmark number means."""
    if domain_knowledge:
        text = sample.extra.get("domain_knowledge")
        if not text:
            raise DataError(f"{sample.id}: no domain knowledge for {sample.dataset}/{sample.category}")
        content.text("Following is the domain knowledge which contains some types of defect and "
                     f"the normal object characteristics:\n{text}")
    if k_shot:
        if len(sample.reference_images) < k_shot:
            raise DataError(f"{sample.id}: a {k_shot}-shot prompt needs {k_shot} template images, "
                            f"the sample has {len(sample.reference_images)}")
        content.text(f"Following {'is 1 image' if k_shot == 1 else f'are {k_shot} images'} of a "
                     "normal sample, which can be used as a template to compare with the query image.")
        for path in sample.reference_images[:k_shot]:
            content.image(path)


def _query_image(sample: Sample, k_shot: int, domain_knowledge: bool) -> _Content:
    """The training prompts' opening: context, then the query image."""
    content = _Content()
    _context(content, sample, k_shot, domain_knowledge)
    if k_shot:
        content.text("Following is the query image:")
    content.image(sample.image)
    return content


def anomalyr1_prompt(sample: Sample, k_shot: int, domain_knowledge: bool) -> PromptSpec:
    """AnomalyR1's GRPO prompt as the reference trains with it (grpo_rec.py): one user turn, the
    image first, then the problem, a space and the instruction. The reference's training file
    (its `problem` field) is not public; the problem here is the question and its options one
    per line, as its evaluation lays them out. Templates and domain knowledge, which the
    reference does not train with, go ahead of the image when asked for."""
    content = _query_image(sample, k_shot, domain_knowledge)
    content.text(f"{sample.question}\n{format_options(sample.options)} {ANOMALYR1_INSTRUCTION}")
    return content.spec()


def anomalyr1_eval_prompt(sample: Sample, k_shot: int, domain_knowledge: bool) -> PromptSpec:
    """The reference's MMAD evaluation prompt (eval/thinkad_query.py), raw text without a chat
    template: the query image only, the question, a space and a newline, each option on its own
    line (the last one too), then the instruction after two more newlines. It has no place for
    templates or domain knowledge, so asking for them is an error, not a quietly different
    prompt."""
    if k_shot or domain_knowledge:
        raise ValueError("anomalyr1_eval is the reference's query-image-only prompt: "
                         f"k_shot must be 0 and domain_knowledge false (got {k_shot}, {domain_knowledge})")
    options = format_options(sample.options) + "\n"
    text = f"Test image: {QWEN_IMAGE_PLACEHOLDER}\n\n{sample.question} \n{options}\n\n{ANOMALYR1_EVAL_INSTRUCTION}"
    return PromptSpec(messages=[], images=[sample.image], raw_text=text)


def localization_prompt(sample: Sample, k_shot: int, domain_knowledge: bool) -> PromptSpec:
    """AnomalyR1's localization task (paper section 3.1): the defects as JSON boxes in the
    <answer> block, which the bbox_iou reward scores and `anomalyr1 masks` turns into SAM2
    masks. The sample's multiple-choice question is not asked: the task is the same for every
    image, so keep one question per image (data.question_types)."""
    content = _query_image(sample, k_shot, domain_knowledge)
    content.text(f"{LOCALIZATION_QUESTION}\n{THINK_BOXES_FORMAT}")
    return content.spec()


def mmad_eval_prompt(sample: Sample, k_shot: int, domain_knowledge: bool) -> PromptSpec:
    """MMAD's evaluation prompt (its transformers query scripts): inspector instruction,
    optional domain knowledge and k normal templates, the query image, then the question."""
    content = _Content()
    content.text(f"{INSPECTOR_INSTRUCTION}\n{LETTER_ONLY}")
    _context(content, sample, k_shot, domain_knowledge)
    content.text("Following is the query image:")
    content.image(sample.image)
    content.text(f"Question: {sample.question}\n{format_options(sample.options)}\n{LETTER_ONLY}")
    return content.spec()


PROMPTS: dict[str, PromptBuilder] = {
    "anomalyr1": anomalyr1_prompt,
    "anomalyr1_eval": anomalyr1_eval_prompt,
    "mmad_eval": mmad_eval_prompt,
    "localization": localization_prompt,
}
BOX_PROMPTS = frozenset({"localization"})
"""Prompts whose answers are boxes, not option letters."""


def build_prompt(sample: Sample, name: str, *, k_shot: int = 0,
                 domain_knowledge: bool = False) -> PromptSpec:
    if name not in PROMPTS:
        raise ValueError(f"unknown prompt {name!r}; registered: {sorted(PROMPTS)}")
    if k_shot < 0:
        raise ValueError(f"k_shot must be >= 0, got {k_shot}")
    return PROMPTS[name](sample, k_shot, domain_knowledge)
