"""masks.json, the index `anomalyr1 masks` writes beside its mask PNGs, written and read here:
its own module so that the report reads it without loading SAM2, torch or transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MASKS_DIR = "masks"
"""Under the masks output folder: one PNG per answered image, at the image key's path."""
INDEX_FILE = "masks.json"


def write_mask_index(folder: Path, answers: str | Path, root: str | Path, sam2: str, entries: list[dict[str, Any]]) -> Path:
    """folder/masks.json: where the answers and images came from, the SAM2 model, and one entry
    per mask ({"image", "mask" (under folder), "width", "height", "boxes"})."""
    path = folder / INDEX_FILE
    path.write_text(json.dumps({"answers": str(answers), "root": str(root), "sam2": sam2, "masks": entries}, indent=1))
    return path


def read_mask_index(folder: str | Path) -> dict[str, str]:
    """Answered image key -> its mask PNG (a path under `folder`), from folder/masks.json.
    Raises ValueError naming the file when it is missing or not an index."""
    path = Path(folder).expanduser() / INDEX_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["masks"]
        return {entry["image"]: str(path.parent / entry["mask"]) for entry in entries}
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc}); `anomalyr1 masks --out` writes it") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a masks index (expected {{\"masks\": [{{\"image\", \"mask\", ...}}]}})") from exc
