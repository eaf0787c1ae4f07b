"""``napari-unet-lab train`` builds its run by the one pipeline, and checks its outputs first.

Where the model cannot be written is known before training starts: a missing
folder, a file where a folder should be, a read-only folder or /proc is refused
with a plain message and the usage exit code before the first step, never
after an hour of training.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_unet_lab.cli.common as cli
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.train import annotation_classes, class_balance_weights
from napari_unet_lab.samples import load_sample

FAST = ["--steps", "2", "--batch-size", "1", "--patch-size", "44", "--depth", "2",
        "--base-channels", "4", "--seed", "3", "-q", "--device", "cpu"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Small crops of two samples with their labels, side by side in one folder."""
    folder = tmp_path_factory.mktemp("crops")
    for name, (top, left) in {"nuclei_1": (0, 0), "nuclei_2": (200, 300)}.items():
        image, labels = load_sample(name)
        tifffile.imwrite(folder / f"{name}.tif", image[top : top + 96, left : left + 120])
        tifffile.imwrite(folder / f"{name}_labels.tif", labels[top : top + 96, left : left + 120])
    return folder


@pytest.fixture
def no_training(monkeypatch):
    """Any training step fails the test: the checks must come first."""

    def step(self):
        raise AssertionError("a training step ran before the output was checked")

    monkeypatch.setattr("napari_unet_lab.core.train.run.TrainingRun.train_step", step)


def train(crops: Path, output: Path | str, *extra: str) -> int:
    return main(["train", str(crops), str(crops), "-o", str(output), *FAST, *extra])


def test_the_model_is_trained_by_the_one_pipeline_and_says_how(crops, tmp_path) -> None:
    status = train(crops, tmp_path / "tuned", "--w0", "4", "--sigma", "2")
    assert status == cli.EXIT_OK
    _, info = load_model(tmp_path / "tuned.json")
    # class weights balanced over all images together, as napari and the scripts do
    class_maps = [
        annotation_classes(tifffile.imread(crops / f"nuclei_{i}_labels.tif"))[0] for i in (1, 2)
    ]
    shared = class_balance_weights([c[c >= 0] for c in class_maps])
    assert info.training["class_weights"] == np.round(shared, 6).tolist()
    assert info.training["targets"] == {"w0": 4.0, "sigma": 2.0, "class_balance": "all_images"}
    assert info.training["seed"] == 3 and info.training["steps_done"] == 2
    assert info.training["command"] == "napari-unet-lab train"
    assert info.provenance["images"] == ["nuclei_1.tif", "nuclei_2.tif"]
    assert info.class_names == ["background", "object"]


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing/model", "the folder {folder} does not exist"),
        ("a_file/model", "{folder} is a file, not a folder"),
        ("/proc/model", "the folder /proc does not take new files"),
    ],
    ids=["missing folder", "file as folder", "/proc"],
)
def test_an_output_that_cannot_be_written_is_refused_before_training(
    crops, tmp_path, capsys, no_training, where, reason
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    output = Path(where) if where.startswith("/") else tmp_path / where
    assert train(crops, output) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert f"napari-unet-lab train: error: cannot write {output}.json" in error
    assert reason.format(folder=output.parent) in error


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused_before_training(crops, tmp_path, capsys, no_training):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert train(crops, folder / "model") == cli.EXIT_USAGE
    finally:
        folder.chmod(0o755)
    assert "does not take new files (Permission denied)" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_is_refused_before_training(
    crops, tmp_path, capsys, no_training
) -> None:
    report = tmp_path / "nowhere" / "report.json"
    assert train(crops, tmp_path / "model", "--report", str(report)) == cli.EXIT_USAGE
    assert f"cannot write {report}: the folder" in capsys.readouterr().err
    assert not (tmp_path / "model.json").exists()


def test_an_existing_model_file_is_refused_before_training(
    crops, tmp_path, capsys, no_training
) -> None:
    (tmp_path / "model.json").write_text("{}")
    assert train(crops, tmp_path / "model") == cli.EXIT_OUTPUT_EXISTS
    assert "model.json already exists" in capsys.readouterr().err
    assert (tmp_path / "model.json").read_text() == "{}"


def test_labels_without_objects_are_refused_in_plain_words(tmp_path, capsys) -> None:
    image, _ = load_sample("nuclei_1")
    tifffile.imwrite(tmp_path / "empty.tif", image[:96, :120])
    tifffile.imwrite(tmp_path / "empty_labels.tif", np.zeros((96, 120), np.uint16))
    status = main(["train", str(tmp_path / "empty.tif"), str(tmp_path / "empty_labels.tif"),
                   "-o", str(tmp_path / "model"), *FAST])  # fmt: skip
    assert status == cli.EXIT_BAD_INPUT
    assert "the annotations hold only background, no object" in capsys.readouterr().err


FAST_WITHOUT_STEPS = FAST[2:]  # FAST without "--steps 2"


def test_train_defaults_to_three_minutes(crops, tmp_path, monkeypatch) -> None:
    """No --steps, no --minutes: a 3-minute budget (each step here pretends to take a minute)."""
    from napari_unet_lab.core.train.run import TrainingRun

    step = TrainingRun.train_step

    def a_minute_long(self):
        loss = step(self)
        self.timing.spent += 60.0
        return loss

    monkeypatch.setattr(TrainingRun, "train_step", a_minute_long)
    arguments = ["train", str(crops), str(crops), "-o", str(tmp_path / "m"), *FAST_WITHOUT_STEPS]
    assert main(arguments) == cli.EXIT_OK
    _, info = load_model(tmp_path / "m.json")
    assert info.training["settings"]["minutes"] == 3.0
    assert info.training["settings"]["patience"] == 3
    assert info.training["steps_done"] == 3


def test_train_for_minutes_or_steps(crops, tmp_path, capsys) -> None:
    assert train(crops, tmp_path / "by_steps") == cli.EXIT_OK  # FAST says --steps 2
    _, info = load_model(tmp_path / "by_steps.json")
    assert info.training["settings"]["minutes"] is None and info.training["steps_done"] == 2

    arguments = ["train", str(crops), str(crops), "-o", str(tmp_path / "by_time"),
                 *FAST_WITHOUT_STEPS, "--minutes", "0.01"]  # fmt: skip
    assert main(arguments) == cli.EXIT_OK
    _, info = load_model(tmp_path / "by_time.json")
    assert info.training["settings"]["minutes"] == 0.01
    assert info.training["steps_done"] >= 1 and info.training["training_seconds"] >= 0.5

    assert train(crops, tmp_path / "both", "--minutes", "1") == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert "argument --minutes: not allowed with argument --steps" in error
    assert main(["train", str(crops), str(crops), "-o", str(tmp_path / "m"), "--minutes", "0"])
    assert "argument --minutes: must be a number above 0, got 0" in capsys.readouterr().err
