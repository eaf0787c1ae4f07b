"""Look inside a U-Net: feature maps, and effective receptive fields from input gradients.

Feature maps are the activations of each named stage, read with forward hooks
and placed over the input pixels each activation looks at. The effective
receptive field is the gradient of one class score at one output pixel with
respect to the input (Luo et al. [1]_): a small, roughly Gaussian blob inside
the much larger theoretical receptive field.

References
----------
.. [1] W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the Effective Receptive
       Field in Deep Convolutional Neural Networks", NeurIPS 2016, arXiv:1701.04128.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import curve_fit

from ..config import UNetConfig
from ..model.unet import UNet, randomly_initialised
from ..predict.tiling import mirror_indices, read_mirrored
from ..progress import Progress

# Above this many image pixels, feature maps are computed for the centre of the
# region only: the light model keeps about 500 bytes of activations per pixel.
MAX_FEATURE_PIXELS = 512 * 512

Region = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)), half-open


# ----------------------------------------------------------------------------- geometry
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


@dataclass(frozen=True)
class _AxisCrop:
    start: int  # image index of the crop's first pixel (mirrored outside the image)
    size: int  # input pixels the network is given
    output_index: int  # index, in the network's output, of the wanted pixel


def _input_crop(model: UNet, start: int, stop: int) -> _AxisCrop:
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
    return _AxisCrop(start=input_start, size=size, output_index=first)


# ----------------------------------------------------------------------------- inputs
def _evaluation_model(model: UNet) -> UNet:
    # a model in training mode would use batch statistics; never change the caller's model
    return model.for_inference() if model.training else model


def _channels_first(model: UNet, image: Any) -> Any:
    """Return `image` as (C, Y, X), checking it fits the model."""
    channels = model.config.in_channels
    if image.ndim == 2 and channels == 1:
        return image[None]
    if image.ndim == 3 and image.shape[0] == channels:
        return image
    expected = "(Y, X) or (1, Y, X)" if channels == 1 else f"({channels}, Y, X)"
    raise ValueError(
        f"the model takes {channels} channel(s): expected an image shaped {expected}, "
        f"got {tuple(image.shape)}"
    )


def _read_input(
    image: Any,
    ys: np.ndarray,
    xs: np.ndarray,
    intensity_range: tuple[float, float] | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Read a mirrored crop of a (C, Y, X) image, normalised, as a (1, C, H, W) tensor."""
    low, high = intensity_range if intensity_range is not None else (0.0, 1.0)
    scale = 1.0 / (high - low) if high != low else 1.0
    crop = (np.asarray(read_mirrored(image, ys, xs), dtype=np.float64) - low) * scale
    if not np.isfinite(crop).all():
        raise ValueError("the image contains NaN or infinite values; fix or mask them first")
    return torch.from_numpy(crop[None]).to(dtype)


def _dtype(model: UNet) -> torch.dtype:
    return next(model.parameters()).dtype


# ----------------------------------------------------------------------------- feature maps
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
    image = _channels_first(model, image)
    height, width = image.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError("the image is empty")
    if region is None:
        region = ((0, height), (0, width))
    (top, bottom), (left, right) = region
    region = (max(0, top), min(height, bottom)), (max(0, left), min(width, right))
    (top, bottom), (left, right) = limit_region(region, max_pixels)
    crop_y, crop_x = _input_crop(model, top, bottom), _input_crop(model, left, right)
    ys = mirror_indices(crop_y.start, crop_y.size, height)
    xs = mirror_indices(crop_x.start, crop_x.size, width)
    net = _evaluation_model(model)
    inputs = _read_input(image, ys, xs, intensity_range, _dtype(net))

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


