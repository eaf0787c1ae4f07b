"""What users get wrong ends in one plain message and an exit code, never a traceback.

Options out of range are refused before any work (exit 2); RGB TIFFs follow the
napari widgets' rule (channels last turned channels first, or their luminance for a
grayscale model); a damaged model file ends in exit 4 from every subcommand that
takes a model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_unet_lab.cli.common import (
    EXIT_BAD_MODEL,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    InputError,
)
from napari_unet_lab.cli.main import main
from napari_unet_lab.cli.model_images import training_data
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.formats.tiff import load_labels_tiff
from napari_unet_lab.core.images import grayscale
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.samples import load_sample


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A grayscale crop, its labels, the same pixels as an RGB TIFF and channels first."""
    folder = tmp_path_factory.mktemp("files")
    image, labels = load_sample("nuclei_1")
    image, labels = image[:64, :80], labels[:64, :80]
    colours = np.stack([image, image // 2, image // 3], axis=-1).astype(np.uint8)
    tifffile.imwrite(folder / "gray.tif", image)
    tifffile.imwrite(folder / "gray_labels.tif", labels)
    tifffile.imwrite(folder / "rgb.tif", colours, photometric="rgb")
    tifffile.imwrite(folder / "rgb_labels.tif", labels)
    tifffile.imwrite(folder / "planes.tif", np.moveaxis(colours, -1, 0), photometric="minisblack")
    return folder


def tiny(folder, in_channels: int = 1, name: str = "model"):
    torch.manual_seed(0)
    config = UNetConfig(in_channels=in_channels, base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "object"], name=name)
    return save_model(folder / name, UNet(config), info)


# ------------------------------------------------------------------ option ranges
TRAIN = ["train", "images", "labels", "-o", "OUT/model"]
PREDICT = ["predict", "nuclei", "image.tif", "-o", "OUT"]
EVALUATE = ["evaluate", "nuclei", "image.tif", "labels.tif"]

OPTION_CHECKS = {
    "seed below 0": (TRAIN, "--seed", "-1", "argument --seed: must be at least 0, got -1"),
    "seed above 2**64 - 1": (TRAIN, "--seed", str(2**64), "must be at most 2**64 - 1"),
    "zero steps": (TRAIN, "--steps", "0", "argument --steps: must be at least 1, got 0"),
    "zero batch": (TRAIN, "--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    "zero patch size": (TRAIN, "--patch-size", "0", "argument --patch-size: must be at least 1"),
    "negative validate-every": (TRAIN, "--validate-every", "-5", "must be at least 0, got -5"),
    "negative patience": (TRAIN, "--patience", "-1", "argument --patience: must be at least 0"),
    "not a whole number": (TRAIN, "--steps", "1.5", "argument --steps: invalid integer value"),
    "validation share of 1": (
        TRAIN, "--validation-share", "1", "argument --validation-share: must be at least 0 and "
        "below 1 (something must be left), got 1"
    ),
    "share not a number": (TRAIN, "--validation-share", "half", "must be a number, got 'half'"),
    "NaN share": (TRAIN, "--validation-share", "nan", "must be at least 0 and below 1"),
    "zero learning rate": (
        TRAIN, "--learning-rate", "0", "argument --learning-rate: must be a number above 0, got 0"
    ),
    "negative learning rate": (TRAIN, "--learning-rate", "-0.001", "must be a number above 0"),
    "infinite learning rate": (TRAIN, "--learning-rate", "inf", "must be a number above 0"),
    "negative w0": (TRAIN, "--w0", "-1", "argument --w0: must be a number of 0 or more, got -1"),
    "zero sigma": (TRAIN, "--sigma", "0", "argument --sigma: must be a number above 0, got 0"),
    "NaN sigma": (TRAIN, "--sigma", "nan", "argument --sigma: must be a number above 0"),
    "depth beyond 6": (TRAIN, "--depth", "7", "argument --depth: must be 1 to 6, got 7"),
    "zero base channels": (TRAIN, "--base-channels", "0", "must be at least 1, got 0"),
    "negative tile size": (
        PREDICT, "--tile-size", "-8", "argument --tile-size: must be auto, 0 or a number of "
        "pixels, got '-8'"
    ),
    "negative tiles per batch": (PREDICT, "--batch-size", "-1", "must be at least 0, got -1"),
    "threshold above 1": (
        EVALUATE, "--threshold", "1.5", "argument --threshold: must be between 0 and 1, got 1.5"
    ),
    "negative smallest object": (EVALUATE, "--min-size", "-1", "argument --min-size: must be"),
    "unknown device": (PREDICT, "--device", "tpu", "--device tpu: not a device name; choose"),
}  # fmt: skip


@pytest.mark.parametrize("kind", OPTION_CHECKS)
def test_options_out_of_range_are_usage_errors(kind, tmp_path, capsys) -> None:
    command, option, value, message = OPTION_CHECKS[kind]
    arguments = [part.replace("OUT", str(tmp_path / "out")) for part in command]

    assert main([*arguments, option, value]) == EXIT_USAGE

    err = capsys.readouterr().err
    assert f"{PROG} {command[0]}: error: " in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before any work


# ------------------------------------------------------------------------- RGB
def test_an_rgb_tiff_segments_as_its_channels_first(files, tmp_path, capsys) -> None:
    """An RGB TIFF gives bit for bit what the same pixels give channels first, as in napari."""
    model_path = tiny(tmp_path, in_channels=3)
    output = tmp_path / "out"
    for name in ("rgb", "planes"):
        arguments = ["predict", str(model_path), str(files / f"{name}.tif"), "-o", str(output)]
        assert main([*arguments, "-q", "--device", "cpu", "--tile-size", "0"]) == EXIT_OK

    from_rgb, _ = load_labels_tiff(output / "rgb_objects.tif")
    from_planes, _ = load_labels_tiff(output / "planes_objects.tif")
    np.testing.assert_array_equal(from_rgb, from_planes)
    model, info = load_model(model_path)
    colours = tifffile.imread(files / "rgb.tif")
    expected = segment(model, info, colours, rgb=True, device="cpu", tile_size=None).objects
    np.testing.assert_array_equal(from_rgb, expected)

    arguments = ["evaluate", str(model_path), str(files / "rgb.tif"), str(files / "rgb_labels.tif")]
    assert main([*arguments, "-q", "--device", "cpu"]) == EXIT_OK
    assert "rgb.tif" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["predict", "evaluate", "train --from"])
def test_a_grayscale_model_takes_an_rgb_tiffs_luminance_and_says_so(
    command, files, tmp_path, capsys
) -> None:
    """Issue #12: an RGB TIFF for a grayscale model is converted, and the output says so."""
    model_path, image = tiny(tmp_path, name="gray"), str(files / "rgb.tif")
    output = tmp_path / "out"
    arguments = {
        "predict": ["predict", str(model_path), image, "-o", str(output), "--tile-size", "0"],
        "evaluate": ["evaluate", str(model_path), image, str(files / "rgb_labels.tif")],
        "train --from": ["train", image, str(files / "rgb_labels.tif"), "-o", str(tmp_path / "m"),
                         "--from", str(model_path), "--steps", "1", "--batch-size", "1",
                         "--patch-size", "44"],
    }[command]  # fmt: skip

    assert main([*arguments, "-q", "--device", "cpu"]) == EXIT_OK

    out, err = capsys.readouterr()
    note = "rgb.tif: RGB image converted to grayscale (luminance) for a grayscale model"
    assert note in out and "Traceback" not in err
    if command == "predict":  # the objects of the luminance, bit for bit
        from_rgb, _ = load_labels_tiff(output / "rgb_objects.tif")
        model, info = load_model(model_path)
        luminance = grayscale(tifffile.imread(files / "rgb.tif"))
        expected = segment(model, info, luminance, device="cpu", tile_size=None).objects
        np.testing.assert_array_equal(from_rgb, expected)


def test_training_reads_rgb_channels_first_and_sizes_a_new_model_by_it(files) -> None:
    data = training_data([(files / "rgb.tif", files / "rgb_labels.tif")], in_channels=None)

    np.testing.assert_array_equal(
        data.images[0], np.moveaxis(tifffile.imread(files / "rgb.tif"), -1, 0)
    )
    np.testing.assert_array_equal(data.labels[0], tifffile.imread(files / "rgb_labels.tif"))
    assert data.names == ["rgb.tif"]
    gray = training_data([(files / "gray.tif", files / "gray_labels.tif")], in_channels=1)
    assert gray.images[0].shape == (64, 80)  # one channel: (Y, X), as the GUI trains on

    luminance = training_data([(files / "rgb.tif", files / "rgb_labels.tif")], 1, "gray")
    expected = grayscale(tifffile.imread(files / "rgb.tif"))
    np.testing.assert_array_equal(luminance.images[0], expected)  # a grayscale model: luminance
    mixed = [(files / f"{name}.tif", files / f"{name}_labels.tif") for name in ("rgb", "gray")]
    with pytest.raises(InputError, match="the model takes 3 channels"):
        training_data(mixed, in_channels=None)  # the first image sets the channels


def test_train_from_scratch_on_rgb_tiffs_makes_a_three_channel_model(files, tmp_path) -> None:
    output = tmp_path / "colour"
    status = main(
        ["train", str(files / "rgb.tif"), str(files / "rgb_labels.tif"), "-o", str(output),
         "--steps", "1", "--batch-size", "1", "--patch-size", "44", "--depth", "2",
         "--base-channels", "4", "-q", "--device", "cpu"]
    )  # fmt: skip
    assert status == EXIT_OK
    model, _ = load_model(output.with_suffix(".json"))
    assert model.config.in_channels == 3


# --------------------------------------------------------------- damaged models
def _edit_description(json_path, change) -> None:
    description = json.loads(json_path.read_text())
    change(description)
    json_path.write_text(json.dumps(description))


DAMAGES = {
    "not JSON": ("model.json", lambda json_path: json_path.write_text("{not json")),
    "empty description": ("model.json", lambda json_path: json_path.write_text("")),
    "a list, not a description": ("model.json", lambda json_path: json_path.write_text("[1]")),
    "no architecture": (
        "model.json", lambda p: _edit_description(p, lambda d: d.pop("architecture"))
    ),
    "architecture of the wrong type": (
        "model.json", lambda p: _edit_description(p, lambda d: d.update(architecture="unet"))
    ),
    "impossible architecture": (
        "model.json", lambda p: _edit_description(p, lambda d: d["architecture"].update(depth=99))
    ),
    "format version not a number": (
        "model.json", lambda p: _edit_description(p, lambda d: d.update(format_version="two"))
    ),
    "weights entry not an object": (
        "model.json", lambda p: _edit_description(p, lambda d: d.update(weights="model"))
    ),
    "weights missing": ("model.safetensors", lambda p: p.with_suffix(".safetensors").unlink()),
    "weights damaged": (
        "model.safetensors",
        lambda p: p.with_suffix(".safetensors").write_bytes(
            p.with_suffix(".safetensors").read_bytes()[:-20] + bytes(20)
        ),
    ),
}  # fmt: skip


@pytest.mark.parametrize("command", ["predict", "evaluate", "train --from", "export"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_model_file_is_exit_4_from_every_subcommand(
    damage, command, files, tmp_path, capsys
) -> None:
    (tmp_path / "model").mkdir()
    model_path = tiny(tmp_path / "model")
    named, spoil = DAMAGES[damage]
    spoil(model_path)
    image, labels, output = files / "gray.tif", files / "gray_labels.tif", tmp_path / "out"
    arguments = {
        "predict": ["predict", str(model_path), str(image), "-o", str(output), "-q"],
        "evaluate": ["evaluate", str(model_path), str(image), str(labels), "-q"],
        "train --from": ["train", str(image), str(labels), "-o", str(tmp_path / "m"), "--from",
                         str(model_path), "-q", "--steps", "1"],
        "export": ["export", str(model_path), "--format", "torchscript", "-o",
                   str(output / "m.pt")],
    }[command]  # fmt: skip

    assert main(arguments) == EXIT_BAD_MODEL

    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} {command.split()[0]}: error: ")
    assert f" {named} " in err  # the file at fault, named as it is spelled, never capitalised
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not output.exists()
