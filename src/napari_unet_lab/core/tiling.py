"""Overlap-tile prediction with mirror extrapolation (Ronneberger et al. 2015, Fig. 2).

Each tile is read with enough context around it; where the context falls outside
the image it is filled by mirroring the image. Tiles start on the pooling grid of
one virtual pass over the whole mirrored image, so for a valid-padding network
every output pixel sees exactly the input it would see in that whole pass: tiled
prediction is bit-identical to it, not an approximation blended from overlaps.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .device import autocast, is_out_of_memory, select_device
from .model import UNet
from .progress import Progress, run_to_end

Output = Literal["logits", "probabilities"]


Border = Literal["mirror", "zeros"]


@dataclass(frozen=True)
class AxisPlan:
    """Where the tiles lie along one image axis.

    Attributes
    ----------
    tile_input : int
        Input size of every tile along this axis (one the network accepts).
    starts : tuple of int
        Image index of the first pixel each tile predicts.
    stops : tuple of int
        Image index after the last pixel each tile keeps; tiles do not overlap
        in what they keep, only in the context they read.
    input_starts : tuple of int
        Image index of each tile's first input pixel; negative, or beyond the
        image, where the tile reads past the border.
    context : int
        Pixels of context before the image's first pixel in the reference pass
        (mirrored, or zeros).
    border : {"mirror", "zeros"}
        What tiles read beyond the image border.
    """

    tile_input: int
    starts: tuple[int, ...]
    stops: tuple[int, ...]
    input_starts: tuple[int, ...]
    context: int
    border: Border = "mirror"


def plan_axis(
    model: UNet, length: int, tile_size: int | None, border: Border = "mirror"
) -> AxisPlan:
    """Place tiles along one axis of `length` pixels.

    Parameters
    ----------
    model : UNet
        The network; its padding, halo and pooling grid decide the geometry.
    length : int
        Image size along the axis.
    tile_size : int or None
        Wanted tile input size; rounded down to a size the network accepts. None
        means one tile over the whole (padded) axis.
    border : {"mirror", "zeros"}
        ``"mirror"`` (the paper): context beyond the image is the image mirrored,
        for every network. ``"zeros"``, for same-padding networks only: the
        network's own zero padding at the image border, as if the whole image
        went through it at once; tiles at the border then need no context there.
    """
    if length < 1:
        raise ValueError("the image is empty along one axis")
    if border == "zeros":
        if model.config.padding != "same":
            raise ValueError("zero borders need a same-padding network; valid padding mirrors")
        return _plan_axis_zero_border(model, length, tile_size)
    if border != "mirror":
        raise ValueError(f"border must be 'mirror' or 'zeros', got {border!r}")
    grid = model.size_multiple
    valid = model.config.padding == "valid"
    # input pixels read before a tile's first kept output pixel
    context = model.output_offset if valid else model.halo

    def covered(tile_input: int) -> int:
        # image pixels one tile predicts
        if valid:
            return model.output_size(tile_input)
        return tile_input - 2 * model.halo

    def smallest_covering(n_pixels: int) -> int:
        size = model.valid_input_size(n_pixels + 2 * context)
        while covered(size) < n_pixels:
            size = model.valid_input_size(size + 1)
        return size

    def plan(tile_input: int) -> AxisPlan:
        step = covered(tile_input) // grid * grid  # keeps every tile on the pooling grid
        last = max(0, math.ceil((length - covered(tile_input)) / grid) * grid)
        starts = [*range(0, last, step), last]
        stops = [*starts[1:], length]
        inputs = tuple(start - context for start in starts)
        return AxisPlan(tile_input, tuple(starts), tuple(stops), inputs, context)

    whole = smallest_covering(length)
    if tile_size is None or tile_size >= whole:
        return AxisPlan(whole, (0,), (length,), (-context,), context)
    largest = model.valid_input_size(tile_size, larger=False)
    smallest = smallest_covering(grid)  # the smallest useful tile
    return _fewest_pixels(plan, model, smallest, max(largest, smallest))


def _plan_axis_zero_border(model: UNet, length: int, tile_size: int | None) -> AxisPlan:
    grid, halo = model.size_multiple, model.halo
    padded = math.ceil(length / grid) * grid  # zeros after the end, as the whole pass needs

    def plan(tile_input: int) -> AxisPlan:
        starts, inputs = [0], [0]
        while True:
            kept = inputs[-1] + tile_input - halo  # first pixel this tile cannot vouch for
            if kept >= length:
                break
            following = (kept - halo) // grid * grid
            if following + tile_input >= padded:
                inputs.append(padded - tile_input)  # the last tile ends at the padded end
                starts.append(kept)
                break
            inputs.append(following)
            starts.append(kept)
        stops = [*starts[1:], length]
        return AxisPlan(tile_input, tuple(starts), tuple(stops), tuple(inputs), 0, "zeros")

    smallest = 2 * halo + grid  # the smallest useful tile
    largest = model.valid_input_size(tile_size, larger=False) if tile_size else padded
    if largest >= padded or largest == 0 or smallest >= padded:
        return AxisPlan(padded, (0,), (length,), (0,), 0, "zeros")
    return _fewest_pixels(plan, model, smallest, max(largest, smallest))


def _fewest_pixels(plan, model: UNet, smallest: int, largest: int) -> AxisPlan:
    """Return the plan with the fewest tiles, then the smallest tiles that still cover.

    Tiles of the largest size may overshoot the image by almost a whole step;
    shrinking them while keeping their number reads fewer pixels for the same
    result.
    """
    best = plan(largest)
    size = largest
    while True:
        size = model.valid_input_size(size - 1, larger=False)
        if size < smallest:
            return best
        candidate = plan(size)
        if len(candidate.starts) > len(best.starts):
            return best
        best = candidate


def mirror_indices(start: int, size: int, length: int) -> np.ndarray:
    """Return indices ``start .. start+size-1`` reflected into ``0 .. length-1``.

    Reflection is about the edge pixels without repeating them (NumPy's
    ``"reflect"`` padding), repeated as often as needed for tiny images.
    """
    indices = np.arange(start, start + size)
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    indices = np.mod(indices, period)
    return np.where(indices >= length, period - indices, indices)


def read_mirrored(image: Any, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Read ``image[..., ys, xs]`` from any array-like, touching only that region.

    Reads the bounding box with plain slices (cheap for dask, zarr and memory
    maps) and mirrors within it in memory.
    """
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    block = np.asarray(image[..., y0:y1, x0:x1])
    if (
        len(ys) == y1 - y0
        and ys[0] == y0
        and len(xs) == x1 - x0
        and xs[0] == x0
        and (np.all(np.diff(ys) == 1) and np.all(np.diff(xs) == 1))
    ):
        return block
    return block[..., (ys - y0)[:, None], (xs - x0)[None, :]]


