"""Fine-tuning at the starting model's object size, with everything the user sees on their grid.

Promises: labels survive resizing exactly; each image of objects is resized so its
objects match the diameter asked for; previews and validation are on the image as the
user has it; new annotations are resized as their image was; the saved model records
the diameter it was trained at and the one annotated; nothing is resized without a
diameter, or for scribbles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import resize
from tests.synthetic import bright_disks

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.scale import resized_back, typical_object_diameter
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    PreviewRequest,
    TrainingRun,
    TrainingSettings,
    annotation_classes,
    predict_probabilities,
    prepare_training,
    region_preview,
    train_interactively,
    trained_model_info,
    update_annotation,
)
from napari_unet_lab.core.train.resize import (
    ResizedTrainingRun,
    resize_factor,
    resized_annotation,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = TrainingSettings(steps=2, batch_size=1, patch_size=60)
BASE_DIAMETER = 12.0  # the starting model's objects; the disks below are about 25 across


def tiny_model() -> UNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet(UNetConfig(base_channels=4, depth=2))


def large_disks(seed: int = 0, shape=(120, 136)) -> AnnotatedImage:
    image, labels = bright_disks(shape, seed=seed, count=6, radii=(11, 14))
    return AnnotatedImage(image, labels, "objects", name=f"disks {seed}")


def resized_run(items, validation=(), diameter=BASE_DIAMETER) -> TrainingRun:
    return run_to_end(
        prepare_training(tiny_model(), items, validation, SETTINGS, 0, None, diameter)
    )


def test_labels_survive_resizing_exactly_and_a_round_trip_gives_them_back() -> None:
    labels = np.zeros((30, 40), dtype=np.uint16)
    labels[2:12, 3:15], labels[14:28, 20:38], labels[5:9, 30:34] = 7, 65000, 300
    for shape in [(15, 20), (47, 61), (60, 80)]:
        resized = resized_annotation(labels, shape)
        assert resized.shape == shape and resized.dtype == np.uint16
        assert set(np.unique(resized)) == {0, 7, 300, 65000}  # no blended label
    assert np.array_equal(
        resized_annotation(resized_annotation(labels, (60, 80)), (30, 40)), labels
    )
    region = np.zeros((30, 40), dtype=bool)
    region[:, :20] = True
    assert resized_annotation(region, (60, 80)).dtype == bool
    assert np.array_equal(resized_annotation(region, (60, 80))[:, :40], np.ones((60, 40), bool))


def test_each_image_of_objects_is_resized_so_its_objects_match_the_model() -> None:
    items = [large_disks(0), large_disks(1, shape=(100, 100))]
    run = resized_run(items)
    assert isinstance(run, ResizedTrainingRun)
    for item, factor, image in zip(items, run.factors, run.images, strict=True):
        painted = typical_object_diameter([item.annotation])
        assert factor == pytest.approx(BASE_DIAMETER / painted)
        expected = tuple(round(s * factor) for s in item.annotation.shape)
        assert image.shape[-2:] == expected
        resized = typical_object_diameter([item.resized(factor).annotation])
        assert resized == pytest.approx(BASE_DIAMETER, rel=0.06)
    assert run.user_shapes == [(120, 136), (100, 100)]
    # the targets are those of the resized labels, exactly (nearest, no blended labels)
    shape = run.images[0].shape[-2:]
    expected_classes, _ = annotation_classes(resized_annotation(items[0].annotation, shape))
    assert np.array_equal(run.targets[0], expected_classes)


def test_no_diameter_or_scribbles_train_on_the_images_as_they_are() -> None:
    item = large_disks(0)
    plain = resized_run([item], diameter=None)
    assert type(plain) is TrainingRun and plain.images[0].shape[-2:] == (120, 136)
    scribbles = np.zeros_like(item.annotation)
    scribbles[:5] = 1
    scribbles[item.annotation == 1] = 2
    strokes = AnnotatedImage(item.image, scribbles, "scribbles", name="strokes")
    assert resize_factor(scribbles, "scribbles", BASE_DIAMETER) == 1.0
    run = resized_run([strokes])
    assert type(run) is TrainingRun and run.images[0].shape[-2:] == (120, 136)


def test_previews_are_on_the_users_pixel_grid() -> None:
    run = resized_run([large_disks(0)])
    whole = run.preview_training_image(0)
    assert whole.classes.shape == whole.uncertainty.shape == (120, 136)
    assert whole.region == (slice(0, 120), slice(0, 136))
    # the network's prediction of the resized image, brought back to the user's pixels
    network = region_preview(run.model, run.images[0], None, None, run.step, 0)
    back = resize(network.classes, (120, 136), order=0, preserve_range=True, anti_aliasing=False)
    assert np.mean(whole.classes == back) > 0.995
    # a region of it is the whole preview, cut to the region
    part = run.preview_training_image(0, (slice(17, 83), slice(40, 131)))
    assert part.classes.shape == (66, 91)
    assert np.array_equal(part.classes, whole.classes[17:83, 40:131])
    np.testing.assert_allclose(part.uncertainty, whole.uncertainty[17:83, 40:131], atol=1e-5)
    with pytest.raises(ValueError, match="the preview region is empty"):
        run.preview_training_image(0, (slice(50, 50), slice(0, 10)))


def test_previews_asked_for_during_training_show_the_requested_user_region() -> None:
    run = resized_run([large_disks(0)])
    request = PreviewRequest(0, (slice(10, 70), slice(5, 105)))
    loop = train_interactively(run, preview_every=1)
    next(loop)
    records = [loop.send(request), loop.send(None)]
    previews = [r for r in records if hasattr(r, "classes")]
    assert previews and previews[0].classes.shape == (60, 100)
    assert previews[0].region == (slice(10, 70), slice(5, 105))


def test_validation_compares_with_the_annotation_as_painted() -> None:
    validation = large_disks(2, shape=(110, 90))
    run = resized_run([large_disks(0)], [validation])
    image, truth = run.validation[0]
    assert truth.shape == (110, 90)  # kept on the user's grid
    factor = run.validation_factors[0]
    assert factor == pytest.approx(BASE_DIAMETER / typical_object_diameter([validation.annotation]))
    scores = run.validate()
    resized = resize(image, [round(s * factor) for s in image.shape], order=1, mode="reflect",
                     anti_aliasing=True, preserve_range=True).astype(np.float32)  # fmt: skip
    probabilities = predict_probabilities(run.model, resized, SETTINGS.normalization)
    predicted = resized_back(probabilities, (110, 90)).argmax(axis=0) == 1
    truth = annotation_classes(validation.annotation)[0] == 1
    iou = np.count_nonzero(predicted & truth) / np.count_nonzero(predicted | truth)
    assert scores.iou == pytest.approx(iou)


def test_new_annotations_are_resized_as_their_image_was() -> None:
    item = large_disks(0)
    run = resized_run([item])
    painted = item.annotation.copy()
    painted[painted == 2] = 0  # the user erased an object
    update_annotation(run, 0, AnnotatedImage(item.image, painted, "objects", name="disks 0"))
    shape = run.images[0].shape[-2:]
    assert np.array_equal(run.targets[0], annotation_classes(resized_annotation(painted, shape))[0])
    with pytest.raises(ValueError, match=r"disks 0: the annotations \(10, 10\) do not match"):
        update_annotation(run, 0, AnnotatedImage(item.image, painted[:10, :10], name="disks 0"))


def test_the_saved_model_records_the_diameter_trained_at_and_the_one_annotated(tmp_path) -> None:
    items = [large_disks(0), large_disks(1)]
    run = resized_run(items)
    run_to_end(run.run())
    base = ModelInfo(run.model.config, ["background", "object"], object_diameter=BASE_DIAMETER)
    info = trained_model_info(run, "tuned", seed=0, images=["a", "b"], base=base, annotations=items)
    painted = round(typical_object_diameter([i.annotation for i in items]), 2)
    assert info.object_diameter == BASE_DIAMETER  # what the network learnt to see
    size = info.training["object_size"]
    assert size["trained_at_object_diameter"] == BASE_DIAMETER
    assert size["annotation_object_diameter"] == painted
    assert size["image_resize_factors"] == [round(f, 4) for f in run.factors]
    _, loaded = load_model(save_model(tmp_path / "tuned.json", run.model, info))
    assert loaded.object_diameter == BASE_DIAMETER
    assert loaded.training["object_size"]["annotation_object_diameter"] == painted
    # without resizing, the model records the annotations' own diameter and no object_size
    plain = resized_run(items, diameter=None)
    info = trained_model_info(plain, "t", seed=0, images=[], base=base, annotations=items)
    assert info.object_diameter == painted and "object_size" not in info.training
