"""Segment an image with a trained model: checks, tiled prediction, label images."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..images import intensity_range_for
from ..model.files import ModelInfo
from ..model.unet import UNet
from ..progress import Progress, run_to_end
from .objects import OBJECT_THRESHOLD, class_labels, object_labels
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


def image_channel_axis(shape: tuple[int, ...], in_channels: int, rgb: bool = False) -> int | None:
    """Work out which axis of an image holds the channels a model expects.

    Parameters
    ----------
    shape : tuple of int
        Shape of the image.
    in_channels : int
        Channels the model takes.
    rgb : bool
        The image is RGB(A), channels last (as napari's ``Image.rgb``).

    Returns
    -------
    int or None
        The channel axis, or None for a single-channel model.

    Raises
    ------
    ValueError
        With a message for the user when the image does not fit the model, or
        when it is ambiguous which axis holds the channels.
    """
    if len(shape) < 2 or (rgb and len(shape) < 3):
        raise ValueError(f"expected a 2D image or a stack, got shape {shape}")
    if in_channels == 1:
        if rgb:
            raise ValueError(
                "this model takes grayscale images, but the image is RGB; "
                "split its channels (right-click the layer ▸ Split RGB) and pick one"
            )
        return None
    if rgb:
        if shape[-1] != in_channels:
            raise ValueError(
                f"the model takes {in_channels} channels, the RGB image has {shape[-1]}"
            )
        return len(shape) - 1
    candidates = [axis for axis, size in enumerate(shape[:-2]) if size == in_channels]
    if not candidates:
        raise ValueError(
            f"the model takes {in_channels} channels, but no axis of the image (shape "
            f"{shape}) has {in_channels} entries"
        )
    if len(candidates) > 1:
        raise ValueError(
            f"more than one axis of the image (shape {shape}) could hold the "
            f"{in_channels} channels; reorder the axes so channels come first"
        )
    return candidates[0]


def check_image(image: Any) -> None:
    """Raise a clear ValueError for images no model can segment.

    Empty images, non-numeric data, and (for in-memory arrays) NaN or infinite
    values are refused. Lazy arrays are checked tile by tile during prediction.
    """
    if image.ndim < 2:
        raise ValueError(f"expected a 2D image or a stack of them, got {image.ndim} dimension(s)")
    if 0 in image.shape:
        raise ValueError("the image is empty")
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "biuf":  # bool, integers, floats
        raise ValueError(f"cannot segment an image of type {dtype}")
    if isinstance(image, np.ndarray) and np.issubdtype(dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("the image contains NaN or infinite values; fix or mask them first")


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
    min_size: int = 15,
    split_touching: bool = True,
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
    check_image(image)
    if model.config != info.config:
        raise ValueError("the model does not match its description")
    channel_axis = image_channel_axis(tuple(image.shape), model.config.in_channels, rgb)
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
