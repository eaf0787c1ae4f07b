"""``napari-unet-lab train --zoom --invert-contrast``: augmentation a model file records."""

from __future__ import annotations

from pathlib import Path

import pytest
import tifffile

import napari_unet_lab.cli.common as cli
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.samples import load_sample

FAST = ["--steps", "2", "--batch-size", "1", "--patch-size", "44", "--depth", "2",
        "--base-channels", "4", "--seed", "3", "-q", "--device", "cpu"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    """A small crop of a sample and its labels."""
    folder = tmp_path_factory.mktemp("crop")
    image, labels = load_sample("nuclei_1")
    tifffile.imwrite(folder / "nuclei_1.tif", image[:96, :120])
    tifffile.imwrite(folder / "nuclei_1_labels.tif", labels[:96, :120])
    return folder


def train(crop: Path, output: Path, *extra: str) -> int:
    return main(["train", str(crop / "nuclei_1.tif"), str(crop / "nuclei_1_labels.tif"),
                 "-o", str(output), *FAST, *extra])  # fmt: skip


def test_zoom_and_inverted_contrast_are_recorded_in_the_model(crop, tmp_path) -> None:
    status = train(crop, tmp_path / "zoomed", "--zoom", "0.25", "--invert-contrast", "0.5")
    assert status == cli.EXIT_OK
    _, info = load_model(tmp_path / "zoomed.json")
    augmentation = info.training["settings"]["augmentation"]
    assert augmentation["zoom"] == 0.25 and augmentation["invert"] == 0.5
    assert augmentation["elastic"] is True  # the other settings keep their defaults


def test_without_the_options_zoom_and_inversion_are_off(crop, tmp_path) -> None:
    assert train(crop, tmp_path / "plain") == cli.EXIT_OK
    _, info = load_model(tmp_path / "plain.json")
    augmentation = info.training["settings"]["augmentation"]
    assert augmentation["zoom"] == 0.0 and augmentation["invert"] == 0.0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--invert-contrast",
            "1.5",
            "argument --invert-contrast: must be a chance from 0 to 1, got 1.5",
        ),
        ("--invert-contrast", "-0.5", "argument --invert-contrast: must be a number of 0 or more"),
        ("--zoom", "-1", "argument --zoom: must be a number of 0 or more, got -1"),
    ],
)
def test_bad_values_are_refused_in_plain_words(crop, tmp_path, capsys, option, value, message):
    assert train(crop, tmp_path / "never", option, value) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never.json").exists()
