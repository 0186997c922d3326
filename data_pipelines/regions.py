"""The separate regions of a binary mask, as boxes: one defect region, one box.

MMAD masks often mark several defects on one image (three holes, two scratches); one box
around all of them would ask the model for a box that contains mostly intact surface. Both the
training truth (mmad.py) and the localization scores (localization.py) use these boxes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from anomalyr1.rewards.boxes import Box


def component_boxes(mask: np.ndarray) -> list[Box]:
    """Boxes [x1, y1, x2, y2) in pixel edges around the 8-connected regions of a
    (height, width) bool mask, top to bottom then left to right.

    Labelled by runs of set pixels per row, joined when they touch a run of the row above
    (a union-find over runs, not pixels): a 1024x1024 MMAD mask has a few thousand runs."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    _, ends = np.nonzero(steps == -1)  # exclusive; row-major order pairs them with the starts
    rows, starts, ends = rows.tolist(), starts.tolist(), ends.tolist()
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_row: dict[int, list[int]] = defaultdict(list)
    for run, row in enumerate(rows):
        by_row[row].append(run)
    for row, runs in by_row.items():
        for above in by_row.get(row - 1, ()):
            for run in runs:  # 8-connected: the runs overlap or meet at a corner
                if starts[above] <= ends[run] and starts[run] <= ends[above]:
                    parent[root(above)] = root(run)
    extents: dict[int, list[int]] = {}
    for run in range(len(rows)):
        x1, y, x2 = starts[run], rows[run], ends[run]
        box = extents.setdefault(root(run), [x1, y, x2, y + 1])
        box[0], box[1], box[2], box[3] = min(box[0], x1), min(box[1], y), max(box[2], x2), max(box[3], y + 1)
    return sorted((Box(*map(float, box)) for box in extents.values()), key=lambda b: (b.y1, b.x1))
