"""The command line does what the plugin does, from a shell, with clear exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tifffile
import torch

import napari_unet_lab.cli.common as cli
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.formats.tiff import load_labels_tiff
from napari_unet_lab.core.metrics import average_precision, pixel_iou
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.samples import load_sample

GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Small crops of two samples with their labels, side by side in one folder."""
    folder = tmp_path_factory.mktemp("crops")
    for name, (top, left) in {"nuclei_1": (0, 0), "nuclei_2": (200, 300)}.items():
        image, labels = load_sample(name)
        tifffile.imwrite(folder / f"{name}.tif", image[top : top + 96, left : left + 120])
        tifffile.imwrite(folder / f"{name}_labels.tif", labels[top : top + 96, left : left + 120])
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small random U-Net saved as a model file: fast, not accurate."""
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "object"], name="tiny")
    return save_model(tmp_path_factory.mktemp("model") / "tiny", UNet(config), info)


def test_no_arguments_prints_help(capsys) -> None:
    assert main([]) == cli.EXIT_OK
    out = capsys.readouterr().out
    for command in ("predict", "evaluate", "train", "export", "demo"):
        assert command in out


def test_predict_writes_what_the_core_segments(crops, tmp_path, capsys) -> None:
    """The objects file holds exactly the plugin's segmentation, at every pixel."""
    status = main(
        ["predict", "nuclei", str(crops / "nuclei_1.tif"), "-o", str(tmp_path), "--classes",
         "--probability", "--device", "cpu", "--tile-size", "0", "-q"]
    )  # fmt: skip

    assert status == cli.EXIT_OK
    model, info = load_model(builtin_models()["nuclei"])
    expected = segment(
        model, info, tifffile.imread(crops / "nuclei_1.tif"), device="cpu", object_diameter="auto"
    )
    objects, _ = load_labels_tiff(tmp_path / "nuclei_1_objects.tif")
    np.testing.assert_array_equal(objects, expected.objects)
    assert objects.max() > 5  # the built-in model finds the nuclei
    classes, _ = load_labels_tiff(tmp_path / "nuclei_1_classes.tif")
    np.testing.assert_array_equal(classes, expected.classes)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "nuclei_1_foreground.tif"), expected.foreground
    )
    assert "nuclei_1.tif:" in capsys.readouterr().out


def test_predict_refuses_to_overwrite_before_any_work(crops, tiny_model, tmp_path, capsys):
    arguments = ["predict", str(tiny_model), str(crops / "nuclei_1.tif"), "-o", str(tmp_path), "-q"]
    assert main(arguments) == cli.EXIT_OK
    result = tmp_path / "nuclei_1_objects.tif"
    result.write_bytes(b"mine")

    assert main(arguments) == cli.EXIT_OUTPUT_EXISTS
    assert result.read_bytes() == b"mine"
    assert "--overwrite" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == cli.EXIT_OK
    assert load_labels_tiff(result)[0].shape == (96, 120)


def test_evaluate_reports_the_core_metrics(crops, tmp_path, capsys) -> None:
    """Images and labels in one folder pair up by name; the scores are core.metrics'."""
    report_path = tmp_path / "metrics.json"
    status = main(
        ["evaluate", "nuclei", str(crops), str(crops), "--report", str(report_path), "-q",
         "--device", "cpu"]
    )  # fmt: skip

    assert status == cli.EXIT_OK
    report = json.loads(report_path.read_text())
    assert [row["image"].rsplit("/", 1)[-1] for row in report["images"]] == [
        "nuclei_1.tif",
        "nuclei_2.tif",
    ]
    model, info = load_model(builtin_models()["nuclei"])
    intersection = union = 0
    for row in report["images"]:
        image = tifffile.imread(row["image"])
        objects = segment(model, info, image, device="cpu", object_diameter="auto").objects
        truth = tifffile.imread(row["labels"])
        thresholds = [0.5 + 0.05 * i for i in range(10)]
        precision = average_precision(objects, truth, thresholds)
        assert row["pixel_iou"] == pixel_iou(objects > 0, truth > 0)
        assert row["ap_50"] == precision[0.5]
        assert row["mean_average_precision"] == pytest.approx(np.mean(list(precision.values())))
        intersection += np.count_nonzero((objects > 0) & (truth > 0))
        union += np.count_nonzero((objects > 0) | (truth > 0))
    overall = report["overall"]
    assert overall["pixel_iou"] == pytest.approx(intersection / union)
    assert overall["ap_50"] == pytest.approx(np.mean([r["ap_50"] for r in report["images"]]))
    assert len(report["thresholds"]) == 10
    table = capsys.readouterr().out
    assert "nuclei_2.tif" in table and "overall (2)" in table


def test_train_saves_a_model_the_plugin_loads(crops, tmp_path) -> None:
    output, report_path = tmp_path / "trained", tmp_path / "training.json"
    status = main(
        ["train", str(crops), str(crops), "-o", str(output), "--steps", "2", "--batch-size", "1",
         "--patch-size", "44", "--depth", "2", "--base-channels", "4", "--validation-share",
         "0.5", "--report", str(report_path), "--seed", "3", "-q", "--device", "cpu"]
    )  # fmt: skip

    assert status == cli.EXIT_OK
    model, info = load_model(output.with_suffix(".json"))
    assert (model.config.depth, model.config.base_channels) == (2, 4)
    assert info.training["steps_done"] == 2 and info.training["seed"] == 3
    assert len(info.provenance["images"]) == len(info.provenance["validation_images"]) == 1
    report = json.loads(report_path.read_text())
    assert len(report["losses"]) == 2 and all(np.isfinite(report["losses"]))
    assert report["validation_iou"] is not None


