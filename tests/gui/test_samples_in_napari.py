"""In a real napari viewer: File ▸ Open Sample opens the other kinds of nuclei (DSB 2018)."""

from __future__ import annotations

import numpy as np
import pytest

# key in the manifest: (menu entry, layer name, shape, dtype, rgb, nuclei in the ground truth)
DSB2018_SAMPLES = {
    "nuclei_large": (
        "Nuclei, large (fluorescence, DSB 2018)",
        "nuclei_large",
        (360, 360),
        np.uint8,
        False,
        17,
    ),
    "nuclei_brightfield": (
        "Nuclei, brightfield (dark on bright, DSB 2018)",
        "nuclei_brightfield",
        (512, 512),
        np.uint8,
        False,
        27,
    ),
    "nuclei_tissue": (
        "Nuclei in stained tissue (RGB, DSB 2018)",
        "nuclei_tissue",
        (256, 320, 3),
        np.uint8,
        True,
        25,
    ),
}


@pytest.mark.parametrize("key", DSB2018_SAMPLES)
def test_open_sample_adds_the_dsb2018_image_and_its_ground_truth(make_napari_viewer, key) -> None:
    from npe2 import PluginManager

    _, name, shape, dtype, rgb, nuclei = DSB2018_SAMPLES[key]
    viewer = make_napari_viewer()

    layers = viewer.open_sample("napari-unet-lab", key)

    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    image, labels = layers
    assert (image.name, labels.name) == (name, f"{name} ground truth")
    assert image.data.shape == shape and image.data.dtype == dtype
    assert image.rgb is rgb
    if rgb:  # stained tissue shows its own colours, not a stretched range
        assert list(image.contrast_limits) == [0, 255]
    assert labels.data.shape == shape[:2] and labels.data.dtype == np.uint16
    assert len(np.unique(labels.data)) - 1 == nuclei
    assert image.metadata["sample"] == labels.metadata["sample"] == name
    assert "DSB 2018" in image.metadata["source"]
    assert len(viewer.layers) == 2
    # The menu entry napari shows for it says what kind of nuclei it is.
    manifest = PluginManager.instance().get_manifest("napari-unet-lab")
    menu_entries = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert menu_entries[key] == DSB2018_SAMPLES[key][0]
