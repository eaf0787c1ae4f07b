"""Data augmentation for training patches: elastic deformation, zoom, flips, turns, intensity.

The changes of the image alone (intensity, contrast, resolution) live in `appearance`.

Everything runs in torch on the device of the tensors it is given, on whole
batches, so that augmentation costs little next to a training step.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
       Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
       Section 3.1: "smooth deformations using random displacement vectors on a
       coarse 3 by 3 grid [...] sampled from a Gaussian distribution with 10
       pixels standard deviation. Per-pixel displacements are then computed
       using bicubic interpolation."
.. [2] P. Y. Simard, D. Steinkraus, J. C. Platt, "Best practices for
       convolutional neural networks applied to visual document analysis",
       ICDAR 2003: elastic distortions as training data augmentation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import AugmentationConfig
from ..model.unet import center_crop
from .appearance import invert_contrast, jitter_intensity, lower_resolution

Resampling = Literal["nearest", "bilinear", "bicubic"]

# float32 holds every integer up to 2**24 exactly; label maps travel through it.
_LARGEST_EXACT_LABEL = 2**24


def elastic_displacement(
    batch: int,
    shape: tuple[int, int],
    grid: int | tuple[int, int] = (3, 3),
    sigma: float = 10.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return smooth random displacement fields, one per sample, in pixels.

    Displacements are drawn independently from N(0, `sigma`²) at the points of
    a coarse grid whose outer points lie on the corner pixels of the patch, and
    interpolated bicubically to every pixel, as in Section 3.1 of [1]_.

    Parameters
    ----------
    batch : int
        Number of fields.
    shape : (int, int)
        Patch size (rows, columns).
    grid : int or (int, int)
        Coarse grid points per axis, corners included; the paper uses 3 x 3.
    sigma : float
        Standard deviation of the coarse-grid displacements, in pixels.
    generator : torch.Generator, optional
        Source of the random numbers; the fields are drawn on its device and
        then moved to `device`, so one seed gives one field on every device.
        Without it, torch's global generator is used.
    device : torch.device or str, optional
        Where the result lives; defaults to the generator's device.
    dtype : torch.dtype
        Floating point type of the result.

    Returns
    -------
    displacement : (batch, 2, rows, columns) tensor
        Channel 0 is the displacement along rows, channel 1 along columns. The
        value at a grid point is exactly the drawn displacement there (bicubic
        interpolation with ``align_corners=True`` passes through its nodes);
        between grid points it is smooth and may overshoot slightly.

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
           Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.

    Examples
    --------
    >>> field = elastic_displacement(2, (64, 48), generator=torch.Generator().manual_seed(0))
    >>> tuple(field.shape)
    (2, 2, 64, 48)
    """
    points = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if min(points) < 2:
        raise ValueError(f"the coarse grid needs at least 2 points per axis, got {points}")
    if sigma < 0:
        raise ValueError(f"sigma must not be negative, got {sigma}")
    draw_on = generator.device if generator is not None else torch.device(device or "cpu")
    coarse = torch.randn(
        (batch, 2, *points), generator=generator, device=draw_on, dtype=torch.float32
    )  # (B, 2, grid rows, grid columns)
    coarse = (coarse * sigma).to(device=device or draw_on, dtype=dtype)
    rows = _bicubic_weights(points[0], shape[0], coarse)  # (H, grid rows)
    columns = _bicubic_weights(points[1], shape[1], coarse)  # (W, grid columns)
    # bicubic upsampling is separable: two small matrix products instead of F.interpolate
    return torch.matmul(torch.matmul(rows, coarse), columns.T)  # (B, 2, H, W)


