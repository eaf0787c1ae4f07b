"""Effective receptive fields: how much each input pixel moves one output pixel.

The effective receptive field is the gradient of one class score at one output
pixel with respect to the input (Luo et al. [1]_): a small, roughly Gaussian
blob inside the much larger theoretical receptive field. `input_gradient` gives
it for one pixel, `iter_effective_receptive_field` averages it over many, and
`fit_gaussian` measures its size.

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

from ..model.unet import UNet, randomly_initialised
from ..predict.tile_plan import mirror_indices
from ..progress import Progress
from .geometry import (
    inference_model,
    model_image,
    network_input,
    pixel_crops,
    theoretical_extent,
)


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


def _gradients_at(
    model: UNet,
    net: UNet,
    requests: Sequence[tuple[Any, tuple[int, int]]],
    class_index: int,
    intensity_range: tuple[float, float] | None,
) -> list[PixelGradient]:
    """Input gradients for (image, position) pairs whose crops have one size, in one pass."""
    crops = [pixel_crops(model, image.shape, position) for image, position in requests]
    inputs = []
    for (image, _), (crop_y, crop_x) in zip(requests, crops, strict=True):
        ys = mirror_indices(crop_y.start, crop_y.size, image.shape[-2])
        xs = mirror_indices(crop_x.start, crop_x.size, image.shape[-1])
        inputs.append(network_input(net, image, ys, xs, intensity_range))
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
    image = model_image(model, image)
    net = inference_model(model)
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
        crop_y, crop_x = pixel_crops(model, images[index].shape, (row, column))
        groups.setdefault((crop_y.size, crop_x.size), []).append(number)
    return [
        positions[members[start : start + batch_size]]
        for _, members in sorted(groups.items())
        for start in range(0, len(members), batch_size)
    ]


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
    images = [model_image(model, image) for image in images]
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
    net = inference_model(model)
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


# ----------------------------------------------------------------------------- trained vs untrained
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