# ----------------------------------------------------------------------------- gradients
@dataclass(frozen=True)
class PixelGradient:
    """How much each input pixel moves the class score at one output pixel.

    Attributes
    ----------
    position : (int, int)
        Image (row, column) of the output pixel.
    gradient : ndarray of float, shape (C, H, W)
        Derivative of the class score (logit) at `position` with respect to the
        network's input (normalised intensities) over the input crop.
    origin : (int, int)
        Image (row, column) of ``gradient[:, 0, 0]``. The crop may reach past the
        image border, where the network sees the mirrored image.
    window : ((int, int), (int, int))
        Theoretical receptive field of the pixel, ``((first row, last row),
        (first column, last column))`` in image indices, inclusive: the
        gradient is zero outside it.
    """

    position: tuple[int, int]
    gradient: np.ndarray
    origin: tuple[int, int]
    window: tuple[tuple[int, int], tuple[int, int]]

    @property
    def magnitude(self) -> np.ndarray:
        """Return ``|gradient|`` summed over input channels, shape (H, W)."""
        return np.abs(self.gradient).sum(axis=0)


def _check_class(model: UNet, class_index: int) -> None:
    if not 0 <= class_index < model.config.n_classes:
        raise ValueError(
            f"class {class_index} does not exist; the model predicts "
            f"{model.config.n_classes} classes (0 to {model.config.n_classes - 1})"
        )


def _pixel_crops(model: UNet, shape: tuple[int, ...], position: tuple[int, int]):
    height, width = shape[-2:]
    row, column = position
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"the pixel {position} lies outside the image ({height} x {width})")
    return _input_crop(model, row, row + 1), _input_crop(model, column, column + 1)


def _gradients_at(
    model: UNet,
    net: UNet,
    requests: Sequence[tuple[Any, tuple[int, int]]],
    class_index: int,
    intensity_range: tuple[float, float] | None,
) -> list[PixelGradient]:
    """Input gradients for (image, position) pairs whose crops have one size, in one pass."""
    crops = [_pixel_crops(model, image.shape, position) for image, position in requests]
    inputs = []
    for (image, _), (crop_y, crop_x) in zip(requests, crops, strict=True):
        ys = mirror_indices(crop_y.start, crop_y.size, image.shape[-2])
        xs = mirror_indices(crop_x.start, crop_x.size, image.shape[-1])
        inputs.append(_read_input(image, ys, xs, intensity_range, _dtype(net)))
    batch = torch.cat(inputs).requires_grad_(True)  # (B, C, H, W)
    rows = torch.tensor([crop_y.output_index for crop_y, _ in crops])
    columns = torch.tensor([crop_x.output_index for _, crop_x in crops])
    with torch.enable_grad():
        scores = net(batch)[torch.arange(len(crops)), class_index, rows, columns]
        # the pixels of a batch are independent, so the gradient of their sum holds each one's
        (gradient,) = torch.autograd.grad(scores.sum(), batch)
    windows = model.input_windows(crops[0][0].size), model.input_windows(crops[0][1].size)
    results = []
    for (_, position), crop_pair, pixel_gradient in zip(requests, crops, gradient, strict=True):
        window = [
            (
                crop.start + int(axis_windows.first[crop.output_index]),
                crop.start + int(axis_windows.last[crop.output_index]),
            )
            for crop, axis_windows in zip(crop_pair, windows, strict=True)
        ]
        results.append(
            PixelGradient(
                position=(int(position[0]), int(position[1])),
                gradient=pixel_gradient.numpy(),
                origin=(crop_pair[0].start, crop_pair[1].start),
                window=(window[0], window[1]),
            )
        )
    return results


def input_gradient(
    model: UNet,
    image: Any,
    position: tuple[int, int],
    *,
    class_index: int = 1,
    intensity_range: tuple[float, float] | None = None,
) -> PixelGradient:
    """Return the gradient of one class score at one pixel with respect to the input.

    Parameters
    ----------
    model : UNet
        The network; a model in training mode is used through `UNet.for_inference`.
    image : array-like
        ``(Y, X)``, or ``(C, Y, X)`` with the channels the model takes.
    position : (int, int)
        Image (row, column) of the output pixel.
    class_index : int
        Class whose score (logit, before the softmax) is differentiated.
    intensity_range : (float, float) or None
        Intensities mapped to 0 and 1 before the network, as for prediction.

    Notes
    -----
    The network is run on the smallest input crop that yields the pixel, on
    the pooling grid of a pass over the whole mirrored image: for valid and
    same padding alike, the gradient is the one that pass would give, at a
    fraction of the cost.
    """
    _check_class(model, class_index)
    image = _channels_first(model, image)
    net = _evaluation_model(model)
    return _gradients_at(model, net, [(image, position)], class_index, intensity_range)[0]


