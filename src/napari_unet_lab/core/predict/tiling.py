"""Overlap-tile prediction: one engine, any runner (the network here, or a cluster).

The engine reads the tiles of a `TilePlan` batch by batch (`read_tiles`), hands
each batch to a runner, writes what comes back (`write_tiles`) and finally turns
the assembled scores into probabilities. Tiles start on the pooling grid of one
virtual pass over the whole mirrored image (see `tile_plan`), so for a
valid-padding network tiled prediction is bit-identical to that whole pass, not
an approximation blended from overlaps. Runners only compute: a runner is
``batch of inputs (B, C, h, w) float32 -> scores (B, K, h', w')``, or a future of
them (anything with ``.result()``), so the larger-than-memory and cluster paths
reuse this loop instead of copying it.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Generator
from itertools import chain, islice
from typing import Any, Literal

import numpy as np
import torch

from ..device import NotEnoughMemory, autocast, is_out_of_memory, select_device
from ..images import channels_first
from ..model.unet import UNet
from ..progress import Progress, run_to_end
from .tile_cost import capped_batch_size, check_batch_fits, context_advice
from .tile_plan import (
    Border,
    TilePlan,
    TileSize,
    auto_tile_size,
    plan_tiles,
    read_tiles,
    write_tiles,
)

Output = Literal["logits", "probabilities"]

# A batch of normalised input tiles (B, C, h, w) float32 -> class scores (B, K, h', w'),
# as an array or a future of one (anything with `.result()`).
Runner = Callable[[np.ndarray], Any]

# The latest inference copy of each model (held weakly) with what it was made from: folding
# and copying take about 60 ms, 7 % of predicting a 520 x 696 image on one core.
_inference_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_network(model: UNet, device: torch.device) -> UNet:
    """Return `model.for_inference()` on `device`, made once while the weights stay the same.

    The copy is made again as soon as any weight or batch-norm statistic of
    `model` changes (a training step, `load_state_dict`), so prediction always
    uses the weights the model holds now. Treat the copy as read-only.
    """
    # a tensor's version counter grows with every in-place change (optimiser steps included)
    weights = tuple(
        (id(t), t.data_ptr(), t._version) for t in chain(model.parameters(), model.buffers())
    )
    made = _inference_copies.get(model)
    if made is not None and made[0] == (device, weights):
        return made[1]
    network = model.for_inference().to(device)
    _inference_copies[model] = ((device, weights), network)
    return network


@torch.inference_mode()
def run_network(
    model: UNet, inputs: np.ndarray, device: torch.device, mixed_precision: bool | None
) -> np.ndarray:
    """Run the network on a batch of input tiles once, returning float32 class scores.

    Parameters
    ----------
    model : UNet
        The network, already on `device` and in evaluation mode.
    inputs : ndarray of float32, shape (B, C, h, w)
        Normalised input tiles.
    device : torch.device
        Where `model` lives.
    mixed_precision : bool or None
        As for `iter_predict_tiled`.

    Returns
    -------
    ndarray of float32, shape (B, K, h', w')
    """
    batch = torch.from_numpy(inputs).to(device)
    with autocast(device, mixed_precision):
        scores = model(batch)
    # a channels-last network returns channels-last scores: hand back plain (B, K, h', w')
    return scores.float().cpu().contiguous().numpy()


def network_runner(
    model: UNet, device: str | torch.device | None = "auto", mixed_precision: bool | None = None
) -> Runner:
    """Return the runner `iter_predict_tiled` uses by default: the network on one device.

    The network is copied for inference (batch norm folded, see
    `UNet.for_inference`; channels last, 1.3-1.4x faster on the CPU), once
    while its weights stay the same (`inference_network`); the caller's model
    is not changed. A batch the
    device runs out of memory for (the CPU included) is halved and retried,
    down to one tile.

    Parameters
    ----------
    model : UNet
        The network.
    device : str, torch.device or None
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    mixed_precision : bool or None
        None: on for CUDA, off elsewhere (CPU results are exact float32).

    Returns
    -------
    callable
        ``inputs (B, C, h, w) float32 -> scores (B, K, h', w') float32``.
    """
    device = select_device(device)
    network = inference_network(model, device)

    def run(inputs: np.ndarray) -> np.ndarray:
        try:
            return run_network(network, inputs, device, mixed_precision)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            _free_cached_memory(device)
            if len(inputs) == 1:
                instead = "" if device.type == "cpu" else " or the CPU"
                raise NotEnoughMemory(
                    f"the {device.type.upper()} ran out of memory for a single tile of "
                    f"{inputs.shape[-2]}x{inputs.shape[-1]} pixels; choose a smaller tile "
                    f"size{instead}"
                ) from error
        half = len(inputs) // 2  # retry in smaller batches
        return np.concatenate([run(inputs[:half]), run(inputs[half:])])

    return run


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
    runner: Runner | None = None,
    in_flight: int = 1,
) -> Generator[Progress, None, Any]:
    """Predict an image tile by tile, yielding progress between batches of tiles.

    Parameters
    ----------
    model : UNet
        The network (valid or same padding); its geometry places the tiles.
    image : array-like
        ``(Y, X)`` or a stack ``(..., Y, X)`` predicted slice by slice, with a
        channel axis where the model takes several channels. Any array-like
        that supports slicing works (NumPy, dask, zarr, memory maps); only the
        tiles being predicted are read.
    tile_size : int, "auto" or None
        Largest input tile edge in pixels, rounded down to a size the network
        accepts. ``"auto"``: `auto_tile_size` for the device and batch (512 px
        on the CPU, 1024 px on a GPU, less where memory is short; the CPU rule
        with a `runner`). None predicts the whole mirrored image in one pass.
    batch_size : int or None
        Tiles sent to the runner at once. None: 4 on a GPU, 1 on the CPU (where
        larger batches only add memory traffic: measured 1.2-1.35x slower at 4)
        and with a `runner`. Capped so that one batch holds at most 4 Mpx of
        input on the CPU, 16 Mpx on a GPU (`tile_cost.capped_batch_size`). On
        running out of memory the batch is halved and retried.
    device : str, torch.device or None
        ``"auto"`` picks CUDA, then MPS, then the CPU; unused with a `runner`.
    mixed_precision : bool or None
        None: on for CUDA, off elsewhere (CPU results are exact float32).
    channel_axis : int or None
        Axis of `image` holding channels (``-1`` for RGB); None for one channel.
    intensity_range : (float, float) or None
        Values mapped to 0 and 1 before prediction (`images.normalised`), the
        same for every tile.
    output : {"probabilities", "logits"}
        Softmax class probabilities, or the raw class scores.
    out : array-like, optional
        Where to write the result, shaped ``(..., n_classes, Y, X)`` (for
        example a zarr array); a new float32 NumPy array by default.
    border : {"mirror", "zeros"}
        Context beyond the image: mirrored (the paper, any network), or the
        zero padding of a same-padding network, which needs fewer tiles.
    runner : callable, optional
        Computes the scores of a batch of tiles: ``inputs (B, C, h, w) float32
        -> scores (B, K, h', w')``, or a future of them. By default
        `network_runner` (the model on `device`).
    in_flight : int
        Batches handed to the runner before the oldest result is awaited: more
        than 1 lets a runner that returns futures work on several at once.

    Yields
    ------
    Progress
        Before the first batch (saying how many tiles and batches, and when
        the tiles are so small that most of the work is context, which tile
        size is faster), then after each batch of tiles; closing the generator
        cancels between batches (and cancels the futures still in flight).

    Returns
    -------
    array-like
        `out`, holding the prediction.

    Raises
    ------
    NotEnoughMemory
        Before any tile is predicted, when a batch of tiles clearly needs more
        memory than the device has free (`tile_cost.check_batch_fits`); or when
        a single tile does not fit after all.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    config = model.config
    image = channels_first(image, channel_axis, config.in_channels)
    height, width = image.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError("the image is empty")
    stack_shape = tuple(image.shape[:-3])
    expected = (*stack_shape, config.n_classes, height, width)
    if out is None:
        out = np.zeros(expected, dtype=np.float32)
    elif tuple(out.shape) != expected:
        raise ValueError(f"out has shape {out.shape}, expected {expected}")
    if runner is None:
        device = select_device(device)
        if batch_size is None:
            batch_size = 1 if device.type == "cpu" else 4
    else:  # the runner's device is unknown here: "auto" tiles follow the CPU rule
        device, batch_size = torch.device("cpu"), batch_size or 1
    if tile_size == "auto":
        tile_size = auto_tile_size(model, device, batch_size, mixed_precision)
    plan = plan_tiles(model, (*stack_shape, height, width), tile_size, border)
    tile_shape = (plan.rows.tile_input, plan.columns.tile_input)
    asked, batch_size = batch_size, capped_batch_size(tile_shape, batch_size, device)
    if runner is None:
        check_batch_fits(model, tile_shape, min(batch_size, len(plan)), device, mixed_precision)
        runner = network_runner(model, device, mixed_precision)

    done, total = 0, len(plan)
    batches = plan.batches(batch_size)
    pending: deque[tuple[list, Any]] = deque()  # (tiles, their scores or a future of them)
    advice = context_advice(model, plan)
    yield Progress(0, total, _plan_summary(plan, batch_size, asked, advice))
    advice = f"; {advice}" if advice else ""  # stays in view: the first record is soon replaced
    try:
        while True:
            for batch in islice(batches, in_flight - len(pending)):
                pending.append((batch, runner(read_tiles(image, batch, intensity_range))))
            if not pending:
                break
            batch, scores = pending.popleft()
            write_tiles(out, batch, _awaited(scores))
            done += len(batch)
            yield Progress(done, total, f"predicted {done} of {total} tiles{advice}")
    finally:
        for _, scores in pending:  # cancelled or failed: stop what still runs
            if hasattr(scores, "cancel"):
                scores.cancel()
    if output == "probabilities":
        scores_to_probabilities(out)
    return out


