"""Augmentation moves image, targets and weights together and invents no labels."""

from __future__ import annotations

import pytest
import torch

from napari_unet_lab.core.config import AugmentationConfig
from napari_unet_lab.core.train.appearance import jitter_intensity
from napari_unet_lab.core.train.augment import (
    augment_batch,
    deform,
    elastic_displacement,
    flip_and_rotate,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def label_map(batch: int = 2, size: int = 48, classes: int = 4) -> torch.Tensor:
    """Blocky labels with 0 (unannotated) and a few classes, so nearest sampling shows shifts."""
    coarse = torch.randint(0, classes, (batch, 1, size // 8, size // 8), generator=seeded(7))
    return torch.nn.functional.interpolate(coarse.float(), size=(size, size)).long()[:, 0]


def test_zero_sigma_is_exact_identity():
    image = torch.rand(2, 1, 40, 40, generator=seeded())
    target = label_map(2, 40)
    weights = torch.rand(2, 40, 40, generator=seeded(1))
    field = elastic_displacement(2, (40, 40), sigma=0.0, generator=seeded())
    assert not field.any()
    out = deform([image, target, weights], field, ["bicubic", "nearest", "bilinear"])
    for before, after in zip([image, target, weights], out, strict=True):
        assert torch.equal(before, after)
    settings = AugmentationConfig(flips_and_rotations=False, sigma=0.0, gain=0, offset=0, gamma=0)
    image_out, target_out, weights_out = augment_batch(image, target, weights, settings, seeded())
    assert torch.equal(image_out, image) and torch.equal(target_out, target)
    assert torch.equal(weights_out, weights) and image_out is not image


def test_small_field_resamples_close_to_identity():
    """Without the zero-field shortcut grid_sample is near-exact: labels exact, values ~1e-5."""
    image = torch.rand(1, 1, 64, 64, generator=seeded())
    target = label_map(1, 64)
    field = torch.full((1, 2, 64, 64), 1e-3)
    smooth, labels = deform([image, target], field, ["bicubic", "nearest"])
    assert torch.equal(labels, target)
    assert (smooth - image).abs().max() < 1e-2


def test_integer_displacement_is_an_exact_shift():
    image = torch.rand(1, 1, 32, 32, generator=seeded())
    field = torch.zeros(1, 2, 32, 32)
    field[:, 0], field[:, 1] = 2.0, -3.0  # take pixel (y, x) from (y + 2, x - 3)
    for mode in ("nearest", "bilinear", "bicubic"):
        (out,) = deform([image], field, [mode])
        torch.testing.assert_close(out[..., :30, 3:], image[..., 2:, :29], rtol=0, atol=1e-5)


def test_one_field_moves_image_and_labels_identically():
    target = label_map(3, 64, classes=5)
    image = target.float().unsqueeze(1)  # an image equal to the label map
    field = elastic_displacement(3, (64, 64), sigma=10.0, generator=seeded(3))
    moved_image, moved_labels = deform([image, target], field, ["nearest", "nearest"])
    assert not torch.equal(moved_labels, target)  # something moved
    assert torch.equal(moved_image[:, 0].long(), moved_labels)
    # a smooth image resampled bicubically agrees with the labels away from label edges
    (smooth,) = deform([image], field, ["bicubic"])
    agree = (smooth[:, 0] - moved_labels.float()).abs() < 0.5
    assert agree.float().mean() > 0.9


def test_labels_stay_in_the_original_label_set():
    target = label_map(4, 64, classes=6)
    target[target == 3] = 255  # e.g. an "ignore" value far from the classes
    image = torch.rand(4, 1, 64, 64, generator=seeded())
    weights = torch.rand(4, 64, 64, generator=seeded(2)) + 1.0
    _, out, moved_weights = augment_batch(image, target, weights, generator=seeded(5))
    assert out.dtype == target.dtype
    assert set(out.unique().tolist()) <= set(target.unique().tolist())
    # bilinear weights never leave their input range
    assert moved_weights.min() >= weights.min() - 1e-6
    assert moved_weights.max() <= weights.max() + 1e-6


def test_flips_and_rotations_are_exact_permutations():
    image = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    labels = image[:, 0].long()  # labels equal to the first image channel
    for turns in range(4):
        for flip in (False, True):
            t = torch.tensor([turns, (turns + 1) % 4])
            f = torch.tensor([flip, not flip])
            moved_image, moved_labels = flip_and_rotate([image, labels], t, f)
            for b in range(2):
                expected = torch.rot90(image[b], int(t[b]), dims=(-2, -1))
                expected = expected.flip(-1) if f[b] else expected
                assert torch.equal(moved_image[b], expected)
                assert torch.equal(moved_labels[b], moved_image[b, 0].long())


def test_flips_and_turns_alone_keep_every_pixel_value():
    settings = AugmentationConfig(elastic=False, gain=0, offset=0, gamma=0)
    image = torch.rand(8, 1, 16, 16, generator=seeded())
    target = torch.arange(8 * 16 * 16).view(8, 16, 16)
    image_out, target_out, _ = augment_batch(image, target, None, settings, seeded(4))
    for b in range(8):
        assert torch.equal(image_out[b].flatten().sort().values, image[b].flatten().sort().values)
        # the image went where its labels went
        order = target_out[b].flatten() - b * 256
        assert torch.equal(image_out[b, 0].flatten(), image[b, 0].flatten()[order])


def test_seeded_generator_reproduces_the_batch():
    image = torch.rand(3, 1, 32, 32, generator=seeded())
    target = label_map(3, 32)
    weights = torch.ones(3, 32, 32)
    first = augment_batch(image, target, weights, generator=seeded(11))
    second = augment_batch(image, target, weights, generator=seeded(11))
    other = augment_batch(image, target, weights, generator=seeded(12))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def test_coarse_grid_displacements_have_standard_deviation_sigma():
    # with align_corners=True the coarse nodes of a 3x3 grid fall on pixels 0, 32, 64
    field = elastic_displacement(2000, (65, 65), grid=3, sigma=10.0, generator=seeded(9))
    nodes = field[:, :, ::32, ::32]  # (B, 2, 3, 3): the drawn values themselves
    assert nodes.shape[-2:] == (3, 3)
    assert abs(float(nodes.mean())) < 0.3
    assert abs(float(nodes.std()) - 10.0) < 0.3
    # the interpolated field is smooth: neighbouring pixels differ by far less than sigma
    assert field.diff(dim=-1).abs().max() < 3.0


def test_device_and_dtype_are_kept():
    image = torch.rand(2, 1, 24, 24, dtype=torch.float64, generator=seeded())
    target = label_map(2, 24).to(torch.int32)
    weights = torch.rand(2, 24, 24, generator=seeded(1))
    out = augment_batch(image, target, weights, generator=seeded(), output_size=(10, 10))
    assert [t.dtype for t in out] == [torch.float64, torch.int32, torch.float32]
    assert [tuple(t.shape) for t in out] == [(2, 1, 24, 24), (2, 10, 10), (2, 10, 10)]
    assert all(t.device == image.device for t in out)
    field = elastic_displacement(1, (8, 8), device="cpu", dtype=torch.float64)
    assert field.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_with_a_cpu_generator():
    image = torch.rand(2, 1, 32, 32, device="cuda")
    target = torch.zeros(2, 32, 32, dtype=torch.long, device="cuda")
    out = augment_batch(image, target, None, generator=seeded())
    assert out[0].device.type == "cuda" and out[1].device.type == "cuda"
    cpu = augment_batch(image.cpu(), target.cpu(), None, generator=seeded())
    torch.testing.assert_close(out[0].cpu(), cpu[0], atol=1e-4, rtol=0)


def test_valid_padding_contract_needs_full_size_targets():
    image = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="output_size"):
        augment_batch(image, torch.zeros(1, 16, 16, dtype=torch.long))


def test_intensity_jitter_changes_only_brightness_contrast_gamma():
    image = torch.rand(4, 1, 16, 16, generator=seeded())
    out = jitter_intensity(image, gain=0.1, offset=0.1, gamma=0.0, generator=seeded(1))
    # an affine change per sample: ranks are kept, correlation is 1
    for b in range(4):
        assert torch.equal(out[b].flatten().argsort(), image[b].flatten().argsort())
    gamma_only = jitter_intensity(image, gain=0, offset=0, gamma=0.3, generator=seeded(1))
    torch.testing.assert_close(gamma_only.amin((1, 2, 3)), image.amin((1, 2, 3)))
    torch.testing.assert_close(gamma_only.amax((1, 2, 3)), image.amax((1, 2, 3)))


def test_settings_refuse_nonsense_and_round_trip():
    with pytest.raises(ValueError):
        AugmentationConfig(grid_points=1)
    with pytest.raises(ValueError):
        AugmentationConfig(sigma=-1.0)
    settings = AugmentationConfig(sigma=5.0)
    assert AugmentationConfig.from_dict(settings.to_dict()) == settings
