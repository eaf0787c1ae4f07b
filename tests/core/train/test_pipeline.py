"""One training pipeline: annotated images → targets under one class-weight rule → a run.

Also what must never happen on the way: a stray scribble label building a huge
network, huge object ids exhausting memory without a word, a message that does
not name what the user painted, a run that cannot fit in memory starting anyway.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from tests.synthetic import bright_disks

from napari_unet_lab.core.config import TargetConfig, UNetConfig
from napari_unet_lab.core.images import intensity_range_for
from napari_unet_lab.core.model.files import load_model, save_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.tiling import predict_tiled
from napari_unet_lab.core.progress import Progress, run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    TrainingRun,
    TrainingSettings,
    annotation_classes,
    border_weight_map,
    check_memory,
    class_balance_weights,
    prepare_training,
    trained_model_info,
    training_target,
)

TINY = UNetConfig(base_channels=4, depth=2)
SETTINGS = TrainingSettings(steps=2, batch_size=1, patch_size=60)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(n_classes: int = 2) -> UNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet(TINY if n_classes == 2 else UNetConfig(base_channels=4, depth=2, n_classes=3))


def two_images() -> list[AnnotatedImage]:
    """Two images with very different shares of object pixels, so the rules differ."""
    crowded, crowded_labels = bright_disks(seed=1, count=12, radii=(10, 16))
    sparse, sparse_labels = bright_disks(seed=2, count=2, radii=(4, 6))
    return [
        AnnotatedImage(crowded, crowded_labels, "objects", name="crowded"),
        AnnotatedImage(sparse, sparse_labels, "objects", name="sparse"),
    ]


def prepared(items, targets=None, validation=(), model=None) -> TrainingRun:
    model = model or tiny_model()
    return run_to_end(prepare_training(model, items, validation, SETTINGS, 0, targets))


# ------------------------------------------------------------- the one rule
def test_by_default_classes_are_balanced_over_all_images_together() -> None:
    items = two_images()
    run = prepared(items)
    class_maps = [annotation_classes(item.annotation)[0] for item in items]
    shared = class_balance_weights(class_maps)
    np.testing.assert_array_equal(run.class_weights, shared)
    for item, weights in zip(items, run.weights, strict=True):
        np.testing.assert_array_equal(
            weights, border_weight_map(item.annotation, 10.0, 5.0, class_weights=shared)
        )


def test_per_image_balance_weighs_each_image_alone() -> None:
    items = two_images()
    run = prepared(items, TargetConfig(class_balance="per_image"))
    assert run.class_weights is None
    for item, weights in zip(items, run.weights, strict=True):
        np.testing.assert_array_equal(weights, training_target(item.annotation).weights)
    # the two rules really differ on these images
    assert not np.array_equal(run.weights[1], prepared(items).weights[1])


def test_border_weights_follow_the_target_settings() -> None:
    items = two_images()[:1]
    run = prepared(items, TargetConfig(w0=3.0, sigma=2.0))
    expected = training_target(items[0].annotation, w0=3.0, sigma=2.0)
    np.testing.assert_array_equal(run.weights[0], expected.weights)


def test_preparation_reports_each_image_and_validation_uses_the_classes() -> None:
    items = two_images()
    work = prepare_training(tiny_model(), items[:1], items[1:], SETTINGS, 0)
    records = []
    while True:
        try:
            records.append(next(work))
        except StopIteration as stop:
            run = stop.value
            break
    assert all(isinstance(r, Progress) for r in records)
    assert "preparing annotations of crowded" in [r.message for r in records]
    assert records[-1].fraction == 1.0
    ((image, classes),) = run.validation
    assert image is items[1].image
    np.testing.assert_array_equal(classes, annotation_classes(items[1].annotation)[0])


def test_a_training_image_is_normalised_exactly_as_prediction_feeds_the_network() -> None:
    """The network sees the same float32 values in training as in prediction, bit for bit."""
    image, labels = bright_disks()
    image = (image * 7).astype(np.uint16)  # raw camera counts
    model = tiny_model()
    run = prepared([AnnotatedImage(image, labels)], model=model)
    inputs = []
    hook = model.register_forward_pre_hook(lambda _, args: inputs.append(args[0].numpy().copy()))
    predict_tiled(
        model, image, tile_size=None, device="cpu", intensity_range=intensity_range_for(image, None)
    )
    hook.remove()
    (tile,) = inputs[0]  # one tile: the whole image with mirrored context around it
    offset = model.output_offset
    seen = tile[:, offset : offset + image.shape[0], offset : offset + image.shape[1]]
    assert run.images[0].dtype == np.float32
    np.testing.assert_array_equal(run.images[0], seen)


def test_an_rgb_training_image_is_what_prediction_feeds_a_grayscale_model() -> None:
    """An RGB image trains a 1-channel model on its luminance: bit for bit what segment sees."""
    from napari_unet_lab.core.images import channels_first
    from napari_unet_lab.core.model.files import ModelInfo
    from napari_unet_lab.core.predict.segment import segment

    image, labels = bright_disks()
    tint = np.array([0.9, 0.3, 0.6])  # purple objects, as stained tissue
    colours = (image[..., None] * tint * 200 + 20).astype(np.uint8)  # (Y, X, 3)
    model = tiny_model()
    item = AnnotatedImage(channels_first(colours, -1), labels, rgb=True)  # as the Train widget
    run = prepared([item], validation=[item], model=model)
    assert run.images[0].shape == (1, *labels.shape)
    inputs = []
    hook = model.register_forward_pre_hook(lambda _, args: inputs.append(args[0].numpy().copy()))
    info = ModelInfo(config=model.config, class_names=["background", "object"])
    segment(model, info, colours, rgb=True, tile_size=None, device="cpu")
    hook.remove()
    (tile,) = inputs[0]
    offset = model.output_offset
    seen = tile[:, offset : offset + labels.shape[0], offset : offset + labels.shape[1]]
    np.testing.assert_array_equal(run.images[0], seen)
    assert run.validation[0][0].shape == labels.shape  # validated on the luminance too
    run_to_end(run.run())  # and it trains


def test_the_preview_of_a_training_image_equals_the_preview_of_its_raw_pixels() -> None:
    image, labels = bright_disks(shape=(130, 150))
    run = prepared([AnnotatedImage(image, labels)])
    region = (slice(37, 101), slice(5, 140))
    from_copy = run.preview_training_image(0, region)
    from_raw = run.preview(image, region, index=0)
    np.testing.assert_array_equal(from_copy.classes, from_raw.classes)
    np.testing.assert_array_equal(from_copy.uncertainty, from_raw.uncertainty)
    with pytest.raises(ValueError, match="no training image 3"):
        run.preview_training_image(3)


def test_more_classes_than_the_network_has_gives_it_a_new_head() -> None:
    image, labels = bright_disks()
    scribbles = np.where(labels > 4, 3, 1 + (labels > 0))
    model = tiny_model()
    run = prepared([AnnotatedImage(image, scribbles, "scribbles")], model=model)
    assert run.model is not model and run.model.config.n_classes == 3
    assert model.config.n_classes == 2


# ------------------------------------------------------------ robustness
def test_a_stray_scribble_label_is_refused_instead_of_building_a_huge_network() -> None:
    image, labels = bright_disks()
    scribbles = np.where(labels > 0, 2, 1).astype(np.uint32)
    scribbles[0, 0] = 70000  # one slip of the label spin box
    with pytest.raises(ValueError, match="strokes: the scribbles use label 70000") as error:
        prepared([AnnotatedImage(image, scribbles, "scribbles", name="strokes")])
    assert "69999 classes" in str(error.value) and "at most 256" in str(error.value)


def test_a_run_whose_probabilities_would_not_fit_in_memory_is_refused(monkeypatch) -> None:
    image, labels = bright_disks()  # 96 x 96: 2 classes take 73,728 bytes
    monkeypatch.setattr("napari_unet_lab.core.train.pipeline.memory_budget", lambda: 50_000)
    with pytest.raises(ValueError, match="2 classes on an image of 96 × 96 pixels need"):
        prepared([AnnotatedImage(image, labels)])
    check_memory(2, [image], budget=73_728)  # just fits
    with pytest.raises(ValueError, match="use fewer classes, or crop the image"):
        check_memory(3, [image], budget=73_728)


@pytest.mark.parametrize("first_id", [2**40, 10**8], ids=["2**40", "1e8"])
def test_huge_object_ids_give_the_targets_of_small_ones_quickly(first_id) -> None:
    """Ids are renumbered first: no text-less MemoryError, no 24 s in find_objects."""
    _, labels = bright_disks(count=6)
    huge = np.where(labels > 0, labels.astype(np.uint64) + np.uint64(first_id), 0)
    started = time.perf_counter()
    target = training_target(huge, "objects")
    weights = border_weight_map(huge)
    assert time.perf_counter() - started < 5
    expected = training_target(labels, "objects")
    np.testing.assert_array_equal(target.classes, expected.classes)
    np.testing.assert_array_equal(target.weights, expected.weights)
    np.testing.assert_array_equal(weights, border_weight_map(labels))


def test_scribbles_of_one_class_are_refused_naming_the_label_painted() -> None:
    image, labels = bright_disks()
    only_objects = np.where(labels > 0, 2, 0)
    with pytest.raises(ValueError, match="the scribbles hold only label 2 and no background"):
        prepared([AnnotatedImage(image, only_objects, "scribbles")])
    two_classes = np.where(labels > 4, 3, np.where(labels > 0, 2, 0))
    with pytest.raises(ValueError, match="only labels 2 and 3 and no background; paint some"):
        prepared([AnnotatedImage(image, two_classes, "scribbles")])
    only_background = np.where(labels > 0, 0, 1)
    with pytest.raises(ValueError, match="only label 1 \\(background\\); paint at least one"):
        prepared([AnnotatedImage(image, only_background, "scribbles")])
    with pytest.raises(ValueError, match="only background, no object"):
        prepared([AnnotatedImage(image, np.zeros_like(labels))])


def test_annotations_of_another_size_are_refused_naming_the_image() -> None:
    image, labels = bright_disks()
    with pytest.raises(ValueError, match="nuclei: the annotations \\(95, 96\\) do not match"):
        prepared([AnnotatedImage(image, labels[1:], name="nuclei")])
    with pytest.raises(ValueError, match="at least one image"):
        prepared([])


# ------------------------------------------------------------ provenance
def test_a_trained_models_file_records_how_it_was_trained(tmp_path) -> None:
    items = two_images()
    targets = TargetConfig(w0=7.0, sigma=3.0)
    settings = TrainingSettings(steps=2, batch_size=1, patch_size=60, validate_every=1)
    run = run_to_end(prepare_training(tiny_model(), items[:1], items[1:], settings, 5, targets))
    run_to_end(run.run())
    info = trained_model_info(
        run, "nuclei", seed=5, images=["crowded"], validation_images=["sparse"], targets=targets,
        class_names=["background", "nucleus"], training={"command": "pytest"},
    )  # fmt: skip
    save_model(tmp_path / "nuclei", run.model, info)
    _, loaded = load_model(tmp_path / "nuclei.json")

    training = loaded.training
    assert training["settings"] == settings.to_dict()
    assert training["targets"] == {"w0": 7.0, "sigma": 3.0, "class_balance": "all_images"}
    assert training["class_weights"] == np.round(run.class_weights, 6).tolist()
    assert (training["seed"], training["steps_done"], training["command"]) == (5, 2, "pytest")
    assert loaded.class_names == ["background", "nucleus"]
    assert loaded.normalization == settings.normalization
    assert loaded.provenance["images"] == ["crowded"]
    assert loaded.provenance["validation_images"] == ["sparse"]
    assert loaded.provenance["started_from"] == "a new network"
    assert [v["step"] for v in loaded.metrics["validation"]] == [1, 2]
    assert loaded.metrics["best_step"] == run.best_step
