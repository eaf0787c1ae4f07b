"""In a real napari viewer: samples open from the plugin, Labels save through its writer."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_unet_lab.core.formats.tiff import load_labels_tiff


def test_open_sample_adds_image_and_ground_truth(make_napari_viewer) -> None:
    viewer = make_napari_viewer()

    layers = viewer.open_sample("napari-unet-lab", "nuclei")

    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    image, labels = layers
    assert image.name == "nuclei_1"
    assert labels.name == "nuclei_1 ground truth"
    assert image.data.shape == labels.data.shape == (520, 696)
    assert len(viewer.layers) == 2


def test_labels_layer_saves_through_the_plugin_writer(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    _, labels = viewer.open_sample("napari-unet-lab", "nuclei")
    labels.scale = (0.65, 0.65)
    labels.units = ("um", "um")
    viewer.layers.selection = {labels}
    path = tmp_path / "nuclei_1_labels.tif"

    written = viewer.layers.save(str(path), selected=True, plugin="napari-unet-lab")

    assert written == [str(path)]
    saved = tifffile.imread(path)
    assert saved.dtype == labels.data.dtype
    np.testing.assert_array_equal(saved, labels.data)
    assert load_labels_tiff(path)[1] == (0.65, 0.65)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["unit"] == "micron"
