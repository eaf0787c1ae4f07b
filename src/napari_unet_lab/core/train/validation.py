"""How well a network does mid-training: validation scores, live previews and uncertainty."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..images import image_channel_axis, intensity_range_for
from ..model.unet import UNet
from ..predict.tiling import predict_tiled
from .targets import TrainingTarget


@dataclass(frozen=True)
class ValidationScores:
    """Overlap of prediction and annotation on held-out images.

    Attributes
    ----------
    iou, dice : float
        Intersection over union and Dice coefficient, per object class over
        the annotated pixels of all images, averaged over the object classes.
    class_iou : tuple of float
        IoU of each object class (classes 1, 2, …).
    """

    iou: float
    dice: float
    class_iou: tuple[float, ...]


def predict_probabilities(
    model: UNet,
    image: np.ndarray,
    normalization: dict[str, Any] | None = None,
    tile_size: int | None = 512,
) -> np.ndarray:
    """Return the class probabilities of an image, (K, Y, X), with the model as it is now.

    Parameters
    ----------
    model : UNet
        The network; it is not changed.
    image : (Y, X) or (C, Y, X) array
        The image, with raw intensities.
    normalization : dict, optional
        The model's intensity normalisation (default: percentiles 1 and 99.8).
    tile_size : int or None
        Input tile edge for `predict_tiled`.

    Returns
    -------
    (K, Y, X) float32 array
    """
    return predict_tiled(
        model,
        image,
        tile_size=tile_size,
        device=next(model.parameters()).device,
        channel_axis=image_channel_axis(np.shape(image), model.config.in_channels),
        intensity_range=intensity_range_for(image, normalization),
    )


def predict_foreground(
    model: UNet,
    image: np.ndarray,
    normalization: dict[str, Any] | None = None,
    tile_size: int | None = 512,
) -> np.ndarray:
    """Return the pixels a model assigns to its first object class (class 1), (Y, X) bool.

    The parameters are those of `predict_probabilities`.
    """
    return predict_probabilities(model, image, normalization, tile_size).argmax(axis=0) == 1


def class_map(target: TrainingTarget | np.ndarray) -> np.ndarray:
    """Return the classes per pixel (int64, negative where not annotated) of a target.

    A boolean object mask becomes classes 0 (background) and 1 (object).
    """
    if isinstance(target, TrainingTarget):
        return target.classes
    return np.asarray(target).astype(np.int64)


def validation_scores(
    model: UNet,
    images: Sequence[np.ndarray],
    targets: Sequence[TrainingTarget | np.ndarray],
    normalization: dict[str, Any] | None = None,
) -> ValidationScores:
    """Measure IoU and Dice of a model's prediction against annotations.

    Parameters
    ----------
    model : UNet
        The network.
    images : sequence of (Y, X) or (C, Y, X) arrays
        Raw images.
    targets : sequence of TrainingTarget or (Y, X) arrays
        Classes per pixel (negative: not annotated, ignored), or boolean object masks.
    normalization : dict, optional
        The model's intensity normalisation.

    Returns
    -------
    ValidationScores
        Pooled over all images; a class absent from both prediction and
        annotation scores 1.
    """
    predictions = (
        (predict_probabilities(model, image, normalization).argmax(axis=0), class_map(target))
        for image, target in zip(images, targets, strict=True)
    )
    return pooled_scores(predictions, model.config.n_classes)


def pooled_scores(
    predictions: Iterable[tuple[np.ndarray, np.ndarray]], n_classes: int
) -> ValidationScores:
    """Return IoU and Dice per object class, pooled over (predicted, annotated) class maps.

    Pixels annotated as negative (not annotated) are left out; a class absent
    from both prediction and annotation scores 1.
    """
    intersection = np.zeros(n_classes, dtype=np.int64)
    union = np.zeros(n_classes, dtype=np.int64)
    for predicted, truth in predictions:
        annotated = truth >= 0
        predicted, truth = predicted[annotated], truth[annotated]
        for c in range(1, n_classes):
            is_predicted, is_true = predicted == c, truth == c
            intersection[c] += np.count_nonzero(is_predicted & is_true)
            union[c] += np.count_nonzero(is_predicted | is_true)
    iou = [intersection[c] / union[c] if union[c] else 1.0 for c in range(1, n_classes)]
    dice = [
        2 * intersection[c] / (intersection[c] + union[c]) if union[c] else 1.0
        for c in range(1, n_classes)
    ]
    return ValidationScores(float(np.mean(iou)), float(np.mean(dice)), tuple(map(float, iou)))


def foreground_iou(
    model: UNet,
    images: Sequence[np.ndarray],
    foregrounds: Sequence[np.ndarray],
    normalization: dict[str, Any] | None = None,
) -> float:
    """Return the object pixel IoU of a two-class model over some images, pooled.

    `foregrounds` are the true object masks, e.g. ``labels > 0``.
    """
    return validation_scores(model, images, foregrounds, normalization).iou


# ------------------------------------------------------------------ live preview
@dataclass
class Preview:
    """What the network makes of a region of an image, mid-training.

    Attributes
    ----------
    step : int
        Training step the preview shows.
    index : int
        Which training image (or -1 for another image).
    region : (slice, slice)
        Where in the image the preview lies.
    classes : (Y, X) uint8 array
        Most likely class.
    uncertainty : (Y, X) float32 array
        Entropy of the class probabilities, divided by its maximum log(K):
        0 sure, 1 no idea. High values show where annotating helps most.
    """

    step: int
    index: int
    region: tuple[slice, slice]
    classes: np.ndarray
    uncertainty: np.ndarray


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """Return the normalised entropy of class probabilities (K, ...) → (...), in [0, 1].

    Examples
    --------
    >>> uncertainty_map(np.array([[0.5, 1.0], [0.5, 0.0]])).round(3)
    array([1., 0.], dtype=float32)
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    entropy = -terms.sum(axis=0) / math.log(probabilities.shape[0])
    return (entropy + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0


def region_preview(
    model: UNet,
    image: np.ndarray,
    region: tuple[slice, slice] | None = None,
    intensity_range: tuple[float, float] | None = None,
    step: int = 0,
    index: int = -1,
) -> Preview:
    """Predict a region of an image with the network as it is now.

    Parameters
    ----------
    model : UNet
        The network, predicting on the device it is on; left in the mode it was in.
    image : (C, Y, X) array
        The whole image, channels first (`images.channels_first`); around the
        region it is the context, as in prediction.
    region : (slice, slice), optional
        Rows and columns to show; default the whole image.
    intensity_range : (float, float) or None
        Intensities mapped to 0 and 1, found on the whole image
        (`intensity_range_for`); None for an image normalised already.
    step, index : int
        Recorded in the preview: the training step, and which training image
        it is (-1 for none).

    Returns
    -------
    Preview
        Equal to prediction of the whole image, cut to the region.
    """
    height, width = image.shape[-2:]
    if region is None:
        region = (slice(0, height), slice(0, width))
    rows = slice(*region[0].indices(height)[:2])
    cols = slice(*region[1].indices(width)[:2])
    if rows.stop <= rows.start or cols.stop <= cols.start:
        raise ValueError("the preview region is empty")
    # context reaching past every input window, starting on the pooling grid of the
    # whole image, so the preview equals a prediction of the whole image there
    reach, grid = model.receptive_field, model.size_multiple
    context = (
        slice(max((rows.start - reach) // grid * grid, 0), min(rows.stop + reach, height)),
        slice(max((cols.start - reach) // grid * grid, 0), min(cols.stop + reach, width)),
    )
    crop = image[(..., *context)]
    was_training = model.training
    probabilities = predict_tiled(
        model,
        crop,
        device=next(model.parameters()).device,
        channel_axis=0,
        intensity_range=intensity_range,
    )
    model.train(was_training)
    inner = (
        slice(rows.start - context[0].start, rows.stop - context[0].start),
        slice(cols.start - context[1].start, cols.stop - context[1].start),
    )
    probabilities = probabilities[(slice(None), *inner)]
    return Preview(
        step,
        index,
        (rows, cols),
        probabilities.argmax(axis=0).astype(np.uint8),
        uncertainty_map(probabilities),
    )
