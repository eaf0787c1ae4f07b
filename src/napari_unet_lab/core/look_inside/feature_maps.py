"""Look inside a U-Net: the feature maps of every stage over a region of an image.

Feature maps are the activations of each named stage, read with forward hooks
and placed over the input pixels each activation looks at (`stage_placements`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..model.unet import UNet
from ..predict.tile_plan import mirror_indices
from .geometry import inference_model, input_crop, model_image, network_input, stage_placements

# Above this many image pixels, feature maps are computed for the centre of the
# region only: the light model keeps about 500 bytes of activations per pixel.
MAX_FEATURE_PIXELS = 512 * 512

Region = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)), half-open


@dataclass(frozen=True)
class FeatureMap:
    """The activations of one stage over a region of an image.

    Attributes
    ----------
    stage : str
        Name of the stage, as in `UNet.stages`.
    activations : ndarray of float32, shape (C, Y, X)
        One map per channel, the most variable over the region first.
    channels : ndarray of int, shape (C,)
        The stage's own number of each channel in `activations`.
    strength : ndarray of float, shape (C,)
        How strongly each channel responds: its standard deviation over the
        region. A channel that lights up on some structures and not on others
        varies a lot; a dead or constant channel has 0.
    step : int
        Image pixels between neighbouring activations (``2**level``).
    origin : (float, float)
        Image (row, column) index under ``activations[:, 0, 0]``. Activation
        ``(i, j)`` lies over image index ``origin + step * (i, j)``, the centre of
        its receptive field to within `misalignment`.
    misalignment : float
        See `StagePlacement.misalignment`.
    receptive_field : int
        Largest number of image pixels, along each axis, one activation sees.
    """

    stage: str
    activations: np.ndarray
    channels: np.ndarray
    strength: np.ndarray
    step: int
    origin: tuple[float, float]
    misalignment: float
    receptive_field: int


def limit_region(region: Region, max_pixels: int) -> Region:
    """Shrink a region about its centre until it holds at most `max_pixels` pixels."""
    (top, bottom), (left, right) = region
    height, width = bottom - top, right - left
    if height < 1 or width < 1:
        raise ValueError("the region to look at is empty")
    if height * width <= max_pixels:
        return region
    shrink = math.sqrt(max_pixels / (height * width))
    new_height = max(1, min(height, int(height * shrink)))
    new_width = max(1, min(width, max_pixels // new_height))
    top += (height - new_height) // 2
    left += (width - new_width) // 2
    return (top, top + new_height), (left, left + new_width)


@torch.no_grad()
def feature_maps(
    model: UNet,
    image: Any,
    *,
    region: Region | None = None,
    intensity_range: tuple[float, float] | None = None,
    max_pixels: int = MAX_FEATURE_PIXELS,
) -> list[FeatureMap]:
    """Return the activations of every stage of `model` over a region of `image`.

    Parameters
    ----------
    model : UNet
        The network; a model in training mode is used through
        `UNet.for_inference` (the model itself is not changed).
    image : array-like
        ``(Y, X)``, or ``(C, Y, X)`` with the channels the model takes. Only the
        region and its context are read (dask, zarr and memory maps welcome).
    region : ((int, int), (int, int)) or None
        Rows and columns ``((top, bottom), (left, right))``, half-open, in image
        pixels; the whole image when None. Clipped to the image, then shrunk
        about its centre to `max_pixels`.
    intensity_range : (float, float) or None
        Intensities mapped to 0 and 1 before the network, as for prediction.
    max_pixels : int
        Most image pixels to compute feature maps for.

    Returns
    -------
    list of FeatureMap
        One per stage, in the order data flows (encoders, bottleneck, decoders,
        logits), each cut to the activations lying over the region.

    Notes
    -----
    The network reads the region with its context mirrored at the image border,
    on the pooling grid of the whole image, so every activation is the one a
    pass over the whole mirrored image would compute and valid-padding stages
    cover the whole region.
    """
    image = model_image(model, image)
    height, width = image.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError("the image is empty")
    if region is None:
        region = ((0, height), (0, width))
    (top, bottom), (left, right) = region
    region = (max(0, top), min(height, bottom)), (max(0, left), min(width, right))
    (top, bottom), (left, right) = limit_region(region, max_pixels)
    crop_y, crop_x = input_crop(model, top, bottom), input_crop(model, left, right)
    ys = mirror_indices(crop_y.start, crop_y.size, height)
    xs = mirror_indices(crop_x.start, crop_x.size, width)
    net = inference_model(model)
    inputs = network_input(net, image, ys, xs, intensity_range)

    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(
            lambda _module, _args, output, name=name: captured.__setitem__(name, output.clone())
        )
        for name, module in net.stages()
    ]
    try:
        net(inputs)
    finally:
        for hook in hooks:
            hook.remove()

    maps = []
    for stage, placement in stage_placements(model).items():
        activations = captured[stage][0].float().numpy()  # (C, Y, X)
        origin = []
        kept = []
        for axis, (crop, (first, stop)) in enumerate(
            ((crop_y, (top, bottom)), (crop_x, (left, right)))
        ):
            at_zero = crop.start + placement.offset  # image index under activation 0
            # keep the activations drawn inside the region's pixels [first - 0.5, stop - 0.5)
            low = math.ceil((first - 0.5 - at_zero) / placement.step)
            high = math.ceil((stop - 0.5 - at_zero) / placement.step)
            low, high = max(low, 0), min(max(high, low + 1), activations.shape[axis + 1])
            kept.append(slice(low, high))
            origin.append(at_zero + placement.step * low)
        activations = activations[:, kept[0], kept[1]]
        strength = activations.reshape(len(activations), -1).std(axis=1)
        order = np.argsort(-strength, kind="stable")
        maps.append(
            FeatureMap(
                stage=stage,
                activations=np.ascontiguousarray(activations[order]),
                channels=order,
                strength=strength[order],
                step=placement.step,
                origin=(origin[0], origin[1]),
                misalignment=placement.misalignment,
                receptive_field=placement.receptive_field,
            )
        )
    return maps