def test_train_options_reach_the_training_settings(crops, tiny_model, tmp_path) -> None:
    output = tmp_path / "tuned"
    status = main(
        ["train", str(crops), str(crops), "-o", str(output), "--from", str(tiny_model),
         "--steps", "2", "--batch-size", "1", "--patch-size", "44", "--loss", "dice",
         "--freeze-encoder", "--patience", "4", "-q", "--device", "cpu"]
    )  # fmt: skip
    assert status == cli.EXIT_OK
    model, info = load_model(output.with_suffix(".json"))
    settings = info.training["settings"]
    assert (settings["loss"], settings["freeze_encoder"], settings["patience"]) == ("dice", True, 4)
    base, _ = load_model(tiny_model)
    for key, value in base.state_dict().items():  # the frozen encoder came through unchanged
        if key.startswith(("encoders.", "bottleneck.")):
            assert torch.equal(model.state_dict()[key], value), key


def test_export_torchscript_agrees_with_the_model(tiny_model, tmp_path) -> None:
    output = tmp_path / "tiny.pt"
    assert main(["export", str(tiny_model), "--format", "torchscript", "-o", str(output)]) == 0
    model, _ = load_model(tiny_model)
    inputs = torch.rand(1, 1, model.min_input_size, model.min_input_size + 8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit itself is deprecated
        found = torch.jit.load(output)(inputs)
        np.testing.assert_allclose(found, model(inputs), atol=1e-5)


def test_export_bioimageio_validates(crops, tiny_model, tmp_path, capsys) -> None:
    pytest.importorskip("bioimageio.spec", reason="install the export extra")
    output = tmp_path / "tiny.zip"
    status = main(
        ["export", str(tiny_model), "--format", "bioimageio", "-o", str(output), "--weights",
         "torchscript", "--test-image", str(crops / "nuclei_2.tif"), "--author", "Ada"]
    )  # fmt: skip
    assert status == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "validation: valid-format" in out or "validation: passed" in out
    assert output.is_file()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreadable image", cli.EXIT_BAD_INPUT),
        ("labels of another shape", cli.EXIT_BAD_INPUT),
        ("damaged weights", cli.EXIT_BAD_MODEL),
        ("not a model file", cli.EXIT_BAD_MODEL),
        ("unknown model name", cli.EXIT_BAD_MODEL),
        ("missing --output", cli.EXIT_USAGE),
        ("unknown licence", cli.EXIT_USAGE),
    ],
)
def test_exit_codes_come_with_a_message_not_a_traceback(
    case, expected, crops, tiny_model, tmp_path, capsys
) -> None:
    image, model, output = crops / "nuclei_1.tif", str(tiny_model), str(tmp_path / "out")
    arguments = ["predict", model, str(image), "-o", output, "-q"]
    if case == "unreadable image":
        (tmp_path / "broken.tif").write_text("not a TIFF")
        arguments[2] = str(tmp_path / "broken.tif")
    elif case == "labels of another shape":
        tifffile.imwrite(tmp_path / "small.tif", np.ones((40, 40), np.uint16))
        arguments = ["evaluate", model, str(image), str(tmp_path / "small.tif"), "-q"]
    elif case == "damaged weights":
        copy = tmp_path / tiny_model.name
        copy.write_bytes(tiny_model.read_bytes())
        weights = tiny_model.with_suffix(".safetensors").read_bytes()
        copy.with_suffix(".safetensors").write_bytes(weights[:-20] + bytes(20))
        arguments[1] = str(copy)
    elif case == "not a model file":
        (tmp_path / "model.json").write_text("{not json")
        arguments[1] = str(tmp_path / "model.json")
    elif case == "unknown model name":
        arguments[1] = "no-such-model"
    elif case == "missing --output":
        arguments = arguments[:3]
    elif case == "unknown licence":
        arguments = ["export", model, "--format", "bioimageio", "-o", output, "--license", "FOO"]
        pytest.importorskip("bioimageio.spec", reason="install the export extra")

    assert main(arguments) == expected
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ctrl_c_exits_130_and_writes_nothing(crops, tiny_model, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, like the core's

    monkeypatch.setattr("napari_unet_lab.core.predict.segment.iter_segment", interrupted)
    arguments = ["predict", str(tiny_model), str(crops), "-o", str(tmp_path), "-q"]

    assert main(arguments) == cli.EXIT_INTERRUPTED
    assert list(tmp_path.iterdir()) == []
    assert "interrupted" in capsys.readouterr().err


def test_runs_as_python_dash_m(crops, tiny_model, tmp_path) -> None:
    arguments = ["predict", str(tiny_model), str(crops / "nuclei_1.tif"), "-o", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "napari_unet_lab", *arguments, "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "nuclei_1_objects.tif").is_file()
    assert "100%" in result.stderr  # progress goes to stderr, results to stdout
    assert "nuclei_1_objects.tif" in result.stdout


def test_the_command_line_loads_no_gui_package() -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from napari_unet_lab.cli.main import build_parser
        build_parser().parse_args(["predict", "nuclei", "x.tif", "-o", "out"])
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {GUI_PACKAGES!r})))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
