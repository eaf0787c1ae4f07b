"""Where a U-Net's stages and input crops lie over an image, and reading those crops.

Shared by the feature maps and the receptive fields: both run the network on a
crop of the image on the pooling grid of one pass over the whole mirrored image
(as tiled prediction reads it), so every activation and gradient is the one that
pass would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import UNetConfig
from ..images import normalised, single_image_channels_first
from ..model.unet import UNet
from ..predict.tile_plan import read_mirrored


# ----------------------------------------------------------------------------- stages
def stage_level(model: UNet, stage: str) -> int:
    """Return how many poolings below full resolution a stage of `model.stages()` works."""
    if stage == "logits":
        return 0
    if stage == "bottleneck":
        return model.config.depth
    kind, _, level = stage.partition(" ")
    if kind in ("encoder", "decoder") and level.isdigit() and int(level) < model.config.depth:
        return int(level)
    raise ValueError(f"the model has no stage {stage!r}; its stages: {stage_names(model.config)}")


@dataclass(frozen=True)
class StagePlacement:
    """Where the activations of one stage lie over the network's input, along either axis.

    Activation ``j`` of the stage is drawn over input index ``offset + step * j``.

    Attributes
    ----------
    stage : str
        Name of the stage, as in `UNet.stages`.
    step : int
        Input pixels between neighbouring activations, ``2**level``.
    offset : float
        Input index under activation 0; a half-integer lies between two pixels.
    misalignment : float
        Largest distance, in input pixels, between where an activation is drawn
        and the centre of its theoretical receptive field. 0 for the encoders and
        the bottleneck; for a decoder stage the receptive field of a pixel also
        depends on its phase in the coarser pooling grids, so its centre moves in
        steps that no single scale and translate can follow exactly.
    receptive_field : int
        Largest number of input pixels one activation can depend on.
    """

    stage: str
    step: int
    offset: float
    misalignment: float
    receptive_field: int


def stage_placements(model: UNet) -> dict[str, StagePlacement]:
    """Return the placement of every stage over the input, in data-flow order.

    The receptive-field windows come from `UNet.stage_windows`, which follows
    the layers on index ranges; the offset is the one that minimises the largest
    distance between an activation's position and its window's centre.

    Notes
    -----
    What this guarantees, for every activation ``j`` of every stage: the
    distance between ``offset + step * j`` and the centre of its window (the
    mean of its first and last input pixel, a half-integer for even windows) is
    at most `misalignment`. That is exactly 0 for the encoders and the
    bottleneck. For the decoders and the logits the windows move in steps set
    by the deepest pooling grid, and `misalignment` is at most
    ``(2**depth - step) / 2`` input pixels (less than half a bottleneck pixel);
    for the light model it is 2, 3 and 1.5 pixels for decoders 2, 1 and 0 and
    the logits, against receptive fields of 84 to 100 pixels. The tests check
    both for every pixel of the light, paper and several small networks.


    With same padding, windows cut short by the zero padding at the border of
    the input are left out: they do not say where the network looks inside an
    image, and `feature_maps` gives every stage enough mirrored context to
    avoid them.
    """
    depth = model.config.depth
    size = model.valid_input_size(max(model.min_input_size, 2 * model.halo) + 8 * 2**depth)
    placements = {}
    for stage, windows in model.stage_windows(size).items():
        step = 2 ** stage_level(model, stage)
        index = np.arange(len(windows.first))
        inside = (windows.first > 0) & (windows.last < size - 1)
        centres = (windows.first + windows.last)[inside] / 2
        shift = centres - step * index[inside]
        placements[stage] = StagePlacement(
            stage=stage,
            step=step,
            offset=float(shift.max() + shift.min()) / 2,
            misalignment=float(shift.max() - shift.min()) / 2,
            receptive_field=int(windows.sizes[inside].max()),
        )
    return placements


def stage_names(config: UNetConfig) -> list[str]:
    """Return the names of the stages of a U-Net built from `config`, as `UNet.stages` does."""
    encoders = [f"encoder {level}" for level in range(config.depth)]
    decoders = [f"decoder {level}" for level in reversed(range(config.depth))]
    return [*encoders, "bottleneck", *decoders, "logits"]


# ----------------------------------------------------------------------------- crops
@dataclass(frozen=True)
class InputCrop:
    """The input the network is given, along one axis, to compute some image pixels.

    Attributes
    ----------
    start : int
        Image index of the crop's first pixel (mirrored outside the image).
    size : int
        Input pixels the network is given (a size it accepts).
    output_index : int
        Index, in the network's output, of the first wanted pixel.
    """

    start: int
    size: int
    output_index: int


def input_crop(model: UNet, start: int, stop: int) -> InputCrop:
    """Return the smallest input crop whose output holds image pixels ``start .. stop - 1``.

    The crop lies on the pooling grid of one pass over the whole image mirrored
    by the network's context, as tiled prediction reads it, so every output
    pixel (and its gradient) is exactly the one that pass would give.
    """
    grid = model.size_multiple
    valid = model.config.padding == "valid"
    # the whole pass starts `context` pixels before the image, on its pooling grid
    context = model.output_offset if valid else model.halo
    input_start = start // grid * grid - context
    first = start - input_start - model.output_offset  # output index of image pixel `start`
    if valid:  # the output is the input less the crop of the network, output_offset a side
        size = model.valid_input_size(stop - input_start + model.output_offset)
    else:  # keep the halo after the last pixel, so it never sees the zero padding
        size = model.valid_input_size(stop - input_start + model.halo)
    return InputCrop(start=input_start, size=size, output_index=first)


def pixel_crops(
    model: UNet, shape: tuple[int, ...], position: tuple[int, int]
) -> tuple[InputCrop, InputCrop]:
    """Return the row and column crops that yield the output pixel at `position`."""
    height, width = shape[-2:]
    row, column = position
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"the pixel {position} lies outside the image ({height} x {width})")
    return input_crop(model, row, row + 1), input_crop(model, column, column + 1)


def theoretical_extent(model: UNet) -> tuple[int, int]:
    """Return how far before and after an output pixel its receptive field can reach.

    Returns
    -------
    (int, int)
        ``(before, after)``: input pixels, relative to the one under the output
        pixel, inclusive, over every phase of the pooling grid (the same along
        both axes).
    """
    before, after = 0, 0
    for phase in range(model.size_multiple):
        crop = input_crop(model, phase, phase + 1)
        windows = model.input_windows(crop.size)
        before = min(before, crop.start + int(windows.first[crop.output_index]) - phase)
        after = max(after, crop.start + int(windows.last[crop.output_index]) - phase)
    return before, after


# ----------------------------------------------------------------------------- inputs
def inference_model(model: UNet) -> UNet:
    """Return `model` ready to look inside: in evaluation mode, the caller's model unchanged.

    A model in training mode would use batch statistics, so it is used through
    `UNet.for_inference` (a copy); a model in evaluation mode is used as it is.
    """
    return model.for_inference() if model.training else model


def model_image(model: UNet, image: Any) -> Any:
    """Return `image` as ``(C, Y, X)``, checking it has the channels `model` takes."""
    return single_image_channels_first(image, model.config.in_channels)


def network_input(
    net: UNet,
    image: Any,
    ys: np.ndarray,
    xs: np.ndarray,
    intensity_range: tuple[float, float] | None,
) -> torch.Tensor:
    """Read a mirrored crop of a (C, Y, X) image for `net`: a (1, C, H, W) tensor.

    Intensities are mapped by `images.normalised`, as prediction maps them, then
    cast to the network's own precision.
    """
    crop = normalised(read_mirrored(image, ys, xs), intensity_range)
    return torch.from_numpy(crop[None]).to(next(net.parameters()).dtype)