def _plan_summary(plan: TilePlan, batch_size: int, asked: int, advice: str) -> str:
    """Say what prediction is about to do, before the first batch (which may take a while)."""
    rows, columns = plan.rows.tile_input, plan.columns.tile_input
    tiles = f"{rows} px" if rows == columns else f"{rows}×{columns} px"
    total = len(plan)
    if total == 1:
        summary = f"predicting 1 tile of {tiles}"
    else:
        n_batches = -(-total // batch_size)
        summary = f"predicting {total} tiles of {tiles} in {n_batches} batch"
        summary += "es" if n_batches > 1 else ""
        if batch_size < min(asked, total):
            summary += f" of {batch_size} (not {asked}: smaller batches report progress sooner)"
    return f"{summary}; {advice}" if advice else summary


def predict_tiled(model: UNet, image: Any, **settings: Any) -> Any:
    """Predict an image tile by tile; see `iter_predict_tiled` for the settings."""
    return run_to_end(iter_predict_tiled(model, image, **settings))


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


def _awaited(scores: Any) -> np.ndarray:
    """Return the scores a runner returned, waiting for them if it returned a future."""
    if not isinstance(scores, np.ndarray) and callable(getattr(scores, "result", None)):
        scores = scores.result()
    return np.asarray(scores)


def _free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