def zoom_displacement(factors: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Return displacement fields that scale each sample about its centre.

    Pixel ``p`` takes its value from ``centre + (p - centre) / factor``: above 1
    zooms in (objects grow), below 1 out. Add an elastic field to resample once.

    Parameters
    ----------
    factors : (B,) floating point tensor
        Scale factor per sample; the result has its device and dtype.
    shape : (int, int)
        Patch size (rows, columns).

    Returns
    -------
    displacement : (B, 2, rows, columns) tensor
        In pixels, rows then columns, as `elastic_displacement`.
    """
    shrink = (1.0 / factors - 1.0).view(-1, 1, 1)  # (B, 1, 1)
    rows, columns = (
        torch.arange(size, device=factors.device, dtype=factors.dtype) - (size - 1) / 2
        for size in shape
    )
    return torch.stack(torch.broadcast_tensors(shrink * rows[:, None], shrink * columns), 1)


def _bicubic_weights(points: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Return the (size, points) matrix of bicubic upsampling with aligned corners.

    Row i holds the weights of the coarse points for pixel i, taken from
    `F.interpolate` itself so that the matrix form gives the same field.
    """
    impulses = torch.eye(points, device=like.device, dtype=like.dtype).view(points, 1, 1, points)
    rows = F.interpolate(impulses, size=(1, size), mode="bicubic", align_corners=True)
    return rows.view(points, size).T


def _normalized_positions(size: int, like: torch.Tensor) -> torch.Tensor:
    """Return grid_sample coordinates (align_corners=True) of pixels 0 .. size - 1."""
    if size == 1:
        return torch.zeros(1, device=like.device, dtype=like.dtype)
    return torch.arange(size, device=like.device, dtype=like.dtype) * (2.0 / (size - 1)) - 1.0


def _sampling_grid(displacement: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn pixel displacements (B, 2, H, W) into a grid_sample grid (B, H, W, 2)."""
    displacement = displacement.to(dtype)
    batch, _, height, width = displacement.shape
    rows = _normalized_positions(height, displacement).view(1, height, 1)
    columns = _normalized_positions(width, displacement).view(1, 1, width)
    grid = torch.empty(
        (batch, height, width, 2), device=displacement.device, dtype=displacement.dtype
    )
    # grid_sample wants (x, y) = (column, row) in the last axis; written in place, one pass each
    torch.add(columns, displacement[:, 1], alpha=2.0 / max(width - 1, 1), out=grid[..., 0])
    torch.add(rows, displacement[:, 0], alpha=2.0 / max(height - 1, 1), out=grid[..., 1])
    return grid


def deform(
    tensors: Sequence[torch.Tensor],
    displacement: torch.Tensor,
    modes: Sequence[Resampling],
) -> list[torch.Tensor]:
    """Resample several tensors along one displacement field.

    Pixel ``(y, x)`` of each result is taken from position
    ``(y + displacement[:, 0, y, x], x + displacement[:, 1, y, x])`` of its
    input (backward mapping), so image, targets and weights stay aligned.

    Parameters
    ----------
    tensors : sequence of (B, C, H, W) or (B, H, W) tensors
        Everything to deform, on the device of `displacement`. Floating point
        tensors may use any mode; integer tensors (label maps) must use
        ``"nearest"`` and may hold values up to 2**24 in magnitude.
    displacement : (B, 2, H, W) tensor
        Displacements in pixels, rows then columns, as from `elastic_displacement`.
    modes : sequence of {"nearest", "bilinear", "bicubic"}
        Resampling per tensor. Use ``"nearest"`` for label maps: it copies
        existing values, so class ids and an "unannotated" value stay exact and
        no new labels appear. Bilinear keeps values within the input's range
        (good for loss weights); bicubic is sharper but may overshoot it.

    Returns
    -------
    list of tensors
        The deformed tensors, each with the shape, dtype and device of its input.

    Notes
    -----
    Positions outside the patch are mirrored about the border pixel centres
    (like ``numpy.pad(mode="reflect")``): microscopy continues beyond a patch,
    and mirroring invents no empty corners. A field that is zero everywhere
    returns the inputs' values unchanged without resampling, because float32
    rounding in ``grid_sample`` would otherwise move bilinear and bicubic
    values by about 1e-5 of their range. Tensors sharing a mode are resampled
    in one call.

    Examples
    --------
    >>> image = torch.arange(16.0).view(1, 1, 4, 4)
    >>> shift = torch.zeros(1, 2, 4, 4)
    >>> shift[:, 1] = 1.0  # take every pixel from its right neighbour
    >>> deform([image], shift, ["nearest"])[0][0, 0, 0].tolist()
    [1.0, 2.0, 3.0, 2.0]
    """
    if len(tensors) != len(modes):
        raise ValueError(f"got {len(tensors)} tensors but {len(modes)} modes")
    if displacement.ndim != 4 or displacement.shape[1] != 2:
        raise ValueError(f"displacement must be (B, 2, H, W), got {tuple(displacement.shape)}")
    batch, _, height, width = displacement.shape
    for tensor, mode in zip(tensors, modes, strict=True):
        if tensor.shape[0] != batch or tuple(tensor.shape[-2:]) != (height, width):
            raise ValueError(
                f"tensor of shape {tuple(tensor.shape)} does not match the displacement "
                f"field {tuple(displacement.shape)}"
            )
        if mode not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"unknown resampling mode {mode!r}")
        if not tensor.is_floating_point() and mode != "nearest":
            raise ValueError(f"integer tensors (labels) need mode 'nearest', got {mode!r}")
    smallest, largest = displacement.aminmax()  # one vectorised pass; any() is slower
    if float(smallest) == 0.0 and float(largest) == 0.0:
        return [tensor.clone() for tensor in tensors]

    # as (B, C, H, W) floats; group tensors of one mode and dtype into one grid_sample call
    prepared = []
    for tensor in tensors:
        planes = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor
        if not planes.is_floating_point():
            low, high = planes.aminmax() if planes.numel() else (0, 0)
            if max(-int(low), int(high)) >= _LARGEST_EXACT_LABEL:
                raise ValueError("label values must be below 2**24 to be resampled exactly")
            planes = planes.to(torch.float32)
        prepared.append(planes)
    groups: dict[tuple[str, torch.dtype], list[int]] = {}
    for index, (planes, mode) in enumerate(zip(prepared, modes, strict=True)):
        groups.setdefault((mode, planes.dtype), []).append(index)
    results: list[torch.Tensor | None] = [None] * len(tensors)
    grids: dict[torch.dtype, torch.Tensor] = {}
    for (mode, dtype), members in groups.items():
        if dtype not in grids:
            grids[dtype] = _sampling_grid(displacement, dtype)
        stacked = torch.cat([prepared[i] for i in members], 1) if len(members) > 1 else None
        sampled = F.grid_sample(
            prepared[members[0]] if stacked is None else stacked,
            grids[dtype],
            mode=mode,
            padding_mode="reflection",
            align_corners=True,
        )
        parts = sampled.split([prepared[i].shape[1] for i in members], 1)
        for i, part in zip(members, parts, strict=True):
            original = tensors[i]
            part = part.squeeze(1) if original.ndim == 3 else part
            results[i] = part.to(original.dtype).contiguous()
    return results  # type: ignore[return-value]


def flip_and_rotate(
    tensors: Sequence[torch.Tensor], turns: torch.Tensor, flips: torch.Tensor
) -> list[torch.Tensor]:
    """Turn each sample by multiples of 90 degrees, then mirror it left-right where asked.

    Parameters
    ----------
    tensors : sequence of (B, ..., H, W) tensors
        Image, targets, weights: every tensor of a sample gets the same change.
    turns : (B,) integer tensor
        Counter-clockwise quarter turns per sample (as `torch.rot90`). Odd turns
        need square patches.
    flips : (B,) bool tensor
        Whether to mirror each sample along its columns, after turning.

    Returns
    -------
    list of tensors
        New tensors; values are only moved (gathered), never changed.
    """
    if not tensors:
        return []
    height, width = tensors[0].shape[-2:]
    if height != width and bool((turns % 2).any()):
        raise ValueError(f"quarter turns need square patches, got {height} x {width}")
    device = tensors[0].device
    change = (turns.to(device) % 4) * 2 + flips.to(device).long()  # (B,) row of the table
    where_from = _turned_indices(height, width, device)[change]  # (B, H * W)
    results = []
    for tensor in tensors:
        batch = tensor.shape[0]
        flat = tensor.reshape(batch, -1, height * width)  # (B, C, H * W)
        # one gather per tensor rather than a copy per sample: fewer, larger operations
        index = where_from.view(batch, 1, -1).expand(-1, flat.shape[1], -1)
        results.append(flat.gather(2, index).view(tensor.shape))
    return results


@functools.lru_cache(maxsize=4)
def _turned_indices(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Return (8, H * W) source pixels for each of 4 turns x (no flip, flip), row 2 * turns + flip.

    Odd turns of a non-square patch are left as the identity; callers refuse them.
    """
    pixels = torch.arange(height * width, device=device).view(height, width)
    table = []
    for turn in range(4):
        turned = torch.rot90(pixels, turn) if height == width or turn % 2 == 0 else pixels
        table += [turned.flatten(), turned.flip(-1).flatten()]
    return torch.stack(table)


def augment_batch(
    image: torch.Tensor,
    target: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    settings: AugmentationConfig | None = None,
    generator: torch.Generator | None = None,
    output_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Augment a batch of training patches on their device, the same way for all their parts.

    In order: a random quarter turn and mirror flip, an elastic deformation as
    in [1]_ and a zoom about the patch centre (one resampling), then an
    intensity change of the image alone and, for some samples, inverted contrast
    and a coarser resolution.

    Parameters
    ----------
    image : (B, C, H, W) floating point tensor
        Input patches of the full network input size.
    target : (B, H, W) integer tensor, optional
        Class per pixel (any "unannotated" value included), **of the same size
        as `image`**. Resampled with nearest neighbour, so it keeps exactly the
        values it had.
    weights : (B, H, W) floating point tensor, optional
        Loss weight per pixel, same size as `image`; resampled bilinearly,
        which keeps it within its input range (never negative).
    settings : AugmentationConfig, optional
        What to do; defaults to ``AugmentationConfig()``. Zoom and inversion draw
        random numbers only when on: at 0, a seed gives the batch it gave before.
    generator : torch.Generator, optional
        Source of all random draws; the same seed gives the same batch. Its
        device may differ from the tensors' (draws are moved).
    output_size : (int, int), optional
        For valid-padding networks: crop target and weights to this centred
        window *after* deforming them, matching the network output.

    Returns
    -------
    image, target, weights : tensors
        Augmented copies (None stays None); target and weights cropped to
        `output_size` if given.

    Notes
    -----
    A valid-padding U-Net's output covers the centre of its input. Target and
    weights must be deformed at the input size and cropped afterwards: an
    output pixel may take its label from up to a few sigma pixels away,
    outside the output window. Flips, quarter turns and zoom keep the patch
    centre, so they commute with the centre crop.

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
           Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.

    Examples
    --------
    >>> image = torch.rand(2, 1, 32, 32)
    >>> target = torch.randint(0, 3, (2, 32, 32))
    >>> out, labels, _ = augment_batch(
    ...     image, target, generator=torch.Generator().manual_seed(1), output_size=(16, 16)
    ... )
    >>> tuple(out.shape), tuple(labels.shape)
    ((2, 1, 32, 32), (2, 16, 16))
    """
    settings = settings or AugmentationConfig()
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    batch, _, height, width = image.shape
    for name, part in (("target", target), ("weights", weights)):
        if part is not None and tuple(part.shape) != (batch, height, width):
            raise ValueError(
                f"{name} must be (B, H, W) = {(batch, height, width)} like the image, got "
                f"{tuple(part.shape)}; deform at the input size and pass output_size to crop"
            )
    parts = [p for p in (image, target, weights) if p is not None]
    modes: list[Resampling] = [settings.image_interpolation]
    modes += ["nearest"] if target is not None else []
    modes += ["bilinear"] if weights is not None else []
    draw_on = generator.device if generator is not None else image.device

    if settings.flips_and_rotations:
        choices = 4 if height == width else 2  # non-square patches: 0 or 180 degrees only
        turns = torch.randint(choices, (batch,), generator=generator, device=draw_on)
        turns = turns * (4 // choices)
        flips = torch.rand(batch, generator=generator, device=draw_on) < 0.5
        parts = flip_and_rotate(parts, turns, flips)
    field = None
    if settings.elastic and settings.sigma > 0:
        field = elastic_displacement(
            batch, (height, width), settings.grid_points, settings.sigma,
            generator=generator, device=image.device, dtype=image.dtype,
        )  # fmt: skip
    if settings.zoom > 0:  # factor log-uniform in [1 / (1 + zoom), 1 + zoom]
        spread = torch.rand(batch, generator=generator, device=draw_on) * 2.0 - 1.0
        factors = torch.exp(spread * math.log1p(settings.zoom)).to(image.device, image.dtype)
        zoom = zoom_displacement(factors, (height, width))
        field = zoom if field is None else field.add_(zoom)
    # without a field, copies: never hand back the caller's tensors
    parts = deform(parts, field, modes) if field is not None else [p.clone() for p in parts]
    parts[0] = jitter_intensity(
        parts[0], settings.gain, settings.offset, settings.gamma, generator=generator
    )
    if settings.invert > 0:
        chosen = torch.rand(batch, generator=generator, device=draw_on) < settings.invert
        parts[0] = invert_contrast(parts[0], chosen)
    if settings.low_resolution > 0:
        parts[0] = lower_resolution(parts[0], settings.low_resolution, generator=generator)

    pieces = iter(parts)
    image_out = next(pieces)
    target_out = next(pieces) if target is not None else None
    weights_out = next(pieces) if weights is not None else None
    if output_size is not None:
        target_out = None if target_out is None else center_crop(target_out, output_size)
        weights_out = None if weights_out is None else center_crop(weights_out, output_size)
    return image_out, target_out, weights_out
