"""Overlap-tile prediction with mirror extrapolation (Ronneberger et al. 2015, Fig. 2).

Each tile is read with enough context around it; where the context falls outside
the image it is filled by mirroring the image. Tiles start on the pooling grid of
one virtual pass over the whole mirrored image, so for a valid-padding network
every output pixel sees exactly the input it would see in that whole pass: tiled
prediction is bit-identical to it, not an approximation blended from overlaps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..device import autocast, is_out_of_memory, select_device
from ..model.unet import UNet
from ..progress import Progress, run_to_end

Output = Literal["logits", "probabilities"]


Border = Literal["mirror", "zeros"]

# "auto": chosen by `auto_tile_size`; None: the whole image in one pass
TileSize = int | Literal["auto"] | None

# Largest automatic tile edges. CPU: the light U-Net's best measured; its 760-1136 px tiles
# feed 15-31 % fewer pixels on a 2048² image but cost 24-58 % more per pixel (quiet 2-core
# Xeon, benchmarks/README.md). GPU: 1024 px feeds 23 % fewer pixels than 512 px (same padding).
AUTO_TILE_CPU = 512
AUTO_TILE_GPU = 1024
# Peak activations of one forward pass, in values per pixel per base channel: 9-10
# measured (resident memory of a float32 CPU pass, depths 3 and 4).
_ACTIVATIONS_PER_BASE_CHANNEL = 10


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


def auto_tile_size(
    model: UNet,
    device: str | torch.device | None = "cpu",
    batch_size: int = 1,
    mixed_precision: bool | None = None,
    memory_budget: int | None = None,
) -> int:
    """Return the tile edge ``tile_size="auto"`` stands for.

    Parameters
    ----------
    model : UNet
        The network; its width (``base_channels``) sets the memory per pixel.
    device : str, torch.device or None
        Where the network runs; ``"auto"`` or None as `select_device` picks it.
    batch_size : int
        Tiles sent to the device at once.
    mixed_precision : bool or None
        As for `iter_predict_tiled` (None: on for CUDA); halves the estimate.
    memory_budget : int, optional
        Bytes the activations of one batch may take; by default half of the free
        GPU memory, or a quarter of the physical memory for the CPU.

    Returns
    -------
    int
        An upper bound for the tile input edge, as `tile_size` takes it.

    Notes
    -----
    The rule: the largest tile edge up to 512 px on the CPU, or 1024 px on a
    GPU (CUDA, MPS), whose activations fit `memory_budget`, estimated as
    ``batch_size * edge**2 * (10 * base_channels + in_channels + n_classes)``
    values of 4 bytes (2 under mixed precision); never below 4 halos
    (or 128 px), under which a tile is mostly context.

    Larger tiles waste fewer pixels on the overlapping context (the halo on
    each side of a tile) but, on the CPU, run slower per pixel: on a quiet
    2-core CPU the light U-Net's 760-1136 px tiles were no faster than 512 px
    ones with same padding, and 17-22 % slower with valid padding. A GPU's
    cost per pixel changes less with the tile size, so there the tile grows to
    1024 px (not yet measured). The planner then uses the fewest tiles of at
    most that size, and shrinks them while their number stays the same. With
    valid padding the result is bit-identical whatever the size.
    """
    device = select_device(device) if device in (None, "auto") else torch.device(device)
    gpu = device.type in ("cuda", "mps")
    if memory_budget is None:
        memory_budget = _memory_budget(device)
    config = model.config
    half = device.type == "cuda" if mixed_precision is None else mixed_precision  # as autocast
    channels = _ACTIVATIONS_PER_BASE_CHANNEL * config.base_channels
    values = channels + config.in_channels + config.n_classes
    per_pixel = values * (2 if half else 4) * max(batch_size, 1)
    grid = model.size_multiple
    fitting = math.isqrt(max(memory_budget, 0) // per_pixel) // grid * grid
    smallest = max(4 * model.halo, 128)
    return max(min(AUTO_TILE_GPU if gpu else AUTO_TILE_CPU, fitting), smallest)


def _memory_budget(device: torch.device) -> int:
    """Bytes one batch's activations may take on `device` (see `auto_tile_size`)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return (torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()) // 2
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows)
        physical = 8 * 2**30
    return physical // 4


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
    model: UNet, shape: tuple[int, ...], tile_size: TileSize, border: Border = "mirror"
) -> list[_Tile]:
    if tile_size == "auto":  # no device given: the CPU rule
        tile_size = auto_tile_size(model, "cpu")
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
    tile_size: TileSize = "auto",
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
    tile_size : int, "auto" or None
        Largest input tile edge in pixels, rounded down to a size the network
        accepts. ``"auto"``: `auto_tile_size` for the device and batch (512 px
        on the CPU, 1024 px on a GPU, less where memory is short). None predicts
        the whole mirrored image in one pass.
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
    device = select_device(device)
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else 4
    if tile_size == "auto":
        tile_size = auto_tile_size(model, device, batch_size, mixed_precision)
    tiles = _tiles(model, (*stack_shape, height, width), tile_size, border)
    model = model.for_inference().to(device)
    low, scale = _intensity_mapping(intensity_range)

    done = 0
    yield Progress(0, len(tiles), "predicting")
    for batch in _batches(tiles, batch_size):
        pending = [batch]
        while pending:
            part = pending.pop(0)
            inputs = _read_inputs(image, part, low, scale)
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


def _read_inputs(image: Any, tiles: list[_Tile], low: np.float32, scale: np.float32) -> np.ndarray:
    """Read a batch of tiles, mapped to the model's intensity range: (B, C, h, w) float32."""
    inputs = np.stack([read_tile(image[t.stack_index], t.ys, t.xs) for t in tiles])
    inputs = (inputs.astype(np.float32, copy=False) - low) * scale
    if not np.isfinite(inputs).all():
        raise ValueError("the image contains NaN or infinite values; fix or mask them first")
    return inputs


def _intensity_mapping(
    intensity_range: tuple[float, float] | None,
) -> tuple[np.float32, np.float32]:
    """Return (low, scale) such that ``(value - low) * scale`` maps the range to 0..1."""
    low, high = intensity_range if intensity_range is not None else (0.0, 1.0)
    scale = np.float32(1.0 / (high - low)) if high != low else np.float32(1.0)
    return np.float32(low), scale


# Softmax block height: the blocks, not the tiles, decide how each pixel is rounded.
SOFTMAX_ROWS = 256


def scores_to_probabilities(scores: Any, rows_per_block: int = SOFTMAX_ROWS) -> Any:
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
