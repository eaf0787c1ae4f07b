"""Zoom and inverted contrast: objects change size, labels stay exact, a seed keeps its batch."""

from __future__ import annotations

import math

import pytest
import torch

from napari_unet_lab.core.config import AugmentationConfig
from napari_unet_lab.core.train.appearance import invert_contrast, jitter_intensity
from napari_unet_lab.core.train.augment import (
    augment_batch,
    deform,
    elastic_displacement,
    flip_and_rotate,
    zoom_displacement,
)

NO_INTENSITY = dict(gain=0.0, offset=0.0, gamma=0.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def disks(batch: int, size: int = 64, radius: float = 10.0, label: int = 3) -> torch.Tensor:
    """(B, size, size) labels: one centred disk of `label` on 0."""
    centre = (size - 1) / 2
    rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = (rows - centre) ** 2 + (columns - centre) ** 2 <= radius**2
    return (inside.long() * label).expand(batch, -1, -1).clone()


def radius_of(mask: torch.Tensor, within: float = 1e9) -> float:
    """Radius of the disk of this area, counting pixels `within` this distance of the centre.

    Zooming out samples beyond the patch, where it is mirrored: copies of the disk
    appear at the borders, which `within` leaves out.
    """
    size = mask.shape[-1]
    centre = (size - 1) / 2
    rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    near = (rows - centre) ** 2 + (columns - centre) ** 2 <= within**2
    return math.sqrt(float((mask & near).sum()) / math.pi)


@pytest.mark.parametrize("factor", [0.6, 1.5])
def test_zoom_of_a_known_factor_scales_a_disk_about_the_centre(factor):
    target = disks(1)
    field = zoom_displacement(torch.tensor([factor]), (64, 64))
    (zoomed,) = deform([target], field, ["nearest"])
    assert abs(radius_of(zoomed == 3, within=10 * factor + 3) - 10.0 * factor) < 1.0
    assert set(zoomed.unique().tolist()) <= {0, 3}
    # still centred: the disk's centre of mass stays at the patch centre
    rows, columns = torch.nonzero(zoomed[0]).float().mean(0).tolist()
    assert abs(rows - 31.5) < 0.5 and abs(columns - 31.5) < 0.5


def test_augment_batch_zooms_by_a_log_uniform_factor_keeping_parts_aligned():
    batch, zoom = 32, 1.0
    target = disks(batch)
    image = (target > 0).float()[:, None] * 0.8 + 0.1  # (B, 1, H, W), bright disk
    weights = 0.5 + (target > 0).float() * 1.5  # 0.5 outside, 2.0 inside
    settings = AugmentationConfig(
        flips_and_rotations=False, elastic=False, zoom=zoom, **NO_INTENSITY
    )
    image_out, target_out, weights_out = augment_batch(
        image, target, weights, settings, generator=seeded(4)
    )
    # with flips and elastic off, the zoom factors are the batch's first draws
    draws = torch.rand(batch, generator=seeded(4)) * 2 - 1
    factors = torch.exp(draws * math.log(1 + zoom))
    assert factors.min() < 0.8 and factors.max() > 1.25  # both zoom out and in were drawn
    for b in range(batch):
        expected = 10.0 * float(factors[b])
        labelled = radius_of(target_out[b] == 3, within=expected + 3)
        assert abs(labelled - expected) < 1.0
        # the image went where its labels went: its bright disk has the same size (bicubic
        # and nearest sampling may differ on edge pixels only)
        bright = radius_of(image_out[b, 0] > 0.5, within=expected + 3)
        assert abs(bright - labelled) < 0.3
    assert set(target_out.unique().tolist()) <= {0, 3}  # nearest: no new labels
    # bilinear: within the input range, up to float32 rounding
    assert 0.5 - 1e-6 <= float(weights_out.min()) and float(weights_out.max()) <= 2.0 + 1e-6


def test_zoom_and_elastic_deformation_take_one_resampling_with_the_same_elastic_field():
    image = torch.rand(2, 1, 48, 48, generator=seeded())
    target = disks(2, 48)
    settings = AugmentationConfig(flips_and_rotations=False, zoom=0.3, **NO_INTENSITY)
    out = augment_batch(image, target, None, settings, generator=seeded(2))
    # the elastic field is drawn first, exactly as without zoom; then the zoom factors
    generator = seeded(2)
    field = elastic_displacement(2, (48, 48), 3, 10.0, generator=generator)
    factors = torch.exp((torch.rand(2, generator=generator) * 2 - 1) * math.log(1.3))
    field = field + zoom_displacement(factors, (48, 48))
    expected = deform([image, target], field, ["bicubic", "nearest"])
    assert torch.equal(out[1], expected[1])
    torch.testing.assert_close(out[0], expected[0], atol=1e-6, rtol=0)


def todays_pipeline(image, target, weights, settings, generator, output_size):
    """augment_batch as it was before zoom and inversion, from its public parts."""
    parts = [image, target, weights]
    turns = torch.randint(4, (image.shape[0],), generator=generator)
    flips = torch.rand(image.shape[0], generator=generator) < 0.5
    parts = flip_and_rotate(parts, turns, flips)
    field = elastic_displacement(
        image.shape[0], tuple(image.shape[-2:]), settings.grid_points, settings.sigma, generator
    )
    parts = deform(parts, field, ["bicubic", "nearest", "bilinear"])
    parts[0] = jitter_intensity(
        parts[0], settings.gain, settings.offset, settings.gamma, generator=generator
    )
    crop = [
        slice((s - o) // 2, (s - o) // 2 + o) for s, o in zip((40, 40), output_size, strict=True)
    ]
    return parts[0], parts[1][:, crop[0], crop[1]], parts[2][:, crop[0], crop[1]]


def test_zoom_and_invert_off_give_exactly_the_batch_a_seed_gave_before():
    image = torch.rand(3, 2, 40, 40, generator=seeded(1))
    target = torch.randint(0, 4, (3, 40, 40), generator=seeded(2))
    weights = torch.rand(3, 40, 40, generator=seeded(3))
    settings = AugmentationConfig(zoom=0.0, invert=0.0)
    assert settings == AugmentationConfig()  # off by default
    out = augment_batch(image, target, weights, settings, seeded(5), output_size=(20, 20))
    before = todays_pipeline(image, target, weights, settings, seeded(5), (20, 20))
    for now, then in zip(out, before, strict=True):
        assert torch.equal(now, then)


def test_invert_one_flips_a_ramp_exactly_keeping_its_range():
    ramp = (torch.arange(256.0).view(1, 1, 16, 16) / 256 + 0.25).expand(2, -1, -1, -1)
    settings = AugmentationConfig(
        flips_and_rotations=False, elastic=False, invert=1.0, **NO_INTENSITY
    )
    out, _, _ = augment_batch(ramp, generator=seeded())
    assert not torch.equal(out, 0.25 + 255 / 256 + 0.25 - ramp)  # defaults do not invert
    out, _, _ = augment_batch(ramp, settings=settings, generator=seeded())
    assert torch.equal(out, (0.25 + 255 / 256 + 0.25) - ramp)
    assert float(out.min()) == 0.25 and float(out.max()) == 0.25 + 255 / 256


def test_invert_is_a_per_patch_chance():
    image = torch.rand(400, 1, 8, 8, generator=seeded())
    settings = AugmentationConfig(
        flips_and_rotations=False, elastic=False, invert=0.25, **NO_INTENSITY
    )
    out, _, _ = augment_batch(image, settings=settings, generator=seeded(3))
    inverted = invert_contrast(image, torch.ones(400, dtype=torch.bool))
    kept = (out == image).flatten(1).all(1)
    flipped = (out == inverted).flatten(1).all(1)
    assert bool((kept | flipped).all())  # each patch whole: inverted or not
    assert 70 <= int(flipped.sum()) <= 130  # about a quarter of 400


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(zoom=-0.1), "zoom must be 0 \\(off\\) or a positive number, got -0.1"),
        (dict(zoom=float("nan")), "zoom must be 0 \\(off\\) or a positive number, got nan"),
        (dict(zoom=float("inf")), "zoom must be 0 \\(off\\) or a positive number, got inf"),
        (dict(invert=1.5), "invert is the chance .* between 0 and 1, got 1.5"),
        (dict(invert=-0.2), "invert is the chance .* between 0 and 1, got -0.2"),
    ],
)
def test_bad_zoom_or_invert_is_refused_in_plain_words(change, message):
    with pytest.raises(ValueError, match=message):
        AugmentationConfig(**change)


def test_zoom_and_invert_round_trip_and_old_settings_still_load():
    settings = AugmentationConfig(zoom=0.25, invert=0.5)
    saved = settings.to_dict()
    assert saved["zoom"] == 0.25 and saved["invert"] == 0.5
    assert AugmentationConfig.from_dict(saved) == settings
    old = {k: v for k, v in saved.items() if k not in ("zoom", "invert")}
    assert AugmentationConfig.from_dict(old) == AugmentationConfig()
