"""``--object-diameter`` of ``predict`` and ``evaluate``: parsed, refused with a message, used."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from skimage.transform import rescale

from napari_unet_lab.cli.common import EXIT_OK, EXIT_USAGE
from napari_unet_lab.cli.main import main
from napari_unet_lab.cli.predict import object_diameter
from napari_unet_lab.core.formats.tiff import load_labels_tiff
from napari_unet_lab.samples import load_sample


@pytest.mark.parametrize(
    "text, value", [("auto", "auto"), ("AUTO", "auto"), ("trained", None), ("56", 56.0)]
)
def test_the_object_diameter_reads_auto_trained_or_pixels(text, value):
    assert object_diameter(text) == value


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("value", ["0", "-5", "nan", "large"])
def test_an_unusable_object_diameter_is_a_usage_error(command, value, tmp_path, capsys):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint16))
    arguments = {
        "predict": ["predict", "nuclei", str(image), "-o", str(tmp_path / "out")],
        "evaluate": ["evaluate", "nuclei", str(image), str(image)],
    }[command]
    assert main([*arguments, "--object-diameter", value]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        f"argument --object-diameter: must be auto, trained or a number of pixels above 0, "
        f"got {value}"
    ) in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_predict_estimates_the_object_diameter_and_prints_it(tmp_path, capsys):
    image, truth = load_sample("nuclei_1")
    large = rescale(image[:160, :200].astype(np.float32), 2, order=1, preserve_range=True)
    tifffile.imwrite(tmp_path / "large.tif", large.astype(np.float32))
    out = tmp_path / "out"
    assert main(["predict", "nuclei", str(tmp_path / "large.tif"), "-o", str(out), "-q"]) == EXIT_OK
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("large.tif: ") and "(objects about " in line
    factor = float(re.search(r"resized ([0-9.]+)×", line).group(1))
    assert factor == pytest.approx(0.5, rel=0.1)  # objects twice the training size
    labels, _ = load_labels_tiff(out / "large_objects.tif")
    assert labels.shape == large.shape  # objects on the image's own grid
