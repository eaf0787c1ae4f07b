"""What a tile plan costs: memory per batch, time per batch, work spent on context.

Checked before the first tile is predicted, so that settings that cannot work
are refused at once with a message saying what fits, settings that would keep
the user waiting are bounded, and settings that waste most of the work on the
context around small tiles are pointed out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..device import NotEnoughMemory, available_memory
from ..model.unet import UNet

if TYPE_CHECKING:  # tile_plan uses this module for its automatic tile size
    from .tile_plan import TilePlan

# Peak activations of one forward pass, in values per pixel per base channel: 9-10
# measured (resident memory of a float32 CPU pass, depths 3 and 4).
ACTIVATIONS_PER_BASE_CHANNEL = 10
# Budget of `auto_tile_size` where the free memory is unknown (Windows).
FALLBACK_BUDGET = 2 * 2**30
# Input pixels in one batch at most: the built-in U-Net runs 0.35-0.4 Mpx/s on 2 CPU
# cores (benchmarks/README.md), so 4 Mpx keep a batch near 10 s; a GPU is far faster.
MAX_BATCH_PIXELS_CPU = 2**22
MAX_BATCH_PIXELS_GPU = 2**24
# Share of the work spent on context above which a larger tile size is suggested, and
# the share the suggested size stays under within one tile.
CONTEXT_WARNING = 1 / 2
CONTEXT_SUGGESTED = 1 / 3


def uses_half_precision(device: torch.device, mixed_precision: bool | None) -> bool:
    """Tell whether the network computes in 16 bits (as `device.autocast` decides)."""
    return device.type == "cuda" if mixed_precision is None else mixed_precision


def bytes_per_pixel(model: UNet, half: bool = False) -> int:
    """Return the estimated peak activation bytes of one input pixel in a forward pass.

    ``10 * base_channels + in_channels + n_classes`` values of 4 bytes, or 2
    bytes under mixed precision.
    """
    config = model.config
    values = ACTIVATIONS_PER_BASE_CHANNEL * config.base_channels
    return (values + config.in_channels + config.n_classes) * (2 if half else 4)


def memory_budget(device: torch.device) -> int:
    """Return the bytes one batch's activations may take by default: half of what is free."""
    free = available_memory(device)
    return FALLBACK_BUDGET if free is None else free // 2


def check_batch_fits(
    model: UNet,
    tile_shape: tuple[int, int],
    batch_size: int,
    device: torch.device,
    mixed_precision: bool | None = None,
    available: int | None = None,
) -> None:
    """Refuse a batch of tiles whose activations clearly exceed the memory available.

    Parameters
    ----------
    model : UNet
        The network.
    tile_shape : (int, int)
        Input tile height and width in pixels.
    batch_size : int
        Tiles run at once.
    device : torch.device
        Where the network runs.
    mixed_precision : bool or None
        As for `iter_predict_tiled`.
    available : int, optional
        Bytes available; by default what `device.available_memory` says now.
        Nothing is refused when that is unknown.

    Raises
    ------
    NotEnoughMemory
        Giving the estimate, the memory available, and the tile size and
        batch size that fit.
    """
    if available is None:
        available = available_memory(device)
    if available is None:
        return
    per_pixel = bytes_per_pixel(model, uses_half_precision(device, mixed_precision))
    height, width = tile_shape
    needed = per_pixel * height * width * batch_size
    if needed <= available:
        return
    memory = "memory" if device.type == "cpu" else f"{device.type.upper()} memory"
    message = (
        f"{_tiles(height, width, batch_size)} about {_size(needed)} of {memory}, "
        f"but only {_size(available)} is free"
    )
    fitting_batch = available // (per_pixel * height * width)
    fitting_edge = model.valid_input_size(math.isqrt(available // (per_pixel * batch_size)), False)
    single_edge = model.valid_input_size(math.isqrt(available // per_pixel), larger=False)
    choices = []
    if fitting_edge >= model.min_input_size:
        choices.append(f"a tile size of at most {fitting_edge} px")
    if fitting_batch >= 1:
        choices.append(f"at most {fitting_batch} tiles per batch")
    elif batch_size > 1 and single_edge >= model.min_input_size:
        choices.append(f"a tile size of at most {single_edge} px with one tile per batch")
    if choices:
        advice = "choose " + " or ".join(choices)
    else:
        advice = "close other programs or use a machine with more memory"
    raise NotEnoughMemory(f"{message}; {advice}")


def capped_batch_size(tile_shape: tuple[int, int], batch_size: int, device: torch.device) -> int:
    """Return `batch_size`, reduced where one batch would take long without a word.

    A batch holds at most 4 Mpx of input on the CPU (about 10 s for the
    built-in U-Net on 2 cores) and 16 Mpx on a GPU, and at least one tile.
    """
    largest = MAX_BATCH_PIXELS_CPU if device.type == "cpu" else MAX_BATCH_PIXELS_GPU
    return max(1, min(batch_size, largest // (tile_shape[0] * tile_shape[1])))


def context_share(plan: TilePlan) -> float:
    """Return the share of the input pixels fed to the network that are not predicted.

    The context around each tile (its halo), mirrored border and overshoot:
    work done only so that the kept pixels are exact.
    """
    rows, columns = plan.rows, plan.columns
    fed = len(rows.starts) * rows.tile_input * len(columns.starts) * columns.tile_input
    kept = plan.shape[-2] * plan.shape[-1]
    return max(0.0, 1.0 - kept / fed)


def context_advice(model: UNet, plan: TilePlan) -> str:
    """Say, when most of the work is context around small tiles, which tile size is faster.

    Returns
    -------
    str
        Empty when the tiles are large enough, or when the image is a single
        tile along both axes (larger tiles would not help); otherwise, for
        example, "with tiles of 140 px, 87 % of the work is context; a tile
        size of 460 px or more is faster".
    """
    share = context_share(plan)
    tile = max(plan.rows.tile_input, plan.columns.tile_input)
    if share <= CONTEXT_WARNING or (len(plan.rows.starts) == len(plan.columns.starts) == 1):
        return ""
    suggested = _tile_size_with_context_under(model, tile, CONTEXT_SUGGESTED)
    return (
        f"with tiles of {tile} px, {round(100 * share)} % of the work is context; "
        f"a tile size of {suggested} px or more is faster"
    )


def _tile_size_with_context_under(model: UNet, tile: int, share: float) -> int:
    """Return the smallest accepted tile edge above `tile` with `share` or less of context."""
    valid = model.config.padding == "valid"
    size = tile
    while True:
        size = model.valid_input_size(size + 1)
        kept = model.output_size(size) if valid else size - 2 * model.halo
        if kept * kept >= (1 - share) * size * size:
            return size


def _tiles(height: int, width: int, batch_size: int) -> str:
    tiles = f"{height} px" if height == width else f"{height}×{width} px"
    if batch_size == 1:
        return f"one tile of {tiles} needs"
    return f"batches of {batch_size} tiles of {tiles} need"


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{round(size / 2**20)} MiB"
