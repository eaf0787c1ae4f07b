"""Segmentation quality measures."""

from __future__ import annotations

import numpy as np


def pixel_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Return the intersection over union of two binary masks (Jaccard index).

    Parameters
    ----------
    prediction, truth : array of bool
        Masks of the same shape; non-zero values count as inside.

    Returns
    -------
    float
        ``|P ∩ T| / |P ∪ T|``, from 0 to 1; 1 when both masks are empty.

    Examples
    --------
    >>> pixel_iou(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.3333333333333333
    """
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"shapes differ: {prediction.shape} and {truth.shape}")
    union = np.count_nonzero(prediction | truth)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(prediction & truth) / union)
