"""Segment an image with a trained model: checks, tiled prediction, label images."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..images import check_image, intensity_range_for
from ..model.files import ModelInfo
from ..model.unet import UNet
from ..progress import Progress, run_to_end
from .objects import DEFAULT_OBJECTS, OBJECT_THRESHOLD, class_labels, object_labels
from .tiling import TileSize, iter_predict_tiled


@dataclass
class Segmentation:
    """What a model makes of an image.

    Attributes
    ----------
    probabilities : ndarray of float32, shape (..., n_classes, Y, X)
        Class probabilities of every pixel.
    classes : ndarray of uint8, shape (..., Y, X)
        Most likely class; 0 is the background.
    foreground : ndarray of float32, shape (..., Y, X)
        Probability of belonging to any object class (1 − background).
    objects : ndarray of uint32, shape (..., Y, X)
        Separated objects, one label each.
    """

    probabilities: np.ndarray
    classes: np.ndarray
    foreground: np.ndarray
    objects: np.ndarray


def iter_segment(
    model: UNet,
    info: ModelInfo,
    image: Any,
    *,
    rgb: bool = False,
    tile_size: TileSize = "auto",
    batch_size: int | None = None,
    device: str = "auto",
    threshold: float = OBJECT_THRESHOLD,
    min_size: int = DEFAULT_OBJECTS.min_size,
    split_touching: bool = DEFAULT_OBJECTS.split_touching,
) -> Generator[Progress, None, Segmentation]:
    """Segment an image, yielding progress; the generator's return value is the result.

    Parameters
    ----------
    model, info : UNet, ModelInfo
        The trained network and its description (normalisation, classes).
    image : array-like
        ``(Y, X)``, a stack ``(..., Y, X)``, or with the channels the model takes.
    rgb : bool
        The image is RGB, channels last.
    tile_size, batch_size, device
        Passed to `iter_predict_tiled`; ``tile_size="auto"`` picks it for the
        device and memory (`auto_tile_size`), None predicts in one pass.
    threshold, min_size, split_touching
        Passed to `object_labels`.
    """
    channel_axis = check_image(image, model.config.in_channels, rgb)
    if model.config != info.config:
        raise ValueError("the model does not match its description")
    intensity_range = intensity_range_for(image, info.normalization)
    probabilities = yield from iter_predict_tiled(
        model,
        image,
        tile_size=tile_size,
        batch_size=batch_size,
        device=device,
        channel_axis=channel_axis,
        intensity_range=intensity_range,
    )
    total = 1
    yield Progress(0, total, "separating objects")
    foreground = 1.0 - probabilities[..., 0, :, :]
    classes = class_labels(probabilities)
    objects = object_labels(foreground, threshold, min_size, split_touching)
    yield Progress(total, total, "done")
    return Segmentation(probabilities, classes, foreground.astype(np.float32), objects)


def segment(model: UNet, info: ModelInfo, image: Any, **settings: Any) -> Segmentation:
    """Segment an image; see `iter_segment` for the settings."""
    return run_to_end(iter_segment(model, info, image, **settings))