@dataclass(frozen=True)
class GaussianFit:
    """An axis-aligned 2D Gaussian fitted to an effective receptive field.

    Attributes
    ----------
    centre : (float, float)
        Peak (row, column), relative to the input pixel under the output pixel.
    sigma : (float, float)
        Standard deviations along rows and columns, in input pixels.
    amplitude : float
        Height of the peak.
    r_squared : float
        Share of the map's variance the Gaussian explains (1: a perfect Gaussian).
    """

    centre: tuple[float, float]
    sigma: tuple[float, float]
    amplitude: float
    r_squared: float

    @property
    def effective_radius(self) -> float:
        """Return ``2 * sqrt(sigma_y * sigma_x)``, in input pixels.

        For an isotropic Gaussian, a circle of this radius holds
        ``1 - exp(-2)``, about 86 %, of the gradient mass.
        """
        return 2 * math.sqrt(self.sigma[0] * self.sigma[1])


def _gaussian(coords, amplitude, row, column, sigma_row, sigma_column):
    rows, columns = coords
    return amplitude * np.exp(
        -0.5 * (((rows - row) / sigma_row) ** 2 + ((columns - column) / sigma_column) ** 2)
    )


def fit_gaussian(heat: np.ndarray, centre: tuple[int, int] = (0, 0)) -> GaussianFit:
    """Fit an axis-aligned 2D Gaussian to a non-negative map by least squares.

    Parameters
    ----------
    heat : ndarray, shape (H, W)
        A non-negative map, e.g. an averaged gradient magnitude.
    centre : (int, int)
        Index in `heat` taken as the origin of the fitted centre.

    Returns
    -------
    GaussianFit
        Started from the map's moments (its mean and standard deviation taken
        as a distribution); if least squares fails, the moments themselves.

    Examples
    --------
    >>> rows, columns = np.mgrid[-20:21, -20:21]
    >>> heat = np.exp(-0.5 * (rows**2 / 3.0**2 + columns**2 / 5.0**2))
    >>> fit = fit_gaussian(heat, centre=(20, 20))
    >>> [round(s, 3) for s in fit.sigma]
    [3.0, 5.0]
    """
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError("expected a non-empty 2D map")
    total = heat.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the map is zero everywhere: there is no receptive field to fit")
    rows, columns = np.indices(heat.shape, dtype=np.float64)
    rows -= centre[0]
    columns -= centre[1]
    mean = [float((heat * axis).sum() / total) for axis in (rows, columns)]
    spread = [
        max(math.sqrt(float((heat * (axis - m) ** 2).sum() / total)), 0.5)
        for axis, m in zip((rows, columns), mean, strict=True)
    ]
    start = [float(heat.max()), *mean, *spread]
    coords = np.stack([rows.ravel(), columns.ravel()])
    try:
        params, _ = curve_fit(_gaussian, coords, heat.ravel(), p0=start, maxfev=2000)
        if not np.all(np.isfinite(params)):
            raise RuntimeError("the fit did not converge")
    except (RuntimeError, ValueError):
        params = np.array(start)
    amplitude, row, column, sigma_row, sigma_column = (float(p) for p in params)
    residual = heat.ravel() - _gaussian(coords, *params)
    variance = float(((heat - heat.mean()) ** 2).sum())
    r_squared = 1 - float((residual**2).sum()) / variance if variance > 0 else 1.0
    return GaussianFit(
        centre=(row, column),
        sigma=(abs(sigma_row), abs(sigma_column)),
        amplitude=amplitude,
        r_squared=r_squared,
    )


