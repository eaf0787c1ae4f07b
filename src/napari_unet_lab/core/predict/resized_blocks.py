"""Scale-aware prediction of images larger than memory: block by block, resized for the network.

In memory, an image whose objects are larger or smaller than the model's training
objects is resized as a whole (`scale.resized_image`), predicted, and brought back
(`scale.resized_back`). An image larger than memory cannot be resized as a whole,
so it is cut into blocks of its own pixel grid; each block is read with a margin,
resized, predicted by the tiling engine and brought back onto its own pixels.

Every block samples the one resized image a whole-image resize would make: the
same sample positions as skimage's ``resize`` (pixel centres, linear interpolation,
mirrored borders, Gaussian anti-aliasing when shrinking), a margin that covers the
Gaussian, the network's context (its halo, from a tile start on the pooling grid)
and the interpolation back. So the result is that of `segment` with the same
object diameter up to float rounding (softmax blocks, the order of the sums), and
there are no seams between blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from ..device import available_memory
from ..images import channels_first
from ..model.files import ModelInfo
from ..model.unet import UNet
from ..progress import Progress
from .objects import class_labels
from .scale import (
    BYTES_PER_PIXEL_AND_CHANNEL,
    BYTES_PER_PIXEL_AND_CLASS,
    ObjectDiameter,
    check_object_diameter,
    resized_shape,
    scale_factor,
    size_note,
    spatial_axes,
)
from .segment import Segmentation, iter_segment
from .tiling import Runner, TileSize, iter_predict_tiled

# Blocks of the image's own grid predicted at once when resizing; the estimate of
# "auto" looks at one central block of at most this size.
BLOCK_SIZE = 2048
ESTIMATE_SIZE = 2048

# What lies beyond the image when sampling: mirrored (the image, as skimage's
# mode "reflect") or the edge pixel repeated (the probabilities, mode "edge").
Beyond = Literal["mirror", "edge"]


@dataclass(frozen=True)
class ObjectSize:
    """The object size a prediction uses, and what to tell the user about it.

    Attributes
    ----------
    diameter : float or None
        Typical object diameter of the image in pixels: given, or estimated;
        None when the image is predicted as the model was trained.
    factor : float
        How much the image is resized for the network (1: not at all).
    note : str
        One plain sentence for the user; "" when there is nothing to say.
    """

    diameter: float | None = None
    factor: float = 1.0
    note: str = ""


def iter_object_size(
    model: UNet,
    info: ModelInfo,
    image: Any,
    object_diameter: ObjectDiameter,
    *,
    channel_axis: int | None,
    block_size: int = BLOCK_SIZE,
    estimate_size: int = ESTIMATE_SIZE,
    tile_size: TileSize = "auto",
    batch_size: int | None = None,
    device: str = "auto",
) -> Generator[Progress, None, ObjectSize]:
    """Decide how much to resize an image larger than memory, yielding progress.

    Parameters
    ----------
    model, info : UNet, ModelInfo
        The network and its description; ``info.object_diameter`` is the size
        of its training objects.
    image : array-like
        The image, lazily read (``(..., Y, X)`` with channels at `channel_axis`).
    object_diameter : None, "auto" or float
        As for `iter_segment`. ``"auto"`` runs `iter_segment` (``"auto"``) on
        the central `estimate_size` square (of the middle plane of a stack)
        and takes its estimate and resizing for the whole image.
    channel_axis : int or None
        The image's channel axis.
    block_size : int
        Edge of the blocks predicted at once; memory is checked for one block.
    estimate_size : int
        Largest edge of the central block the ``"auto"`` estimate reads.
    tile_size, batch_size, device
        For the estimate, as for `iter_segment`.

    Raises
    ------
    ValueError
        For a diameter that is not a positive number, or that would resize a
        block beyond what the network or the memory takes (`scale_factor`).
    """
    check_object_diameter(object_diameter)
    trained = info.object_diameter
    if object_diameter is None:
        return ObjectSize()
    if trained is None:
        note = "" if object_diameter == "auto" else _not_recorded(info)
        return ObjectSize(note=note)
    if object_diameter != "auto":
        y, x = spatial_axes(image.ndim, channel_axis)
        height, width = int(image.shape[y]), int(image.shape[x])
        per_pixel = BYTES_PER_PIXEL_AND_CLASS * model.config.n_classes
        per_pixel += BYTES_PER_PIXEL_AND_CHANNEL * model.config.in_channels
        factor = scale_factor(  # the whole image must not shrink below what the network takes
            float(object_diameter),
            trained,
            (height, width),
            smallest_input=model.min_input_size,
            pixel_bytes=per_pixel,
            available_bytes=None,
            larger=info.shown_larger,
        )
        scale_factor(  # memory holds one block at a time
            float(object_diameter),
            trained,
            (min(height, block_size), min(width, block_size)),
            smallest_input=1,
            pixel_bytes=per_pixel,
            available_bytes=available_memory(torch.device("cpu")),
            larger=info.shown_larger,
        )
        diameter = float(object_diameter)
        note = size_note(diameter, factor, trained, "given", info.shown_larger)
        return ObjectSize(diameter, factor, note)
    pixels = channels_first(image, channel_axis, model.config.in_channels)  # (..., C, Y, X)
    *stack, _, height, width = pixels.shape
    rows, columns = _central(height, estimate_size), _central(width, estimate_size)
    block = np.asarray(pixels[(*(n // 2 for n in stack), slice(None), rows, columns)])
    central = f"the central {block.shape[-2]} × {block.shape[-1]} pixels"
    work = iter_segment(
        model,
        info,
        block[0] if model.config.in_channels == 1 else block,  # (Y, X) or (C, Y, X)
        tile_size=tile_size,
        batch_size=batch_size,
        device=device,
        object_diameter="auto",
    )
    estimate: Segmentation = yield from _prefixed(work, f"object size from {central}")
    if estimate.object_diameter is None:
        return ObjectSize(
            note=f"No objects were found in {central} to estimate the object size from, so "
            "the image was segmented at its own size, as the model was trained."
        )
    diameter, factor = estimate.object_diameter, estimate.scale
    note = size_note(diameter, factor, trained, f"from {central}", info.shown_larger)
    return ObjectSize(diameter, factor, note)


def iter_predict_resized(
    model: UNet,
    image: Any,
    factor: float,
    probabilities: Any,
    classes: Any,
    *,
    channel_axis: int | None,
    intensity_range: tuple[float, float],
    block_size: int = BLOCK_SIZE,
    tile_size: TileSize = "auto",
    batch_size: int | None = None,
    device: str = "auto",
    mixed_precision: bool | None = None,
    runner: Runner | None = None,
    in_flight: int = 1,
) -> Generator[Progress, None, None]:
    """Predict an image resized by `factor`, block by block, onto its own pixel grid.

    Parameters
    ----------
    model : UNet
        The network.
    image : array-like
        ``(..., Y, X)`` with channels at `channel_axis`; read one block at a time.
    factor : float
        How much to resize the image for the network (`scale_factor`).
    probabilities : array-like, shape (n_classes, ..., Y, X)
        Where the class probabilities go (a zarr array), on the image's grid.
    classes : array-like, shape (..., Y, X)
        Where the most likely class of each pixel goes.
    channel_axis : int or None
        The image's channel axis.
    intensity_range : (float, float)
        The whole image's intensities mapped to 0 and 1.
    block_size : int
        Edge of the blocks of the image's grid predicted at once.
    tile_size, batch_size, device, mixed_precision, runner, in_flight
        As for `iter_predict_tiled`.

    Yields
    ------
    Progress
        Per batch of tiles, the block named in the message.
    """
    pixels = channels_first(image, channel_axis, model.config.in_channels)  # (..., C, Y, X)
    *stack_shape, _, height, width = pixels.shape
    grid = (height, width)
    resized = resized_shape(grid, factor)
    reach, grid_step = network_reach(model), model.size_multiple
    blocks = [
        (stack_index, rows, columns)
        for stack_index in np.ndindex(*stack_shape)
        for rows in _spans(height, block_size)
        for columns in _spans(width, block_size)
    ]
    for done, (stack_index, rows, columns) in enumerate(blocks, 1):
        # the resized pixels the way back reads, with the network's context; the window
        # starts on the pooling grid so its tiles see what whole-image tiles see
        back = [
            _samples(s.start, s.stop, m, n, "edge")
            for s, n, m in zip((rows, columns), grid, resized, strict=True)
        ]
        window = tuple(
            slice(
                max(0, (int(lower.min()) - reach) // grid_step * grid_step),
                min(m, int(upper.max()) + 1 + reach),
            )
            for (lower, upper, _), m in zip(back, resized, strict=True)
        )

        def read_image(ys: slice, xs: slice, stack_index=stack_index) -> np.ndarray:
            return np.asarray(pixels[(*stack_index, slice(None), ys, xs)], dtype=np.float32)

        network_input = resampled_window(
            read_image, grid, resized, window, beyond="mirror", smooth=factor < 1
        )  # (C, h, w)
        work = iter_predict_tiled(
            model,
            network_input,
            tile_size=tile_size,
            batch_size=batch_size,
            device=device,
            mixed_precision=mixed_precision,
            channel_axis=0,
            intensity_range=intensity_range,
            runner=runner,
            in_flight=in_flight,
        )
        label = f"block {done} of {len(blocks)}, resized {factor:.2f}×"
        predicted = yield from _prefixed(work, label)  # (n_classes, h, w)

        def read_predicted(ys: slice, xs: slice, at=window, predicted=predicted) -> np.ndarray:
            y0, x0 = at[0].start, at[1].start
            return predicted[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]

        block = resampled_window(
            read_predicted, resized, grid, (rows, columns), beyond="edge", smooth=False
        )
        probabilities[(slice(None), *stack_index, rows, columns)] = block
        classes[(*stack_index, rows, columns)] = class_labels(block)


def resampled_window(
    read: Callable[[slice, slice], np.ndarray],
    shape: tuple[int, int],
    new_shape: tuple[int, int],
    window: tuple[slice, slice],
    *,
    beyond: Beyond,
    smooth: bool,
) -> np.ndarray:
    """Return a window of an image resized from `shape` to `new_shape`, reading only what it needs.

    The values are those of skimage's ``resize(image, new_shape, order=1,
    anti_aliasing=smooth, mode="reflect" or "edge")`` on the whole image, up to
    float rounding (tested).

    Parameters
    ----------
    read : callable
        ``read(rows, columns)`` returns those pixels of the image, ``(..., h, w)``.
    shape, new_shape : (int, int)
        ``(Y, X)`` of the image, and of it resized.
    window : (slice, slice)
        Rows and columns of the resized image wanted; steps of 1.
    beyond : {"mirror", "edge"}
        The image beyond its borders.
    smooth : bool
        Gaussian anti-aliasing first (skimage's sigma, ``(shape / new_shape - 1) / 2``).

    Returns
    -------
    ndarray of float32, shape (..., window rows, window columns)
    """
    samples = [
        _samples(s.start, s.stop, n, m, beyond)
        for s, n, m in zip(window, shape, new_shape, strict=True)
    ]
    sigmas = [
        max(0.0, (n / m - 1) / 2) if smooth else 0.0 for n, m in zip(shape, new_shape, strict=True)
    ]
    reach = [int(4.0 * sigma + 0.5) for sigma in sigmas]  # scipy's Gaussian radius
    crop = tuple(
        slice(max(0, int(lower.min()) - r), min(n, int(upper.max()) + 1 + r))
        for (lower, upper, _), r, n in zip(samples, reach, shape, strict=True)
    )
    pixels = np.asarray(read(*crop), dtype=np.float32)
    if any(sigmas):  # float32 throughout, as skimage filters a float32 image
        pixels = ndimage.gaussian_filter(pixels, [0] * (pixels.ndim - 2) + sigmas, mode="mirror")
    values = pixels.astype(np.float64)
    for axis, (lower, upper, weight), start in zip(
        (-2, -1), samples, [c.start for c in crop], strict=True
    ):
        along = np.expand_dims(weight, -1) if axis == -2 else weight
        values = (
            np.take(values, lower - start, axis=axis) * (1 - along)
            + np.take(values, upper - start, axis=axis) * along
        )
    return values.astype(np.float32)


def network_reach(model: UNet) -> int:
    """Return the input pixels on either side that an output pixel of `model` may depend on.

    The most over all positions: the pooling grid makes some pixels reach a few
    pixels beyond the valid-padding crop (`UNet.halo`).
    """
    probe = model.valid_input_size(model.min_input_size + 8 * model.size_multiple)
    windows = model.input_windows(probe)
    positions = np.arange(len(windows.first)) + model.output_offset
    reach = max((positions - windows.first).max(), (windows.last - positions).max())
    return max(model.halo, int(reach))


# ------------------------------------------------------------------------- internals
def _samples(
    start: int, stop: int, length: int, new_length: int, beyond: Beyond
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where pixels ``start:stop`` of an axis resized to `new_length` sample the original.

    Returns the pixel before and after each sample point (inside the image:
    mirrored or clamped) and the weight of the one after, as ``scipy.ndimage.zoom``
    with ``grid_mode=True`` (skimage's ``resize``) places them.
    """
    position = (np.arange(start, stop) + 0.5) * (length / new_length) - 0.5
    lower = np.floor(position)
    weight = position - lower
    lower = lower.astype(np.int64)
    return _inside(lower, length, beyond), _inside(lower + 1, length, beyond), weight


def _inside(index: np.ndarray, length: int, beyond: Beyond) -> np.ndarray:
    if beyond == "edge" or length == 1:
        return np.clip(index, 0, length - 1)
    period = 2 * (length - 1)  # mirrored about the first and last pixel
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


def _spans(length: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def _central(length: int, size: int) -> slice:
    start = max(0, (length - size) // 2)
    return slice(start, min(length, start + size))


def _prefixed(work: Generator[Progress, None, Any], label: str) -> Generator[Progress, None, Any]:
    """Pass on the progress of `work`, its messages prefixed by `label`; return its result."""
    while True:
        try:
            progress = next(work)
        except StopIteration as stop:
            return stop.value
        yield Progress(progress.done, progress.total, f"{label}: {progress.message}")


def _not_recorded(info: ModelInfo) -> str:
    return (
        f"The model {info.name!r} does not record the size of its training objects, "
        "so the image was segmented at its own size."
    )
