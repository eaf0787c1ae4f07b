"""Segment an image with a trained model: checks, object size, tiled prediction, label images."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..device import available_memory
from ..images import check_image, converts_to_grayscale, image_for_model, intensity_range_for
from ..model.builtin import RGB_MODEL, builtin_model_for
from ..model.files import ModelInfo
from ..model.unet import UNet
from ..progress import Progress, run_to_end
from .objects import DEFAULT_OBJECTS, OBJECT_THRESHOLD, class_labels, object_labels
from .scale import (
    BYTES_PER_PIXEL_AND_CHANNEL,
    BYTES_PER_PIXEL_AND_CLASS,
    ObjectDiameter,
    check_object_diameter,
    found_object_diameter,
    resized_back,
    resized_image,
    scale_factor,
    size_note,
    spatial_axes,
)
from .tiling import TileSize, iter_predict_tiled

# "auto" accepts the objects of a pass when their diameter, as the network saw them, is
# within this factor of the size it is shown objects at (`ModelInfo.shown_larger` times
# its training diameter); otherwise it resizes and predicts again.
CLOSE_ENOUGH = 1.15
AUTO_PASSES = 3  # a first pass at 1x and at most two refinements


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
    object_diameter : float or None
        Typical object diameter of the image, in pixels: the one given, or with
        ``"auto"`` the estimate of the pass returned (`scale.found_object_diameter`:
        the median weighted by area); None when not asked for
        or not found.
    scale : float
        How much the image was resized for the network (1: not at all).
    size_note : str
        One plain sentence on the object size used, for the user; "" if none.
    image_note : str
        One plain sentence on how the image was converted for the model (an
        RGB image for a grayscale model: `images.RGB_CONVERTED_NOTE`, and the
        built-in model that takes colours where one is shipped); "" if not.
    """

    probabilities: np.ndarray
    classes: np.ndarray
    foreground: np.ndarray
    objects: np.ndarray
    object_diameter: float | None = None
    scale: float = 1.0
    size_note: str = ""
    image_note: str = ""


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
    object_diameter: ObjectDiameter = None,
) -> Generator[Progress, None, Segmentation]:
    """Segment an image, yielding progress; the generator's return value is the result.

    Parameters
    ----------
    model, info : UNet, ModelInfo
        The trained network and its description (normalisation, classes).
    image : array-like
        ``(Y, X)``, a stack ``(..., Y, X)``, or with the channels the model takes.
    rgb : bool
        The image is RGB(A), channels last. A grayscale model segments its
        luminance (`images.grayscale`), and `Segmentation.image_note` says so.
    tile_size, batch_size, device
        Passed to `iter_predict_tiled`; ``tile_size="auto"`` picks it for the
        device and memory (`auto_tile_size`), None predicts in one pass.
    threshold, min_size, split_touching
        Passed to `object_labels`.
    object_diameter : None, "auto" or float
        Typical diameter of the image's objects, in pixels; the image is resized
        so they match the model's training objects (``info.object_diameter``),
        and every result is brought back onto the image's pixel grid, where the
        objects are found. None: as it is. ``"auto"``: estimated from a first
        pass at 1×, refined by predicting again while the objects found are
        more than `CLOSE_ENOUGH` times off (a model shown objects larger than trained
        checks the pass it would keep once more, settled or not, the image shrunk so
        whole objects appear at the training size); without objects, as it is, and
        `Segmentation.size_note` says so. A model that records no diameter
        predicts every image as it is (said only when a number was given).

    Raises
    ------
    ValueError
        For an image the model cannot take, or an object diameter that is not a
        positive number or would resize the image beyond what the network or
        the memory takes.
    """
    converts = converts_to_grayscale(model.config.in_channels, rgb)
    offered = builtin_model_for(image, rgb) if converts else None  # on the colours
    image, rgb, image_note = image_for_model(image, model.config.in_channels, rgb)
    if image_note and offered == RGB_MODEL:
        image_note += f"; the built-in model {RGB_MODEL} takes the colours of stained tissue"
    channel_axis = check_image(image, model.config.in_channels, rgb)
    if model.config != info.config:
        raise ValueError("the model does not match its description")
    check_object_diameter(object_diameter)
    intensity_range = intensity_range_for(image, info.normalization)
    trained, larger = info.object_diameter, info.shown_larger
    objects_at = dict(threshold=threshold, min_size=min_size, split_touching=split_touching)

    def factor_for(diameter: float) -> float:
        y, x = spatial_axes(image.ndim, channel_axis)
        planes = image.size // (image.shape[y] * image.shape[x])
        per_pixel = BYTES_PER_PIXEL_AND_CLASS * model.config.n_classes
        per_pixel += BYTES_PER_PIXEL_AND_CHANNEL * model.config.in_channels
        return scale_factor(
            diameter,
            trained,
            (image.shape[y], image.shape[x]),
            smallest_input=model.min_input_size,
            pixel_bytes=planes * per_pixel,
            available_bytes=available_memory(torch.device("cpu")),
            larger=larger,
        )

    def segmented_at(factor: float, label: str) -> Generator[Progress, None, Segmentation]:
        resized = image if factor == 1 else resized_image(image, factor, channel_axis)
        work = iter_predict_tiled(
            model,
            resized,
            tile_size=tile_size,
            batch_size=batch_size,
            device=device,
            channel_axis=channel_axis,
            intensity_range=intensity_range,
        )
        probabilities = yield from _labelled(work, label)
        y, x = spatial_axes(image.ndim, channel_axis)
        probabilities = resized_back(probabilities, (image.shape[y], image.shape[x]))
        yield Progress(0, 1, "separating objects")
        result = _segmentation(probabilities, **objects_at)
        result.image_note = image_note
        yield Progress(1, 1, "done")
        return result

    if object_diameter is None or trained is None:
        result = yield from segmented_at(1.0, "")
        if object_diameter not in (None, "auto"):  # auto is the default: no note every time
            result.size_note = (
                f"The model {info.name!r} does not record the size of its training objects, "
                "so the image was segmented at its own size."
            )
        return result
    if object_diameter != "auto":
        factor = factor_for(float(object_diameter))
        result = yield from segmented_at(factor, "" if factor == 1 else f"resized {factor:.2f}×")
        result.object_diameter, result.scale = float(object_diameter), factor
        result.size_note = size_note(result.object_diameter, factor, trained, "given", larger)
        return result
    result = yield from _auto_sized(segmented_at, factor_for, trained * larger, larger)
    if result.object_diameter is None:
        result.size_note = (
            "No objects were found to estimate the object size from, so the image was "
            "segmented at its own size, as the model was trained."
        )
    else:
        result.size_note = size_note(
            result.object_diameter, result.scale, trained, "estimated", larger
        )
    return result


