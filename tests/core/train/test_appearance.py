"""A coarser resolution: some patches look as if imaged with bigger pixels; labels stay exact."""

from __future__ import annotations

import pytest
import torch

from napari_unet_lab.core.config import AugmentationConfig
from napari_unet_lab.core.train.appearance import lower_resolution
from napari_unet_lab.core.train.augment import augment_batch

ONLY_RESOLUTION = dict(flips_and_rotations=False, elastic=False, gain=0.0, offset=0.0, gamma=0.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def checkerboard(batch: int, size: int = 32) -> torch.Tensor:
    """(B, 1, size, size) of 0 and 1 in one-pixel squares: detail only the finest grid holds."""
    rows = torch.arange(size).view(-1, 1)
    cols = torch.arange(size).view(1, -1)
    return ((rows + cols) % 2).float().expand(batch, 1, size, size).clone()


def test_a_coarser_patch_loses_its_finest_detail_and_keeps_its_brightness():
    image = checkerboard(400)
    out = lower_resolution(image, chance=0.5, generator=seeded(2))
    kept = (out == image).flatten(1).all(1)
    coarser = ~kept
    assert 160 <= int(coarser.sum()) <= 240  # about half of 400
    # a checkerboard averaged over pixels twice as large or more is flat grey
    assert float(out[coarser].std(dim=(1, 2, 3)).max()) < 0.35 < float(image.std())
    assert torch.allclose(out[coarser].mean(dim=(1, 2, 3)), torch.full((int(coarser.sum()),), 0.5),
                          atol=0.05)  # fmt: skip
    assert torch.equal(image, checkerboard(400))  # the input is left as it was


def test_a_flat_patch_stays_flat_at_any_resolution():
    image = torch.full((8, 1, 40, 40), 0.3)
    out = lower_resolution(image, chance=1.0, generator=seeded())
    assert torch.allclose(out, image, atol=1e-6)


def test_labels_are_untouched_and_off_changes_nothing():
    image = torch.rand(6, 1, 32, 32, generator=seeded())
    target = torch.randint(0, 3, (6, 32, 32), generator=seeded(1))
    plain = AugmentationConfig(**ONLY_RESOLUTION)
    coarse = AugmentationConfig(**ONLY_RESOLUTION, low_resolution=1.0)
    out, labels, _ = augment_batch(image, target, settings=coarse, generator=seeded(4))
    assert torch.equal(labels, target)
    assert not torch.equal(out, image)
    # 0 (the default) draws nothing more: seeds give the batches they always gave
    off, _, _ = augment_batch(image, target, settings=plain, generator=seeded(4))
    assert torch.equal(off, image)
    default, _, _ = augment_batch(image, target, generator=seeded(4))
    again, _, _ = augment_batch(
        image, target, settings=AugmentationConfig(low_resolution=0.0), generator=seeded(4)
    )
    assert torch.equal(default, again)


@pytest.mark.parametrize("chance", [-0.1, 1.5, float("nan")])
def test_a_chance_outside_0_to_1_is_refused_in_plain_words(chance):
    with pytest.raises(ValueError, match="low_resolution is the chance .* between 0 and 1"):
        AugmentationConfig(low_resolution=chance)
