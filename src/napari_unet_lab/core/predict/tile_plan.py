"""Where the tiles of an image lie, and how they are read and written.

Overlap-tile prediction with mirror extrapolation (Ronneberger et al. 2015, Fig. 2):
each tile is read with enough context around it; where the context falls outside
the image it is filled by mirroring the image. Tiles start on the pooling grid of
one virtual pass over the whole mirrored image, so for a valid-padding network
every output pixel sees exactly the input it would see in that whole pass.

The plan is public, as MONAI keeps its window plan public: `plan_tiles` lists the
tiles, `read_tiles` reads a batch of them normalised, `write_tiles` writes what a
network made of them. `tiling.iter_predict_tiled` is the engine that runs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..device import select_device
from ..images import normalised
from ..model.unet import UNet
from . import tile_cost

Border = Literal["mirror", "zeros"]

# "auto": chosen by `auto_tile_size`; None: the whole image in one pass
TileSize = int | Literal["auto"] | None

# Largest automatic tile edges. CPU: the light U-Net's best measured; its 760-1136 px tiles
# feed 15-31 % fewer pixels on a 2048² image but cost 24-58 % more per pixel (quiet 2-core
# Xeon, benchmarks/README.md). GPU: 1024 px feeds 23 % fewer pixels than 512 px (same padding).
AUTO_TILE_CPU = 512
AUTO_TILE_GPU = 1024


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
        Bytes the activations of one batch may take; by default half of the
        memory free on the device (`tile_cost.memory_budget`).

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
    budget = tile_cost.memory_budget(device) if memory_budget is None else memory_budget
    half = tile_cost.uses_half_precision(device, mixed_precision)
    per_pixel = tile_cost.bytes_per_pixel(model, half) * max(batch_size, 1)
    grid = model.size_multiple
    fitting = math.isqrt(max(budget, 0) // per_pixel) // grid * grid
    smallest = max(4 * model.halo, 128)
    return max(min(AUTO_TILE_GPU if gpu else AUTO_TILE_CPU, fitting), smallest)


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


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile of a plan: the input it reads, and the output pixels it keeps.

    Attributes
    ----------
    stack_index : tuple of int
        The plane of a stack ``(..., Y, X)`` the tile lies in; ``()`` for one image.
    ys, xs : ndarray of int
        Image rows and columns the tile reads as input, mirrored into the image
        (or -1 where a zero border reads zeros).
    out_y, out_x : slice
        Image rows and columns the tile predicts; tiles never share these.
    keep_y, keep_x : slice
        The same pixels in the tile's output.
    """

    stack_index: tuple[int, ...]
    ys: np.ndarray
    xs: np.ndarray
    out_y: slice
    out_x: slice
    keep_y: slice
    keep_x: slice


@dataclass(frozen=True, eq=False)
class TilePlan:
    """Every tile of an image or stack, in the order they are predicted.

    Attributes
    ----------
    shape : tuple of int
        The image's shape without channels, ``(..., Y, X)``.
    rows, columns : AxisPlan
        Where the tiles lie along Y and along X (the same for every plane).
    tiles : tuple of Tile
        Plane by plane, row by row.
    """

    shape: tuple[int, ...]
    rows: AxisPlan
    columns: AxisPlan
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    def batches(self, size: int) -> Iterator[list[Tile]]:
        """Yield the tiles in batches of `size` (the last may be smaller)."""
        for start in range(0, len(self.tiles), size):
            yield list(self.tiles[start : start + size])


def plan_tiles(
    model: UNet, shape: tuple[int, ...], tile_size: TileSize = "auto", border: Border = "mirror"
) -> TilePlan:
    """Place the tiles of an image or stack of `shape` ``(..., Y, X)``.

    Parameters
    ----------
    model : UNet
        The network; its padding, halo and pooling grid decide the geometry.
    shape : tuple of int
        The image's shape without channels: ``(Y, X)`` or ``(..., Y, X)``.
    tile_size : int, "auto" or None
        Largest input tile edge (see `plan_axis`); ``"auto"`` follows the CPU
        rule of `auto_tile_size`, None plans one tile per plane.
    border : {"mirror", "zeros"}
        What tiles read beyond the image border (see `plan_axis`).

    Returns
    -------
    TilePlan

    Examples
    --------
    >>> from napari_unet_lab.core.config import UNetConfig
    >>> plan = plan_tiles(UNet(UNetConfig(base_channels=4)), (300, 257), tile_size=300)
    >>> len(plan), plan.rows.tile_input, plan.rows.starts, plan.columns.starts
    (4, 244, (0, 144), (0, 128))
    >>> second = plan.tiles[1]  # top right: keeps columns 128-256, its output's 0-128
    >>> second.out_x, second.keep_x
    (slice(128, 257, None), slice(0, 129, None))
    """
    if tile_size == "auto":  # no device given: the CPU rule
        tile_size = auto_tile_size(model, "cpu")
    height, width = shape[-2:]
    rows = plan_axis(model, height, tile_size, border)
    columns = plan_axis(model, width, tile_size, border)
    offset = model.output_offset  # tile output index 0 lies under this input index

    def axis_tiles(plan: AxisPlan, length: int) -> list[tuple[np.ndarray, slice, slice]]:
        tiles = []
        for start, stop, input_start in zip(
            plan.starts, plan.stops, plan.input_starts, strict=True
        ):
            keep = start - input_start - offset
            tiles.append(
                (
                    _axis_indices(plan, input_start, length),
                    slice(start, stop),
                    slice(keep, keep + stop - start),
                )
            )
        return tiles

    along_y, along_x = axis_tiles(rows, height), axis_tiles(columns, width)
    tiles = tuple(
        Tile(stack_index, ys, xs, out_y, out_x, keep_y, keep_x)
        for stack_index in np.ndindex(*shape[:-2])
        for ys, out_y, keep_y in along_y
        for xs, out_x, keep_x in along_x
    )
    return TilePlan(tuple(shape), rows, columns, tiles)


def read_tiles(
    image: Any, tiles: list[Tile], intensity_range: tuple[float, float] | None
) -> np.ndarray:
    """Read a batch of tiles, normalised as the model expects.

    Parameters
    ----------
    image : array-like, shape (..., C, Y, X)
        The image with its channels first (`images.channels_first`); only the
        tiles' regions are read.
    tiles : list of Tile
        From a `TilePlan` of this image.
    intensity_range : (float, float) or None
        Mapped to 0 and 1 by `images.normalised`, the same for every tile.

    Returns
    -------
    ndarray of float32, shape (B, C, h, w)
        The network's input.
    """
    return normalised(
        np.stack([read_tile(image[tile.stack_index], tile.ys, tile.xs) for tile in tiles]),
        intensity_range,
    )


def write_tiles(out: Any, tiles: list[Tile], scores: np.ndarray) -> None:
    """Write what the network made of a batch of tiles: each tile's kept pixels.

    Parameters
    ----------
    out : array-like, shape (..., K, Y, X)
        The whole result (a NumPy or zarr array, say).
    tiles : list of Tile
        The batch, as `read_tiles` read it.
    scores : array-like, shape (B, K, h', w')
        The network's output for each tile, in the same order.
    """
    if len(scores) != len(tiles):
        raise ValueError(f"got {len(scores)} results for {len(tiles)} tiles")
    for tile, prediction in zip(tiles, scores, strict=True):
        out[(*tile.stack_index, slice(None), tile.out_y, tile.out_x)] = prediction[
            :, tile.keep_y, tile.keep_x
        ]
