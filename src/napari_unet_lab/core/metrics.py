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


def average_precision(
    prediction: np.ndarray, truth: np.ndarray, thresholds=(0.5,)
) -> dict[float, float]:
    """Return the object-level average precision at IoU thresholds.

    A predicted object matches a true object when their IoU exceeds the
    threshold; above 0.5 such a match is unique. AP = TP / (TP + FP + FN), the
    measure of the 2018 Data Science Bowl and of Caicedo et al. (2019).

    Parameters
    ----------
    prediction, truth : ndarray of int
        Label images; 0 is background, every other value one object.
    thresholds : sequence of float
        IoU thresholds, each at least 0.5.

    Returns
    -------
    dict
        AP for each threshold; 1.0 when both images have no objects.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> average_precision(np.array([[1, 1, 0, 0, 0]]), truth)  # one found, one missed
    {0.5: 0.5}
    """
    iou = _object_iou(prediction, truth)
    results = {}
    for threshold in thresholds:
        if threshold < 0.5:
            raise ValueError("thresholds below 0.5 allow one object to match several")
        true_positives = int(np.count_nonzero(iou > threshold))
        false_positives = iou.shape[1] - true_positives
        false_negatives = iou.shape[0] - true_positives
        total = true_positives + false_positives + false_negatives
        results[float(threshold)] = true_positives / total if total else 1.0
    return results


def _object_iou(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"shapes differ: {prediction.shape} and {truth.shape}")
    true_ids, truth_index = np.unique(truth, return_inverse=True)
    pred_ids, pred_index = np.unique(prediction, return_inverse=True)
    n_true, n_pred = len(true_ids), len(pred_ids)
    overlap = np.bincount(
        truth_index.ravel() * n_pred + pred_index.ravel(), minlength=n_true * n_pred
    ).reshape(n_true, n_pred)
    sizes_true, sizes_pred = overlap.sum(1, keepdims=True), overlap.sum(0, keepdims=True)
    iou = overlap / np.maximum(sizes_true + sizes_pred - overlap, 1)
    keep_true, keep_pred = true_ids != 0, pred_ids != 0  # background is not an object
    return iou[np.ix_(keep_true, keep_pred)]


# IoU thresholds 0.5, 0.55, ..., 0.95: the "mean AP" of COCO and the 2018 Data Science Bowl.
AP_THRESHOLDS = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))


def segmentation_scores(
    prediction: np.ndarray, truth: np.ndarray, thresholds=AP_THRESHOLDS
) -> dict:
    """Return pixel and object scores of a label image against the true labels.

    Parameters
    ----------
    prediction, truth : ndarray of int
        Label images of one shape; 0 is background, every other value one object.
    thresholds : sequence of float
        IoU thresholds for `average_precision`, each at least 0.5.

    Returns
    -------
    dict
        ``pixel_iou`` (`pixel_iou` of the object masks) with the
        ``pixel_intersection`` and ``pixel_union`` it divides, to pool over
        images; ``average_precision`` (threshold to AP), ``ap_50`` (AP at 0.5,
        where measured), ``mean_average_precision`` (mean over the thresholds);
        ``objects_found`` and ``objects_true``.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> scores = segmentation_scores(np.array([[1, 1, 0, 0, 0]]), truth, thresholds=(0.5,))
    >>> scores["pixel_iou"], scores["ap_50"], scores["objects_found"], scores["objects_true"]
    (0.5, 0.5, 1, 2)
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    found, expected = prediction > 0, truth > 0
    precision = average_precision(prediction, truth, thresholds)
    return {
        "pixel_iou": pixel_iou(found, expected),
        "pixel_intersection": int(np.count_nonzero(found & expected)),
        "pixel_union": int(np.count_nonzero(found | expected)),
        "average_precision": precision,
        "ap_50": precision.get(0.5),
        "mean_average_precision": float(np.mean(list(precision.values()))),
        "objects_found": len(np.unique(prediction[found])),
        "objects_true": len(np.unique(truth[expected])),
    }
