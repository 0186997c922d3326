"""Loading Qwen2.5-VL policies and processors, and building the tiny one offline.

The stock processor insists on a video processor, which needs torchvision; torchvision from PyPI
does not import beside CPU torch, and anomaly inspection never feeds video. So the platform loads
an image-only processor everywhere, on CPU and GPU alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from anomalyr1.data_pipelines.prompts import ANOMALYR1_EVAL_INSTRUCTION, ANOMALYR1_INSTRUCTION, INSPECTOR_INSTRUCTION
from anomalyr1.platform.recipe import TINY_MODEL, ModelConfig

VISION_SPECIAL_TOKENS = ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
"""Never sampled: a sampled image placeholder has no image features behind it and breaks the forward pass."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + VISION_SPECIAL_TOKENS

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's chat layout: system turn first, image placeholders where the message puts them."""

_TINY_CORPUS = (
    # The platform's own instructions: a byte-level BPE that never saw them would split them
    # nearly byte by byte, and prompts several times longer make every tiny step slower.
    ANOMALYR1_INSTRUCTION,
    ANOMALYR1_EVAL_INSTRUCTION,
    INSPECTOR_INSTRUCTION,
    "<think> The object looks normal, no scratch, crack or hole. </think> <answer> A </answer>",
    "<think> There is a dark spot at the top left, so the answer is B. </think> <answer> B </answer>",
    "Is there any defect in the object? A: Yes B: No C: crack D: scratch E: hole",
    "You are a helpful assistant. You are an industrial inspector. Answer with the option's letter.",
    "bottle cable capsule carpet grid hazelnut leather metal nut pill screw tile toothbrush transistor",
    '{"bbox_2d": [10, 20, 30, 40], "label": "defect"} center top bottom left right',
)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video half (which would need torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def to_dict(self) -> dict:
        """Saved under the stock class name, so AutoProcessor loads our outputs where torchvision exists."""
        output = super().to_dict()
        output["processor_class"] = Qwen2_5_VLProcessor.__name__
        return output


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=640,  # merges run out at about 590 on this corpus
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TINY_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def build_tiny_qwen2_5_vl(out_dir: str | Path, seed: int = 0) -> Path:
    """A 0.1 s, sub-MB Qwen2.5-VL with random weights: same code paths as the 3B, none of the cost.

    Both rollout engines run it: its text head size (64 / 2 = 32) is one vLLM's CPU attention
    supports (32, 64, 80, ... 256), and grouped-query attention (2 heads, 1 KV head) as in the 3B.
    """
    out = Path(out_dir)
    tokenizer = _build_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,  # head_dim 32: the smallest head size vLLM's CPU attention runs
            num_key_value_heads=1,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [4, 6, 6]},
            bos_token_id=token_id("<|endoftext|>"),
            eos_token_id=token_id("<|im_end|>"),
            pad_token_id=token_id("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def resolve_model_path(config: ModelConfig) -> str:
    """The folder or hub id to load; builds the tiny model into the cache on first use (race-safe)."""
    if config.path != TINY_MODEL:
        return str(Path(config.path).expanduser()) if Path(config.path).expanduser().exists() else config.path
    return str(build_once(Path(config.cache_dir).expanduser() / "models" / f"tiny-qwen2.5-vl-{tiny_build_key()}", build_tiny_qwen2_5_vl))


def tiny_build_key() -> str:
    """Names the cached tiny model after how it is built: a changed recipe (head size, tokenizer
    corpus) builds a new folder instead of silently reusing an older model from the cache."""
    source = inspect.getsource(build_tiny_qwen2_5_vl) + inspect.getsource(_build_tokenizer) + repr(_TINY_CORPUS)
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """target, built by `build(folder)` unless it already holds a config.json: built in a
    temporary sibling and renamed into place, so concurrent builders never see half a model."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    build(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_processor(path: str, min_pixels: int | None = None, max_pixels: int | None = None):
    tokenizer = AutoTokenizer.from_pretrained(path)
    overrides = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **overrides)  # folds the bounds into its `size`
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template or CHAT_TEMPLATE
    )


def suppressed_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(token) for token in VISION_SPECIAL_TOKENS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def attention_backend(requested: str) -> str:
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        return "sdpa"
    return requested


def load_policy(path: str, dtype: str = "float32", attn_implementation: str = "sdpa", device: str = "cpu", empty: bool = False):
    """The model from `path` on `device`; empty=True builds it on the meta device from the config
    alone (no weights read, no memory): for a learner rank that receives rank 0's weights."""
    if empty:
        from transformers import AutoConfig

        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration._from_config(
                AutoConfig.from_pretrained(path), dtype=getattr(torch, dtype), attn_implementation=attention_backend(attn_implementation)
            )
        encode_each_image_once(model.model.visual)
        return model
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=getattr(torch, dtype), attn_implementation=attention_backend(attn_implementation)
    )
    encode_each_image_once(model.model.visual)
    return model.to(device)


def encode_each_image_once(visual: torch.nn.Module) -> None:
    """Make the vision tower encode every distinct image of a call once.

    GRPO feeds the G completions of a prompt with the same image (generate expands it G times,
    and so does a learner micro-batch), so the tower would encode it G times. This wraps the
    tower's forward: identical images (same grid, equal pixels) are encoded once and their
    features reused, and autograd sums the gradients of the copies, so outputs and gradients
    are those of the unwrapped tower. It sits inside the model's own forward, untouched by FSDP2
    or DeepSpeed wrapping.
    """
    encode = visual.forward
    merge = visual.spatial_merge_size**2

    def forward(hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        patches = grid_thw.prod(-1).tolist()
        chunks = hidden_states.split(patches)
        distinct: list[int] = []
        owner: list[int] = []
        for index, chunk in enumerate(chunks):
            match = next((d for d in reversed(distinct) if chunks[d].shape == chunk.shape and torch.equal(chunks[d], chunk)), None)
            if match is None:
                distinct.append(index)
                match = index
            owner.append(distinct.index(match))
        if len(distinct) == len(chunks):
            return encode(hidden_states, grid_thw, **kwargs)
        out = encode(torch.cat([chunks[d] for d in distinct]), grid_thw[distinct], **kwargs)
        merged = out.pooler_output.split([patches[d] // merge for d in distinct])
        per_patch = out.last_hidden_state.split([patches[d] for d in distinct])
        out.pooler_output = torch.cat([merged[o] for o in owner])
        out.last_hidden_state = torch.cat([per_patch[o] for o in owner])
        return out

    visual.forward = forward


def fingerprint(named_tensors) -> float:
    """A checksum of floating weights: equal on two roles means the sync really landed. A sum of
    per-tensor sums, so a receiver can add them up as the tensors stream past."""
    return sum(tensor_checksum(tensor) for _name, tensor in sorted(named_tensors, key=lambda item: item[0]))


def tensor_checksum(tensor: torch.Tensor) -> float:
    """One tensor's part of `fingerprint`: the sum of its absolute values in float64; 0 for integers."""
    return float(tensor.detach().double().abs().sum()) if tensor.is_floating_point() else 0.0

