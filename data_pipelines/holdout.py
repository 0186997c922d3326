"""A held-out slice of the training data, for evaluation during training.

Whole images are held out, never single questions: a policy trained on one question about an
image has seen that image, and its score on the image's other questions would be inflated.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

from anomalyr1.data_pipelines.errors import DataError
from anomalyr1.data_pipelines.schema import Sample


def split_held_out(samples: Sequence[Sample], questions: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(training samples, held-out samples): the images are shuffled with the seed and taken
    from the end of that order until their questions reach `questions`; only the last image
    taken can lose questions to the cut, so no image is wasted whole. Both lists keep the input
    order. questions=0 holds out none."""
    if questions < 0:
        raise ValueError(f"questions must be >= 0, got {questions}")
    if questions == 0:
        return list(samples), []
    by_image: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_image[sample.image].append(index)
    images = sorted(by_image)
    random.Random(f"held-out:{seed}").shuffle(images)
    taken: list[str] = []
    while sum(len(by_image[i]) for i in taken) < questions and len(taken) < len(images):
        taken.append(images[-1 - len(taken)])
    if len(taken) == len(images):
        raise DataError(f"holding out {questions} questions takes every one of the {len(images)} images "
                        f"({len(samples)} questions); hold out fewer")
    held = sorted([index for image in taken for index in by_image[image]][:questions])
    held_images = set(taken)
    return [s for s in samples if s.image not in held_images], [samples[i] for i in held]
