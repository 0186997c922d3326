"""SAM2 through transformers' own Sam2Model: boxes in, one binary mask per image out.

AnomalyR1 turns the boxes its model states into pixel masks with SAM2 (paper section 3.1).
transformers' SAM2 image processor imports torchvision, which does not install beside CPU torch
(see models.py), so the preprocessing its config describes (resize to the model's square input,
rescale, normalise) is done here with PIL and numpy, and the model is fed tensors directly; the
low-resolution masks are upsampled to the image's size as the processor's post_process_masks
does (bilinear, then > 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam2Config, Sam2Model
from transformers.image_processing_base import ImageProcessingMixin
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from anomalyr1.platform.models import build_once
from anomalyr1.rewards.boxes import Box

TINY_SAM2 = "builtin:tiny-sam2"
"""A SAM2 path that builds a tiny random SAM2 offline on first use (tests, CPU smoke runs)."""
DEFAULT_SAM2 = "facebook/sam2.1-hiera-tiny"
_TINY_INPUT = 128


def build_tiny_sam2(out_dir: str | Path, seed: int = 0) -> Path:
    """A ~1 MB SAM2 with random weights in transformers' format: a 4-stage Hiera of widths
    16..128 on 128x128 inputs (feature maps 32, 16 and 8 wide, as 256/128/64 for the real
    1024 input), and the processor config a hub checkpoint ships (preprocessor_config.json)."""
    out = Path(out_dir)
    config = Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                hidden_size=16, num_attention_heads=1, image_size=[_TINY_INPUT, _TINY_INPUT],
                blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 2],
                # global attention may not open a pooled stage (its window would halve to 0)
                global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=_TINY_INPUT, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    torch.manual_seed(seed)
    Sam2Model(config).save_pretrained(out)
    processor = {
        "image_processor_type": "Sam2ImageProcessor", "processor_class": "Sam2Processor",
        "size": {"height": _TINY_INPUT, "width": _TINY_INPUT}, "mask_size": {"height": 32, "width": 32},
        "do_resize": True, "resample": int(Image.Resampling.BILINEAR), "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": list(IMAGENET_DEFAULT_MEAN), "image_std": list(IMAGENET_DEFAULT_STD),
    }
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
    return out


def resolve_sam2_path(spec: str, cache_dir: str | Path) -> str:
    """A local folder, a hub id, or TINY_SAM2 (built into cache_dir/models on first use)."""
    if spec == TINY_SAM2:
        return str(build_once(Path(cache_dir).expanduser() / "models" / "tiny-sam2", build_tiny_sam2))
    local = Path(spec).expanduser()
    return str(local) if local.exists() else spec


@dataclass(frozen=True)
class _Preprocessing:
    """What the checkpoint's preprocessor_config.json says about turning an image into input."""
    size: tuple[int, int]
    """(width, height) of the model's input."""
    resample: int
    rescale_factor: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def read(cls, path: str) -> "_Preprocessing":
        """From the folder's or hub repository's preprocessor_config.json; a key it leaves out
        takes Sam2ImageProcessor's default."""
        config, _ = ImageProcessingMixin.get_image_processor_dict(path)
        size = config.get("size", {"height": 1024, "width": 1024})
        side = size.get("longest_edge")  # older SAM configs; SAM2 resizes to a square either way
        normalise = config.get("do_normalize", True)
        return cls(
            size=(int(size.get("width", side)), int(size.get("height", side))),
            resample=int(config.get("resample", Image.Resampling.BILINEAR)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
            mean=tuple(config.get("image_mean", IMAGENET_DEFAULT_MEAN)) if normalise else (0.0, 0.0, 0.0),
            std=tuple(config.get("image_std", IMAGENET_DEFAULT_STD)) if normalise else (1.0, 1.0, 1.0),
        )

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """(3, height, width) float input of one RGB image."""
        resized = np.asarray(image.convert("RGB").resize(self.size, Image.Resampling(self.resample)), dtype=np.float32)
        normalised = (resized * self.rescale_factor - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return torch.from_numpy(normalised).permute(2, 0, 1)


class Sam2Segmenter:
    """A SAM2 checkpoint on one device, segmenting the boxes stated on a batch of images."""

    def __init__(self, spec: str = DEFAULT_SAM2, cache_dir: str | Path = "~/.cache/anomalyr1", device: str | None = None):
        path = resolve_sam2_path(spec, cache_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = Sam2Model.from_pretrained(path).to(self.device).eval()
        self.preprocessing = _Preprocessing.read(path)

    @torch.no_grad()
    def segment(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]]) -> list[np.ndarray]:
        """One (height, width) bool mask per image at the image's size: the union of the masks
        of its boxes (given in image pixels). All images go through the model in one batch; an
        image without boxes gets an empty mask without a model call. Images with fewer boxes
        than the most in the batch are padded with copies of their last box, left out after."""
        masks = [np.zeros((image.height, image.width), dtype=bool) for image in images]
        todo = [i for i, stated in enumerate(boxes) if stated]
        if not todo:
            return masks
        width, height = self.preprocessing.size
        most = max(len(boxes[i]) for i in todo)
        prompts = torch.tensor([
            [[b.x1 * width / images[i].width, b.y1 * height / images[i].height,
              b.x2 * width / images[i].width, b.y2 * height / images[i].height]
             for b in [*boxes[i], *[boxes[i][-1]] * (most - len(boxes[i]))]]
            for i in todo
        ], dtype=torch.float32, device=self.device)
        pixels = torch.stack([self.preprocessing.pixels(images[i]) for i in todo]).to(self.device)
        dtype = next(self.model.parameters()).dtype
        low_res = self.model(pixel_values=pixels.to(dtype), input_boxes=prompts, multimask_output=False).pred_masks
        for row, i in enumerate(todo):
            logits = low_res[row, :len(boxes[i]), 0:1].float()  # (boxes, 1, h, w)
            full = F.interpolate(logits, (images[i].height, images[i].width), mode="bilinear", align_corners=False)
            masks[i] = (full > 0).any(dim=0)[0].cpu().numpy()
        return masks
