"""Models know their object size: recorded in the model file, measured on the annotations."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import (
    ModelFileError,
    ModelInfo,
    load_model,
    read_model_info,
    save_model,
)
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    TrainingSettings,
    prepare_training,
    trained_model_info,
)

DATA = Path(__file__).parent / "data"
TINY = UNetConfig(base_channels=4, depth=2)


def disk_labels(diameter: float, shape=(120, 120)) -> np.ndarray:
    """Nine disks of one diameter on a grid, labelled 1..9."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for number, (y, x) in enumerate(((y, x) for y in (20, 60, 100) for x in (20, 60, 100)), 1):
        labels[np.hypot(yy - y, xx - x) <= diameter / 2] = number
    return labels


def test_a_model_file_records_the_object_size_and_reads_it_back(tmp_path):
    model = UNet(TINY)
    info = ModelInfo(
        TINY, ["background", "nucleus"], object_diameter=31.5, pixel_size=0.65, shown_larger=1.2
    )
    path = save_model(tmp_path / "sized", model, info)
    recorded = {"diameter": 31.5, "pixel_size": 0.65, "shown_larger": 1.2}
    assert json.loads(path.read_text())["object_size"] == recorded
    loaded = read_model_info(path)
    assert (loaded.object_diameter, loaded.pixel_size, loaded.shown_larger) == (31.5, 0.65, 1.2)


def test_model_files_written_before_load_with_the_diameter_unknown():
    old = read_model_info(DATA / "nuclei_first_release.json")
    assert "object_size" not in json.loads((DATA / "nuclei_first_release.json").read_text())
    assert old.object_diameter is None and old.pixel_size is None
    assert old.shown_larger == 1.0  # the training size: as before sizes were measured


def test_the_broad_model_records_that_it_outlines_best_a_little_larger():
    """Measured by bench_scale_choice; files without it show objects at the training size."""
    _, broad = load_model(builtin_models()["nuclei_broad"])  # the weights' checksum still holds
    assert broad.object_diameter == 28.25 and broad.shown_larger == 1.6818
    _, nuclei = load_model(builtin_models()["nuclei"])
    assert nuclei.shown_larger == 1.0


def test_the_builtin_model_records_the_size_of_its_training_nuclei():
    """28.21 px: median equivalent diameter of the 12,082 nuclei of the BBBC039 train labels."""
    _, info = load_model(builtin_models()["nuclei"])  # the weights' checksum still holds
    assert info.object_diameter == 28.21 and info.pixel_size is None


@pytest.mark.parametrize(
    "object_size, problem",
    [
        ([20], "object_size must be an object, not [20]"),
        ({"diameter": 0}, "object_size.diameter must be a positive number or null, not 0"),
        ({"diameter": "20"}, 'object_size.diameter must be a positive number or null, not "20"'),
        (
            {"diameter": 1e9},
            "object_size.diameter must be a positive number or null, not 1000000000.0",
        ),
        ({"pixel_size": -1}, "object_size.pixel_size must be a positive number or null, not -1"),
        ({"shown_larger": 0}, "object_size.shown_larger must be a positive number or null, not 0"),
        ({"shown_larger": 9}, "object_size.shown_larger must be a positive number or null, not 9"),
    ],
)
def test_a_damaged_object_size_is_refused_with_a_message(tmp_path, object_size, problem):
    path = save_model(tmp_path / "m", UNet(TINY), ModelInfo(TINY, ["background", "nucleus"]))
    description = json.loads(path.read_text())
    description["object_size"] = object_size
    path.write_text(json.dumps(description))
    with pytest.raises(ModelFileError) as error:
        read_model_info(path)
    assert str(error.value) == f"the model file m.json is not a valid model description: {problem}"


@pytest.fixture
def one_run():
    torch.manual_seed(0)
    labels = disk_labels(24.0)
    image = (labels > 0) * 500.0 + 100.0
    items = [AnnotatedImage(image, labels, "objects", name="disks")]
    settings = TrainingSettings(steps=1, batch_size=1, patch_size=60)
    return run_to_end(prepare_training(UNet(TINY), items, (), settings, 0)), items, labels


def test_a_trained_model_records_the_diameter_of_its_annotations(one_run):
    run, items, labels = one_run
    area = np.count_nonzero(labels == 1)  # every disk has this area
    expected = round(float(np.sqrt(4 * area / np.pi)), 2)
    given = trained_model_info(run, "d", seed=0, images=["disks"], annotations=items, pixel_size=2)
    assert given.object_diameter == expected and given.pixel_size == 2.0
    # without the annotations: the run's targets, apart by the gap they never need here
    assert trained_model_info(run, "d", seed=0, images=["disks"]).object_diameter == expected
    # scribbles: each painted region of an object class (2 = class 1) is an object
    scribbles = np.where(labels > 0, 2, 1)
    painted = [AnnotatedImage(items[0].image, scribbles, "scribbles")]
    from_scribbles = trained_model_info(run, "d", seed=0, images=["disks"], annotations=painted)
    assert from_scribbles.object_diameter == expected


def test_annotations_without_objects_keep_the_base_models_diameter(one_run):
    run, items, _ = one_run
    base = ModelInfo(TINY, ["background", "nucleus"], name="base", object_diameter=28.21)
    empty = [AnnotatedImage(items[0].image, np.ones((120, 120), np.int32), "scribbles")]
    info = trained_model_info(run, "d", seed=0, images=["x"], annotations=empty, base=base)
    assert info.object_diameter == 28.21
