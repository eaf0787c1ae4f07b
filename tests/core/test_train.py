"""Training learns, is reproducible from a seed, and resumes exactly where it stopped."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model import UNet
from napari_unet_lab.core.targets import border_weight_map, semantic_target_from_instances
from napari_unet_lab.core.train import (
    TrainingRun,
    TrainingSettings,
    foreground_iou,
    train,
)

TINY = UNetConfig(base_channels=4, depth=2)  # 60 px patches in, 20 px out


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one CPU thread: faster for a tiny network, and no spinning on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> UNet:
    with torch.random.fork_rng():  # initial weights from a seed, global state untouched
        torch.manual_seed(seed)
        return UNet(TINY)


def bright_disks(shape=(96, 96), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Return a noisy image of bright disks on a dark background, and its instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, dtype=np.int32)
    for label in range(1, 9):
        radius = rng.uniform(5, 10)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = label
    image = 100 + 800.0 * (labels > 0) + rng.normal(0, 60, shape)
    return image.astype(np.float32), labels


def training_data(seed=0):
    image, labels = bright_disks(seed=seed)
    return [image], [semantic_target_from_instances(labels)], [border_weight_map(labels)]


def run_to_end(generator):
    records = []
    while True:
        try:
            records.append(next(generator))
        except StopIteration as stop:
            return records, stop.value


SETTINGS = TrainingSettings(steps=60, batch_size=4, patch_size=60, learning_rate=1e-2)


def test_training_on_bright_disks_lowers_the_loss_and_segments_them() -> None:
    image, labels = bright_disks()
    model = tiny_model()
    records, result = run_to_end(
        train(model, *training_data(), SETTINGS, rng=0, validation=[(image, labels > 0)])
    )

    assert [r.step for r in records] == list(range(1, 61))
    assert all(r.total_steps == 60 for r in records)
    assert [r.validation_iou is not None for r in records] == [False] * 59 + [True]
    losses = np.array(result.losses)
    assert losses[-10:].mean() < 0.6 * losses[:10].mean()
    assert result.steps == 60 and result.model is model
    assert result.validation_iou > 0.8
    # it generalises to another image of the same kind
    other_image, other_labels = bright_disks(seed=5)
    assert foreground_iou(model, [other_image], [other_labels > 0]) > 0.8


def test_the_same_seed_gives_the_same_losses() -> None:
    settings = TrainingSettings(steps=6, batch_size=2, patch_size=60, learning_rate=1e-2)
    losses = []
    for seed in (7, 7, 8):
        _, result = run_to_end(train(tiny_model(), *training_data(), settings, rng=seed))
        losses.append(result.losses)
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_a_resumed_run_repeats_an_uninterrupted_one() -> None:
    settings = TrainingSettings(steps=8, batch_size=2, patch_size=60, learning_rate=1e-2)
    whole = TrainingRun(tiny_model(), *training_data(), settings, rng=3)
    run_to_end(whole.run())

    first = TrainingRun(tiny_model(), *training_data(), settings, rng=3)
    generator = first.run()
    for _ in range(4):
        next(generator)
    generator.close()  # stopped between steps
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    second = TrainingRun(tiny_model(seed=99), *training_data(), settings, rng=12345)
    second.load_state_dict(torch.load(saved, weights_only=True))
    records, result = run_to_end(second.run())

    assert [r.step for r in records] == [5, 6, 7, 8]
    assert result.losses == whole.losses
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_patches_are_mirrored_at_image_borders_and_aligned_with_targets() -> None:
    """Pixel values encode positions; a 40x50 image is smaller than a 60 px patch."""
    height, width = 40, 50
    positions = np.arange(height * width, dtype=np.float32).reshape(height, width)
    targets = [np.zeros((height, width), dtype=np.uint8)]
    model = tiny_model()
    offset = model.output_offset
    padded = np.pad(positions, offset, mode="reflect")
    for flips in (False, True):
        settings = TrainingSettings(
            patch_size=60,
            object_patch_share=0.0,
            flips_and_rotations=flips,
            normalization={"method": "none"},
        )
        run = TrainingRun(model, [positions], targets, [positions], settings, rng=1)
        for _ in range(20):
            image_patch, target_patch, weight_patch = run.sample_patch()
            assert image_patch.shape == (60, 60) and weight_patch.shape == (20, 20)
            # the output window is the centre of the input window
            np.testing.assert_array_equal(image_patch[offset:-offset, offset:-offset], weight_patch)
            if not flips:
                top, left = divmod(int(weight_patch[0, 0]), width)
                expected = padded[top : top + 60, left : left + 60]
                np.testing.assert_array_equal(image_patch, expected)


def test_training_images_are_normalised_like_prediction() -> None:
    image, labels = bright_disks()
    run = TrainingRun(tiny_model(), *training_data(), SETTINGS, rng=0)
    low, high = np.percentile(image.astype(np.float64), [1.0, 99.8])
    np.testing.assert_allclose(run.images[0], (image - low) / (high - low), atol=1e-5)


def test_resuming_with_other_settings_is_refused() -> None:
    run = TrainingRun(tiny_model(), *training_data(), SETTINGS, rng=0)
    other = TrainingRun(
        tiny_model(), *training_data(), TrainingSettings(steps=5, patch_size=60), rng=0
    )
    with pytest.raises(ValueError, match="other training settings"):
        other.load_state_dict(run.state_dict())