def read_tile(image: Any, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Read ``image[..., ys, xs]``, with zeros where an index is -1 (past the border)."""
    inside_y, inside_x = ys >= 0, xs >= 0
    if inside_y.all() and inside_x.all():
        return read_mirrored(image, ys, xs)
    tile = np.zeros((*image.shape[:-2], len(ys), len(xs)), dtype=image.dtype)
    if inside_y.any() and inside_x.any():
        rows, cols = np.flatnonzero(inside_y), np.flatnonzero(inside_x)
        tile[..., rows[:, None], cols[None, :]] = read_mirrored(image, ys[rows], xs[cols])
    return tile


def _axis_indices(plan: AxisPlan, input_start: int, length: int) -> np.ndarray:
    if plan.border == "mirror":
        return mirror_indices(input_start, plan.tile_input, length)
    indices = np.arange(input_start, input_start + plan.tile_input)
    return np.where(indices < length, indices, -1)  # zeros start are never negative


@dataclass(frozen=True)
class _Tile:
    stack_index: tuple[int, ...]
    ys: np.ndarray  # input rows (mirrored, or -1 for zeros)
    xs: np.ndarray  # input columns
    out_y: slice  # rows of the image this tile predicts
    out_x: slice
    keep_y: slice  # the same rows in the tile's output
    keep_x: slice


def _tiles(
    model: UNet, shape: tuple[int, ...], tile_size: int | None, border: Border = "mirror"
) -> list[_Tile]:
    height, width = shape[-2:]
    plans = plan_axis(model, height, tile_size, border), plan_axis(model, width, tile_size, border)
    offset = model.output_offset  # tile output index 0 lies under this input index

    def axis_tiles(plan: AxisPlan, length: int):
        for start, stop, input_start in zip(
            plan.starts, plan.stops, plan.input_starts, strict=True
        ):
            keep = start - input_start - offset
            yield (
                _axis_indices(plan, input_start, length),
                slice(start, stop),
                slice(keep, keep + stop - start),
            )

    rows, columns = list(axis_tiles(plans[0], height)), list(axis_tiles(plans[1], width))
    return [
        _Tile(stack_index, ys, xs, out_y, out_x, keep_y, keep_x)
        for stack_index in np.ndindex(*shape[:-2])
        for ys, out_y, keep_y in rows
        for xs, out_x, keep_x in columns
    ]


def _as_channels_first(image: Any, in_channels: int, channel_axis: int | None) -> Any:
    """Return a view of `image` shaped (..., C, Y, X), with C == in_channels."""
    if channel_axis is None:
        if in_channels != 1:
            raise ValueError(
                f"the model expects {in_channels} channels; say which image axis holds them"
            )
        if image.ndim < 2:
            raise ValueError(f"expected an image with at least 2 dimensions, got {image.ndim}")
        return image[..., None, :, :]
    if image.ndim < 3:
        raise ValueError("a channel axis was given, but the image has only 2 dimensions")
    channel_axis = channel_axis % image.ndim
    if channel_axis >= image.ndim - 2 and channel_axis != image.ndim - 1:
        raise ValueError("the channel axis cannot be one of the two image (Y, X) axes")
    if image.shape[channel_axis] != in_channels:
        raise ValueError(
            f"the model expects {in_channels} channel(s), "
            f"the image has {image.shape[channel_axis]} along axis {channel_axis}"
        )
    return np.moveaxis(image, channel_axis, -3)


def iter_predict_tiled(
    model: UNet,
    image: Any,
    *,
    tile_size: int | None = 512,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    mixed_precision: bool | None = None,
    channel_axis: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    output: Output = "probabilities",
    out: Any = None,
    border: Border = "mirror",
) -> Generator[Progress, None, Any]:
    """Predict an image tile by tile, yielding progress between batches of tiles.

    Parameters
    ----------
    model : UNet
        The network (valid or same padding). It is put in evaluation mode.
    image : array-like
        ``(Y, X)`` or a stack ``(..., Y, X)`` predicted slice by slice, with a
        channel axis where the model takes several channels. Any array-like
        that supports slicing works (NumPy, dask, zarr, memory maps); only the
        tiles being predicted are read.
    tile_size : int or None
        Input tile edge in pixels, rounded down to a size the network accepts;
        None predicts the whole mirrored image in one pass.
    batch_size : int or None
        Tiles sent to the device at once. None: 4 on a GPU, 1 on the CPU (where
        larger batches only add memory traffic: measured 1.2-1.35x slower at 4).
        On running out of GPU memory the batch is halved and retried.
    device : str, torch.device or None
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    mixed_precision : bool or None
        None: on for CUDA, off elsewhere (CPU results are exact float32).
    channel_axis : int or None
        Axis of `image` holding channels (``-1`` for RGB); None for one channel.
    intensity_range : (float, float) or None
        Values mapped to 0 and 1 before prediction, the same for every tile.
    output : {"probabilities", "logits"}
        Softmax class probabilities, or the raw class scores.
    out : array-like, optional
        Where to write the result, shaped ``(..., n_classes, Y, X)`` (for
        example a zarr array); a new float32 NumPy array by default.
    border : {"mirror", "zeros"}
        Context beyond the image: mirrored (the paper, any network), or the
        zero padding of a same-padding network, which needs fewer tiles.

    Yields
    ------
    Progress
        After each batch of tiles; closing the generator cancels between batches.

    Returns
    -------
    array-like
        `out`, holding the prediction.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    config = model.config
    image = _as_channels_first(image, config.in_channels, channel_axis)
    height, width = image.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError("the image is empty")
    stack_shape = tuple(image.shape[:-3])
    if out is None:
        out = np.zeros((*stack_shape, config.n_classes, height, width), dtype=np.float32)
    elif tuple(out.shape) != (*stack_shape, config.n_classes, height, width):
        raise ValueError(
            f"out has shape {out.shape}, expected {(*stack_shape, config.n_classes, height, width)}"
        )
    tiles = _tiles(model, (*stack_shape, height, width), tile_size, border)
    device = select_device(device)
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else 4
    model = model.for_inference().to(device)
    low, high = intensity_range if intensity_range is not None else (0.0, 1.0)
    scale = np.float32(1.0 / (high - low)) if high != low else np.float32(1.0)
    low = np.float32(low)

    done = 0
    yield Progress(0, len(tiles), "predicting")
    for batch in _batches(tiles, batch_size):
        pending = [batch]
        while pending:
            part = pending.pop(0)
            inputs = np.stack([read_tile(image[t.stack_index], t.ys, t.xs) for t in part])
            inputs = (inputs.astype(np.float32, copy=False) - low) * scale
            if not np.isfinite(inputs).all():
                raise ValueError(
                    "the image contains NaN or infinite values; fix or mask them first"
                )
            try:
                result = _run(model, inputs, device, mixed_precision)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                _free_cached_memory(device)
                if len(part) == 1:
                    raise MemoryError(
                        f"the {device.type.upper()} ran out of memory for a single tile of "
                        f"{inputs.shape[-2]}x{inputs.shape[-1]} pixels; choose a smaller tile "
                        "size or the CPU"
                    ) from error
                half = len(part) // 2
                pending[:0] = [part[:half], part[half:]]  # retry in smaller batches
                continue
            for tile, prediction in zip(part, result, strict=True):
                out[(*tile.stack_index, slice(None), tile.out_y, tile.out_x)] = prediction[
                    :, tile.keep_y, tile.keep_x
                ]
            done += len(part)
        yield Progress(done, len(tiles), f"predicted {done} of {len(tiles)} tiles")
    if output == "probabilities":
        scores_to_probabilities(out)
    return out


def scores_to_probabilities(scores: Any, rows_per_block: int = 256) -> Any:
    """Turn class scores shaped (..., n_classes, Y, X) into softmax probabilities, in place.

    Works in blocks of whole rows so memory stays bounded. The blocks depend
    only on the image shape, never on the tiles: SIMD kernels round the last
    elements of an array differently, so a per-tile softmax would not be exact.
    """
    height = scores.shape[-2]
    for stack_index in np.ndindex(*scores.shape[:-3]):
        for top in range(0, height, rows_per_block):
            rows = (*stack_index, slice(None), slice(top, top + rows_per_block))
            block = torch.from_numpy(np.ascontiguousarray(scores[rows]))
            scores[rows] = torch.softmax(block, dim=0).numpy()
    return scores


def predict_tiled(model: UNet, image: Any, **settings: Any) -> Any:
    """Predict an image tile by tile; see `iter_predict_tiled` for the settings."""
    return run_to_end(iter_predict_tiled(model, image, **settings))


def _batches(tiles: list[_Tile], size: int) -> Iterator[list[_Tile]]:
    for start in range(0, len(tiles), size):
        yield tiles[start : start + size]


@torch.inference_mode()
def _run(
    model: UNet, inputs: np.ndarray, device: torch.device, mixed_precision: bool | None
) -> np.ndarray:
    batch = torch.from_numpy(inputs).to(device)
    with autocast(device, mixed_precision):
        scores = model(batch)
    return scores.float().cpu().numpy()


def _free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
