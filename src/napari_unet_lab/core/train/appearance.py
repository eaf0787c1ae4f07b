"""Augmentations of the image alone: intensity, inverted contrast and a coarser resolution.

Targets and weights are left as they are: these change how nuclei look, not where
they are. Everything works on whole batches in torch, on the tensors' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jitter_intensity(
    image: torch.Tensor,
    gain: float = 0.1,
    offset: float = 0.1,
    gamma: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Change brightness, contrast and gamma of each sample at random.

    Parameters
    ----------
    image : (B, C, H, W) floating point tensor
        Normalised images (about 0 to 1).
    gain : float
        Each sample is multiplied by a factor uniform in [1 - gain, 1 + gain].
    offset : float
        Then a value uniform in [-offset, offset] is added.
    gamma : float
        Before that, each sample is mapped to 0..1 by its own minimum and
        maximum, raised to the power exp(u) with u uniform in [-gamma, gamma],
        and mapped back, so that gamma works on any intensity range.

    Returns
    -------
    (B, C, H, W) tensor
        The changed images; the input is left as it was.
    """
    batch = image.shape[0]
    draw_on = generator.device if generator is not None else image.device
    # all draws at once, uniform in [-1, 1]: (B, 3) for gamma, gain, offset
    draws = torch.rand((batch, 3), generator=generator, device=draw_on) * 2.0 - 1.0
    draws = draws.to(device=image.device, dtype=image.dtype).view(batch, 3, 1, 1, 1)
    scale = 1.0 + gain * draws[:, 1]  # (B, 1, 1, 1)
    shift = offset * draws[:, 2]
    if gamma <= 0:
        return torch.addcmul(shift, image, scale)
    low, high = image.flatten(1).aminmax(dim=1)
    low, high = low.view(batch, 1, 1, 1), high.view(batch, 1, 1, 1)
    span = (high - low).clamp_min(1e-12)
    # per-sample tensors are tiny; the few passes over the image are fused where torch allows
    unit = torch.addcmul(-low / span, image, 1.0 / span).clamp_(0, 1)
    unit.pow_(torch.exp(gamma * draws[:, 0]))
    return torch.addcmul(low * scale + shift, unit, span * scale)


def invert_contrast(image: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Invert the chosen samples within their own range: ``low + high - image``.

    Bright nuclei on a dark background become dark nuclei on a bright one (as in
    brightfield), and each sample keeps its minimum and maximum.

    Parameters
    ----------
    image : (B, C, H, W) floating point tensor
        The images; left as they were.
    chosen : (B,) bool tensor
        Which samples to invert.

    Returns
    -------
    (B, C, H, W) tensor
    """
    low, high = image.flatten(1).aminmax(dim=1)
    inverted = (low + high).view(-1, 1, 1, 1) - image
    return torch.where(chosen.to(image.device).view(-1, 1, 1, 1), inverted, image)


def lower_resolution(
    image: torch.Tensor,
    chance: float,
    coarsest: float = 4.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Show some samples as if they had been imaged at a coarser pixel size.

    A chosen sample is shrunk by a factor log-uniform in [1, `coarsest`] (each
    new pixel the mean of the old ones it covers, as a camera bins light) and
    grown back bicubically, as prediction grows an image whose nuclei are
    smaller than the model's: small nuclei come to the network soft-edged.

    Parameters
    ----------
    image : (B, C, H, W) floating point tensor
        The images; left as they were.
    chance : float
        Chance, 0 to 1, that a sample is made coarser.
    coarsest : float
        The largest factor, at least 1.
    generator : torch.Generator, optional
        For reproducible draws.

    Returns
    -------
    (B, C, H, W) tensor
    """
    batch, _, height, width = image.shape
    draw_on = generator.device if generator is not None else image.device
    chosen = torch.rand(batch, generator=generator, device=draw_on) < chance
    spread = torch.rand(batch, generator=generator, device=draw_on)
    factors = torch.exp(spread * math.log(max(coarsest, 1.0)))
    out = image.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        factor = float(factors[i])
        smaller = (max(1, round(height / factor)), max(1, round(width / factor)))
        shrunk = F.interpolate(image[i : i + 1], size=smaller, mode="area")
        out[i : i + 1] = F.interpolate(
            shrunk, size=(height, width), mode="bicubic", align_corners=False
        )
    return out
