"""``predict`` with a zarr image: an OME-Zarr store out, the object size used printed."""

from __future__ import annotations

import numpy as np

from napari_unet_lab.cli.common import EXIT_OK
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.formats.ome_zarr import write_labels_ome_zarr
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.larger_than_memory import open_prediction
from napari_unet_lab.samples import load_sample


def _ome_zarr_image(folder, image):
    # an OME-Zarr image with a pixel size; any OME-Zarr image would do, ours are at hand
    return write_labels_ome_zarr(folder / "cells.ome.zarr", image, (0.65, 0.65), "µm")


def test_predict_a_zarr_image_with_a_given_diameter(tmp_path, capsys):
    image = load_sample("nuclei_1")[0][:100, :110]
    path = _ome_zarr_image(tmp_path, image)
    _, info = load_model(builtin_models()["nuclei"])
    out = tmp_path / "out"

    code = main(["predict", "nuclei", str(path), "-o", str(out), "-q", "--object-diameter", "20"])

    assert code == EXIT_OK
    store = out / "cells_prediction.zarr"
    prediction = open_prediction(store)
    count = int(prediction.objects.levels[0].max().compute())
    line = capsys.readouterr().out.strip().splitlines()[-1]
    factor = info.object_diameter / 20
    assert line == (
        f"cells.ome.zarr: {count} objects (objects about 20 px, resized {factor:.2f}×) -> {store}"
    )
    assert prediction.objects.levels[0].shape == image.shape  # on the image's own grid
    assert prediction.objects.scale == (0.65, 0.65)


def test_predict_a_zarr_image_prints_the_estimate(tmp_path, capsys):
    path = _ome_zarr_image(tmp_path, load_sample("nuclei_2")[0][:100, :110])
    out = tmp_path / "out"

    assert main(["predict", "nuclei", str(path), "-o", str(out), "-q"]) == EXIT_OK  # auto

    settings = open_prediction(out / "cells_prediction.zarr").settings
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert settings["object_diameter_setting"] == "auto"
    estimate = settings["object_diameter"]
    assert estimate is not None  # real nuclei: objects to measure
    assert f" (objects about {estimate:.0f} px, resized {settings['scale']:.2f}×) -> " in line


def test_predict_a_blank_zarr_image_says_no_objects_were_found(tmp_path, capsys):
    path = _ome_zarr_image(tmp_path, np.zeros((64, 80), np.uint16))

    assert main(["predict", "nuclei", str(path), "-o", str(tmp_path / "out"), "-q"]) == EXIT_OK

    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(
        "cells.ome.zarr: 0 objects (No objects were found in the central 64 × 80 pixels to "
        "estimate the object size from, so the image was segmented at its own size, as the "
        "model was trained.) -> "
    )