@dataclass(frozen=True)
class EffectiveReceptiveField:
    """Input gradients of one class score, averaged over many output pixels.

    Attributes
    ----------
    gradient : ndarray of float, shape (H, W)
        Mean ``|d score / d input|`` (summed over input channels), or the mean
        signed gradient, laid out relative to each output pixel.
    centre : (int, int)
        Index in `gradient` of the input pixel under the output pixel.
    theoretical : ((int, int), (int, int))
        Rows and columns, relative to the output pixel and inclusive, that any
        output pixel can depend on (the union of the theoretical receptive
        fields over the pooling grid's phases); `gradient` covers exactly these.
    positions : ndarray of int, shape (N, 3)
        (image, row, column) of every output pixel averaged over.
    fit : GaussianFit or None
        A Gaussian fitted to ``|gradient|``; None if the gradient is zero.
    """

    gradient: np.ndarray
    centre: tuple[int, int]
    theoretical: tuple[tuple[int, int], tuple[int, int]]
    positions: np.ndarray
    fit: GaussianFit | None

    def radius_holding(self, share: float = 1 - math.exp(-2)) -> float:
        """Return the radius of the smallest circle about the output pixel holding `share`.

        Counts ``|gradient|`` of whole pixels, by their distance from `centre`. It
        needs no model of the shape: U-Nets have a sharp peak (the full-resolution
        skip path) over a wide, faint tail (the deep paths) that a Gaussian fit
        of the peak leaves out. For an isotropic Gaussian the default share,
        ``1 - exp(-2)`` (about 86.5 %), gives ``2 sigma``, the fit's effective radius.
        """
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        magnitude = np.abs(self.gradient).ravel()
        rows, columns = np.indices(self.gradient.shape)
        distance = np.hypot(rows - self.centre[0], columns - self.centre[1]).ravel()
        order = np.argsort(distance, kind="stable")
        held = np.cumsum(magnitude[order])
        if held[-1] <= 0:
            raise ValueError("the gradient is zero everywhere")
        return float(distance[order][np.searchsorted(held, share * held[-1])])


