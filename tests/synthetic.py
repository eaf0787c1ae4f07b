"""Synthetic microscopy for tests: bright round objects on a noisy dark background."""

from __future__ import annotations

import numpy as np


def bright_disks(
    shape: tuple[int, int] = (96, 96), seed: int = 0, count: int = 8, radii=(5, 10)
) -> tuple[np.ndarray, np.ndarray]:
    """Return a noisy float32 image of `count` bright disks, and their instance labels.

    Later disks cover earlier ones where they overlap, so objects may touch.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, dtype=np.int32)
    for label in range(1, count + 1):
        radius = rng.uniform(*radii)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = label
    image = 100 + 800.0 * (labels > 0) + rng.normal(0, 60, shape)
    return image.astype(np.float32), labels
