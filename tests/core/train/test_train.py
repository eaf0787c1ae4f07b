"""Training learns, is reproducible from a seed, and resumes exactly where it stopped."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from tests.synthetic import bright_disks

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.tile_plan import mirror_indices
from napari_unet_lab.core.train import (
    UNANNOTATED,
    TrainingRun,
    TrainingSettings,
    ValidationScores,
    border_weight_map,
    fine_tuning_copy,
    foreground_iou,
    predict_probabilities,
    rectangles_mask,
    semantic_target_from_instances,
    soft_overlap_loss,
    train,
    training_loss,
    training_target,
    uncertainty_map,
    validation_scores,
    weighted_cross_entropy,
)

TINY = UNetConfig(base_channels=4, depth=2)  # 60 px patches in, 20 px out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0) -> UNet:
    with torch.random.fork_rng():  # initial weights from a seed, global state untouched
        torch.manual_seed(seed)
        return UNet(TINY)


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
    classes = (positions % 2).astype(np.uint8)
    model = tiny_model()
    settings = TrainingSettings(
        patch_size=60, object_patch_share=0.0, normalization={"method": "none"}
    )
    run = TrainingRun(model, [positions], [classes], [positions], settings, rng=1)
    windows = {  # every mirrored 60x60 window the image has
        (top, left): positions[
            mirror_indices(top, 60, height)[:, None], mirror_indices(left, 60, width)[None, :]
        ]
        for top in range(-60, height)
        for left in range(-60, width)
    }
    for _ in range(20):
        image_patch, target_patch, weight_patch = run.sample_patch()
        assert image_patch.shape == (1, 60, 60)  # channels first, always
        assert target_patch.shape == weight_patch.shape == (60, 60)
        # image, classes and weights are cut with one window; augmentation comes later
        np.testing.assert_array_equal(image_patch[0], weight_patch)
        assert any(np.array_equal(image_patch[0], window) for window in windows.values())


def test_training_images_are_normalised_with_the_models_percentiles() -> None:
    image, labels = bright_disks()
    run = TrainingRun(tiny_model(), *training_data(), SETTINGS, rng=0)
    low, high = np.percentile(image.astype(np.float64), [1.0, 99.8])
    np.testing.assert_allclose(run.images[0][0], (image - low) / (high - low), atol=1e-5)


def test_resuming_with_other_settings_is_refused() -> None:
    run = TrainingRun(tiny_model(), *training_data(), SETTINGS, rng=0)
    other = TrainingRun(
        tiny_model(), *training_data(), TrainingSettings(steps=5, patch_size=60), rng=0
    )
    with pytest.raises(ValueError, match="other training settings"):
        other.load_state_dict(run.state_dict())


# ---------------------------------------------------------------- losses
def test_unannotated_pixels_do_not_change_any_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    classes = torch.randint(0, 3, (2, 8, 8), generator=generator)
    weights = torch.rand(2, 8, 8, generator=generator) + 0.5
    classes[:, :4] = UNANNOTATED
    other_logits = logits.clone()
    other_logits[:, :, :4] = 100 * torch.randn(2, 3, 4, 8, generator=generator)
    for name in ("cross_entropy", "dice", "jaccard", "cross_entropy+dice"):
        assert torch.equal(
            training_loss(logits, classes, weights, name),
            training_loss(other_logits, classes, weights, name),
        ), name


def test_weighted_cross_entropy_is_the_mean_over_annotated_pixels() -> None:
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])  # (1, 2, 1, 3)
    classes = torch.tensor([[[0, 1, -1]]])
    weights = torch.tensor([[[2.0, 3.0, 7.0]]])
    nll = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1))]
    expected = (2 * nll[0] + 3 * nll[1]) / 2
    assert float(weighted_cross_entropy(logits, classes, weights)) == pytest.approx(expected)


def test_soft_dice_and_jaccard_follow_their_definitions() -> None:
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3)]]]])  # p(object) = 0.5, 0.75
    classes = torch.tensor([[[1, 0]]])
    p, t = torch.tensor([0.5, 0.75]), torch.tensor([1.0, 0.0])
    intersection, total = float((p * t).sum()), float(p.sum() + t.sum())
    dice = (2 * intersection + 1) / (total + 1)
    jaccard = (intersection + 1) / (total - intersection + 1)
    assert float(soft_overlap_loss(logits, classes, "dice")) == pytest.approx(1 - dice)
    assert float(soft_overlap_loss(logits, classes, "jaccard")) == pytest.approx(1 - jaccard)


@pytest.mark.parametrize("loss", ["dice", "cross_entropy+dice"])
def test_every_loss_learns_bright_disks(loss) -> None:
    image, labels = bright_disks()
    settings = TrainingSettings(
        steps=60, batch_size=4, patch_size=60, learning_rate=1e-2, loss=loss
    )
    _, result = run_to_end(
        train(tiny_model(), *training_data(), settings, rng=0, validation=[(image, labels > 0)])
    )
    assert result.validation.iou > 0.8
    assert result.validation.dice == pytest.approx(
        2 * result.validation.iou / (1 + result.validation.iou)
    )


# ------------------------------------------------------------ annotations
def test_training_from_a_few_scribbles_segments_the_whole_image() -> None:
    """Two strokes per class, 3 % of the pixels: the rest counts for nothing."""
    image, labels = bright_disks()
    scribbles = np.zeros_like(labels)
    rng = np.random.default_rng(0)
    for value, where in ((1, labels == 0), (2, labels > 0)):
        pixels = np.argwhere(where)
        scribbles[tuple(pixels[rng.choice(len(pixels), 150, replace=False)].T)] = value
    target = training_target(scribbles, "scribbles")
    assert 0.01 < target.annotated.mean() < 0.05
    _, result = run_to_end(
        train(
            tiny_model(), [image], [target], None, SETTINGS, rng=0, validation=[(image, labels > 0)]
        )
    )
    assert result.validation.iou > 0.8


def test_patches_are_centred_inside_the_annotated_rectangles() -> None:
    image, labels = bright_disks()
    ys, xs = np.nonzero(labels == 1)
    box = (ys.min() - 4, xs.min() - 4, ys.max() + 4, xs.max() + 4)
    region = rectangles_mask(labels.shape, [box])
    target = training_target(labels, "objects", region)
    assert (target.weights[~region] == 0).all() and (target.classes[~region] == -1).all()
    settings = TrainingSettings(patch_size=60, object_patch_share=0.5)
    run = TrainingRun(tiny_model(), [image], [target], None, settings, rng=0)
    for _ in range(30):
        _, classes, _ = run.sample_patch()
        assert classes[30, 30] >= 0  # the centre pixel is annotated


def test_one_class_or_no_annotation_is_refused_with_a_clear_message() -> None:
    image, labels = bright_disks()
    only_background = training_target(np.where(labels > 0, 0, 1), "scribbles")
    with pytest.raises(ValueError, match="only background"):
        TrainingRun(tiny_model(), [image], [only_background])
    with pytest.raises(ValueError, match="nothing is annotated"):
        training_target(np.zeros_like(labels), "scribbles")
    three_classes = training_target(np.where(labels > 4, 3, 1 + (labels > 0)), "scribbles")
    with pytest.raises(ValueError, match="3 classes but the network has 2"):
        TrainingRun(tiny_model(), [image], [three_classes])


def test_a_new_class_gets_a_new_head_and_keeps_every_other_weight() -> None:
    model = tiny_model()
    tuned = fine_tuning_copy(model, 3, rng=0)
    assert tuned.config.n_classes == 3 and model.config.n_classes == 2
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, tuned.state_dict()[key]), key
    image, labels = bright_disks()
    three_classes = training_target(np.where(labels > 4, 3, 1 + (labels > 0)), "scribbles")
    run_to_end(
        train(
            tuned, [image], [three_classes], None, TrainingSettings(steps=2, patch_size=60), rng=0
        )
    )


def test_annotations_painted_during_training_are_used_from_the_next_step() -> None:
    image, labels = bright_disks()
    scribbles = np.zeros_like(labels)
    scribbles[:5] = 1
    scribbles[labels == 1] = 2
    run = TrainingRun(
        tiny_model(),
        [image],
        [training_target(scribbles, "scribbles")],
        None,
        TrainingSettings(steps=4, patch_size=60, object_patch_share=0),
        rng=0,
    )
    generator = run.run()
    next(generator)
    run.set_annotation(0, training_target(labels, "objects"))
    assert (run.targets[0] >= 0).all()
    records = list(generator)
    assert records[-1].step == 4


# ------------------------------------------------------- validation, stopping
def test_validation_scores_pool_annotated_pixels_of_all_images() -> None:
    model = tiny_model()
    image, labels = bright_disks()
    predicted = predict_probabilities(model, image).argmax(axis=0)
    truth = (labels > 0).astype(np.int64)
    truth[:10] = UNANNOTATED
    annotated = truth >= 0
    hit = np.count_nonzero((predicted == 1) & (truth == 1))
    union = np.count_nonzero(((predicted == 1) | (truth == 1)) & annotated)
    scores = validation_scores(model, [image, image], [truth, truth])
    assert scores.iou == pytest.approx(hit / union)
    assert scores.dice == pytest.approx(2 * hit / (hit + union))


def test_training_stops_when_validation_stops_improving_and_keeps_the_best() -> None:
    image, labels = bright_disks()
    settings = TrainingSettings(
        steps=200,
        batch_size=2,
        patch_size=60,
        learning_rate=1e-2,
        validate_every=5,
        patience=2,
        cosine_decay=False,
    )
    run = TrainingRun(
        tiny_model(), *training_data(), settings, rng=0, validation=[(image, labels > 0)]
    )
    # a validation that never improves after the first: stop two validations later
    scores = iter([0.5, 0.4, 0.45, 0.9])
    run.validate = lambda: ValidationScores(next(scores), 0.0, ())
    records, result = run_to_end(run.run())
    assert [r.step for r in records if r.validation] == [5, 10, 15]
    assert records[-1].stopped_early and result.stopped_early and result.steps == 15
    assert result.best_step == 5 and result.validation.iou == 0.5
    for key, value in run.best_weights.items():
        assert torch.equal(result.model.state_dict()[key], value)


# --------------------------------------------------- fine-tuning, precision
def test_a_frozen_encoder_does_not_change() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2, batch_norm=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainingSettings(steps=3, batch_size=2, patch_size=60, freeze_encoder=True)
    run_to_end(train(model, *training_data(), settings, rng=0))
    after = model.state_dict()
    for key in before:
        frozen = key.startswith(("encoders.", "bottleneck."))
        assert torch.equal(before[key], after[key]) == frozen, key


def test_channels_last_and_mixed_precision_train_on_the_cpu() -> None:
    settings = TrainingSettings(steps=3, batch_size=2, patch_size=60, learning_rate=1e-2)
    _, plain = run_to_end(train(tiny_model(), *training_data(), settings, rng=0))
    for options in ({"channels_last": True}, {"mixed_precision": True}):
        changed = TrainingSettings(**{**settings.__dict__, **options})
        _, result = run_to_end(train(tiny_model(), *training_data(), changed, rng=0))
        # the same batches; bfloat16 rounds to 3 significant digits
        np.testing.assert_allclose(result.losses, plain.losses, rtol=0.05)


# ----------------------------------------------------------------- preview
def test_the_live_preview_equals_prediction_of_the_whole_image_there() -> None:
    image, labels = bright_disks(shape=(130, 150))
    run = TrainingRun(
        tiny_model(),
        [image],
        [training_target(labels)],
        None,
        TrainingSettings(steps=1, patch_size=60),
        rng=0,
    )
    probabilities = predict_probabilities(run.model, image)
    region = (slice(37, 101), slice(5, 140))
    preview = run.preview(image, region)
    np.testing.assert_array_equal(preview.classes, probabilities.argmax(axis=0)[region])
    np.testing.assert_allclose(
        preview.uncertainty, uncertainty_map(probabilities)[region], atol=1e-6
    )


def test_settings_survive_a_json_round_trip() -> None:
    settings = TrainingSettings(loss="dice", patience=3)
    assert TrainingSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainingSettings.from_dict({"flips": True})


def test_a_new_head_comes_from_its_seed_and_leaves_global_random_state_alone() -> None:
    model = tiny_model()
    state = torch.random.get_rng_state()
    first, second = fine_tuning_copy(model, 3, rng=5), fine_tuning_copy(model, 3, rng=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.head.weight, second.head.weight)
    assert not torch.equal(first.head.weight, fine_tuning_copy(model, 3, rng=6).head.weight)