def _same_size_batches(
    model: UNet, images: Sequence[Any], positions: np.ndarray, batch_size: int
) -> list[np.ndarray]:
    """Split positions into batches whose input crops have one size, in a fixed order."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    groups: dict[tuple[int, int], list[int]] = {}
    for number, (index, row, column) in enumerate(positions):
        if not 0 <= index < len(images):
            raise ValueError(f"there is no image {index}; {len(images)} were given")
        crop_y, crop_x = _pixel_crops(model, images[index].shape, (row, column))
        groups.setdefault((crop_y.size, crop_x.size), []).append(number)
    return [
        positions[members[start : start + batch_size]]
        for _, members in sorted(groups.items())
        for start in range(0, len(members), batch_size)
    ]


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
        crop = _input_crop(model, phase, phase + 1)
        windows = model.input_windows(crop.size)
        before = min(before, crop.start + int(windows.first[crop.output_index]) - phase)
        after = max(after, crop.start + int(windows.last[crop.output_index]) - phase)
    return before, after


def iter_effective_receptive_field(
    model: UNet,
    images: Sequence[Any],
    *,
    n_positions: int = 100,
    positions: Sequence[tuple[int, int, int]] | None = None,
    class_index: int = 1,
    absolute: bool = True,
    intensity_range: tuple[float, float] | None = None,
    rng: np.random.Generator | int | None = None,
    batch_size: int = 8,
) -> Generator[Progress, None, EffectiveReceptiveField]:
    """Average input gradients over many output pixels, yielding progress.

    Parameters
    ----------
    model : UNet
        The network; a model in training mode is used through `UNet.for_inference`.
    images : sequence of array-like
        Images shaped ``(Y, X)`` or ``(C, Y, X)``; positions are drawn from all.
    n_positions : int
        Number of output pixels drawn uniformly from all pixels of all images.
    positions : sequence of (int, int, int), optional
        (image, row, column) of the output pixels to use instead of drawing them.
    class_index : int
        Class whose score (logit) is differentiated.
    absolute : bool
        Average ``|gradient|``, as Luo et al. [1]_ (True), or the signed gradient.
    intensity_range : (float, float) or None
        Intensities mapped to 0 and 1, the same for every image.
    rng : numpy.random.Generator, int or None
        Draws the positions.
    batch_size : int
        Pixels whose gradients are computed in one pass.

    Yields
    ------
    Progress
        After every batch of pixels; closing the generator cancels.

    Returns
    -------
    EffectiveReceptiveField
        The averaged map, with a Gaussian fitted to it.
    """
    _check_class(model, class_index)
    if len(images) == 0:
        raise ValueError("no image to average over")
    images = [_channels_first(model, image) for image in images]
    if positions is None:
        if n_positions < 1:
            raise ValueError("average over at least one position")
        sizes = np.array([int(np.prod(image.shape[-2:])) for image in images])
        if sizes.min() < 1:
            raise ValueError("one of the images is empty")
        rng = np.random.default_rng(rng)
        flat = rng.integers(0, sizes.sum(), n_positions)
        which = np.searchsorted(np.cumsum(sizes), flat, side="right")
        within = flat - np.concatenate([[0], np.cumsum(sizes)])[which]
        widths = np.array([image.shape[-1] for image in images])[which]
        positions = np.stack([which, within // widths, within % widths], axis=1)
    positions = np.asarray(positions, dtype=int).reshape(-1, 3)
    before, after = theoretical_extent(model)
    size = after - before + 1
    total = np.zeros((size, size))
    net = _evaluation_model(model)
    done = 0
    yield Progress(0, len(positions), "averaging input gradients")
    for batch in _same_size_batches(model, images, positions, batch_size):
        requests = [(images[index], (row, column)) for index, row, column in batch]
        for pixel in _gradients_at(model, net, requests, class_index, intensity_range):
            values = pixel.magnitude if absolute else pixel.gradient.sum(axis=0)
            # crop index k lies at (origin + k - position) relative to the output pixel
            top = pixel.origin[0] - pixel.position[0] - before
            left = pixel.origin[1] - pixel.position[1] - before
            rows = slice(max(top, 0), min(top + values.shape[0], size))
            columns = slice(max(left, 0), min(left + values.shape[1], size))
            total[rows, columns] += values[
                rows.start - top : rows.stop - top, columns.start - left : columns.stop - left
            ]
        done += len(batch)
        yield Progress(done, len(positions), f"averaged {done} of {len(positions)} pixels")
    mean = total / len(positions)
    fit = fit_gaussian(np.abs(mean), (-before, -before)) if np.abs(mean).sum() > 0 else None
    return EffectiveReceptiveField(
        gradient=mean,
        centre=(-before, -before),
        theoretical=((before, after), (before, after)),
        positions=positions,
        fit=fit,
    )


# ----------------------------------------------------------------------------- training
def iter_trained_and_untrained(
    model: UNet,
    images: Sequence[Any],
    *,
    seed: int = 0,
    **settings: Any,
) -> Generator[Progress, None, tuple[EffectiveReceptiveField, EffectiveReceptiveField]]:
    """Average input gradients of a trained model and of a random one of the same build.

    Both are averaged over the same output pixels, so the difference is training.

    Parameters
    ----------
    model : UNet
        The trained network.
    images : sequence of array-like
        As for `iter_effective_receptive_field`.
    seed : int
        Seeds the positions and the untrained network's weights.
    **settings
        Passed to `iter_effective_receptive_field`.

    Returns
    -------
    (EffectiveReceptiveField, EffectiveReceptiveField)
        Trained, then untrained.
    """
    untrained = randomly_initialised(model.config, seed)
    trained_erf = yield from _as_part(
        iter_effective_receptive_field(model, images, rng=seed, **settings), 0, "trained"
    )
    untrained_erf = yield from _as_part(
        iter_effective_receptive_field(
            untrained, images, positions=trained_erf.positions, **_without(settings, "positions")
        ),
        1,
        "untrained",
    )
    return trained_erf, untrained_erf


def _without(settings: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in settings.items() if name != key}


def _as_part(work: Generator[Progress, None, Any], part: int, label: str):
    """Report a generator's progress as the first or second half of a pair of runs."""
    while True:
        try:
            record = next(work)
        except StopIteration as stop:
            return stop.value
        yield Progress(
            part * record.total + record.done, 2 * record.total, f"{label}: {record.message}"
        )
