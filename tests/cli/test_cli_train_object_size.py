"""``napari-unet-lab train --from MODEL``: fine-tuning at the base model's object size."""

from __future__ import annotations

from pathlib import Path

import pytest
import tifffile
import torch
from tests.synthetic import bright_disks

import napari_unet_lab.cli.common as cli
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.scale import typical_object_diameter

FAST = ["--steps", "1", "--batch-size", "1", "--patch-size", "44", "--seed", "3", "-q",
        "--device", "cpu"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Disks about 25 px across, and a base model trained (it says) on objects of 12."""
    folder = tmp_path_factory.mktemp("disks")
    image, labels = bright_disks((100, 120), seed=0, count=5, radii=(11, 14))
    tifffile.imwrite(folder / "disks.tif", image)
    tifffile.imwrite(folder / "disks_labels.tif", labels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNet(UNetConfig(base_channels=4, depth=2))
    info = ModelInfo(model.config, ["background", "nucleus"], name="base", object_diameter=12.0)
    save_model(folder / "base.json", model, info)
    return folder


def fine_tune(data: Path, output: Path, *extra: str) -> int:
    return main(["train", str(data / "disks.tif"), str(data / "disks_labels.tif"), "-o",
                 str(output), "--from", str(data / "base.json"), *FAST, *extra])  # fmt: skip


def test_fine_tuning_trains_at_the_base_models_object_size_by_default(data, tmp_path) -> None:
    assert fine_tune(data, tmp_path / "tuned.json") == cli.EXIT_OK
    _, info = load_model(tmp_path / "tuned.json")
    painted = round(typical_object_diameter([tifffile.imread(data / "disks_labels.tif")]), 2)
    assert info.object_diameter == 12.0
    size = info.training["object_size"]
    assert size["trained_at_object_diameter"] == 12.0
    assert size["annotation_object_diameter"] == painted
    assert size["image_resize_factors"] == [pytest.approx(12.0 / painted, abs=2e-4)]


def test_no_match_object_size_trains_on_the_images_as_they_are(data, tmp_path) -> None:
    assert fine_tune(data, tmp_path / "as_is.json", "--no-match-object-size") == cli.EXIT_OK
    _, info = load_model(tmp_path / "as_is.json")
    painted = round(typical_object_diameter([tifffile.imread(data / "disks_labels.tif")]), 2)
    assert info.object_diameter == painted and "object_size" not in info.training