def _auto_sized(
    segmented_at: Callable[[float, str], Generator[Progress, None, Segmentation]],
    factor_for: Callable[[float], float],
    shown: float,
    larger: float,
) -> Generator[Progress, None, Segmentation]:
    """Segment with the object size estimated: the ``"auto"`` of `iter_segment`.

    Parameters
    ----------
    segmented_at : callable
        ``segmented_at(factor, label)``: a generator that segments the image resized by
        `factor`, its progress messages prefixed by `label`.
    factor_for : callable
        The resize factor that shows objects of a diameter at the size `shown`; raises
        ValueError where the image cannot be resized that much.
    shown, larger : float
        The diameter the network is shown objects at, and how much larger that is than
        its training objects.

    Returns
    -------
    Segmentation
        The pass kept, with its `object_diameter` and `scale` (None and 1 when no pass
        found objects).
    """
    factor, result, tried, checking, checked = 1.0, None, set(), False, False
    passes, attempt = AUTO_PASSES, 0
    while attempt < passes:
        attempt += 1
        label = "estimating the object size" if attempt == 1 else f"resized {factor:.2f}×"
        latest = yield from segmented_at(factor, label)
        estimate = found_object_diameter(latest.objects)
        if estimate is None:  # keep the pass that found objects, if any did
            result = result or latest
            break
        latest.object_diameter, latest.scale = estimate, factor
        tried.add(round(factor, 2))
        if checking:  # the same image seen smaller: whole objects keep their size
            checking = False
            if abs(math.log(estimate / result.object_diameter)) <= math.log(CLOSE_ENOUGH):
                break
            result = None  # that pass saw pieces of larger objects: go on from here
            passes = attempt + 1  # one refinement from the check
        # keep the pass whose objects the network saw closest to the size it is shown: a
        # refinement on fragments can only make the estimate worse, never hide a good pass
        if result is None or _size_gap(latest, shown) < _size_gap(result, shown):
            result = latest
        settled = _size_gap(latest, shown) <= math.log(CLOSE_ENOUGH)
        if not settled:
            try:
                factor = factor_for(estimate)
                settled = round(factor, 2) in tried  # back to a size tried: it would not settle
            except ValueError:  # an estimate beyond what can be resized: keep the best pass
                settled = True
        if settled or attempt == passes:
            # the pass about to be kept may have seen pieces of far larger objects: unless the
            # image was seen that small already, check once with its objects at the training size
            try:
                check = factor_for(result.object_diameter * larger)
            except ValueError:  # too small to shrink
                break
            if checked or check * CLOSE_ENOUGH >= min(tried):
                break
            checked = checking = True
            factor, passes = check, attempt + 1
    return result


def _segmentation(
    probabilities: np.ndarray, *, threshold: float, min_size: int, split_touching: bool
) -> Segmentation:
    foreground = 1.0 - probabilities[..., 0, :, :]
    classes = class_labels(probabilities)
    objects = object_labels(foreground, threshold, min_size, split_touching)
    return Segmentation(probabilities, classes, foreground.astype(np.float32), objects)


def _labelled(
    work: Generator[Progress, None, np.ndarray], label: str
) -> Generator[Progress, None, np.ndarray]:
    """Pass on the progress of `work`, its messages prefixed by `label`."""
    while True:
        try:
            progress = next(work)
        except StopIteration as stop:
            return stop.value
        if label:
            progress = Progress(progress.done, progress.total, f"{label}: {progress.message}")
        yield progress


def _size_gap(result: Segmentation, shown: float) -> float:
    """How far the objects of a pass were, as the network saw them, from the size it is shown."""
    return abs(math.log(result.object_diameter * result.scale / shown))


def segment(model: UNet, info: ModelInfo, image: Any, **settings: Any) -> Segmentation:
    """Segment an image; see `iter_segment` for the settings."""
    return run_to_end(iter_segment(model, info, image, **settings))
