"""In a real napari viewer: Labels save as OME-Zarr and open again, lazily, with their scale."""

from __future__ import annotations

import dask.array as da
import numpy as np
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.larger_than_memory import predict_to_zarr


def test_labels_layer_saves_as_ome_zarr_and_opens_again_lazily(
    make_napari_viewer, tmp_path
) -> None:
    viewer = make_napari_viewer()
    _, labels = viewer.open_sample("napari-unet-lab", "nuclei")
    labels.scale = (0.65, 0.65)
    labels.units = ("um", "um")
    viewer.layers.selection = {labels}
    path = str(tmp_path / "nuclei_1_labels.zarr")

    written = viewer.layers.save(path, selected=True, plugin="napari-unet-lab")
    (layer,) = viewer.open(path, plugin="napari-unet-lab")

    assert written == [path]
    assert type(layer).__name__ == "Labels"
    assert layer.multiscale  # 696 px wide: a second level for viewing
    assert isinstance(layer.data[0], da.Array)
    np.testing.assert_array_equal(np.asarray(layer.data[0]), labels.data)
    np.testing.assert_allclose(layer.scale, (0.65, 0.65))
    assert [str(unit) for unit in layer.units] == ["micrometer", "micrometer"]


def test_prediction_store_opens_as_lazy_layers(make_napari_viewer, tmp_path) -> None:
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "nucleus"])
    image = np.random.default_rng(0).random((700, 300), dtype=np.float32)
    store = predict_to_zarr(UNet(config), info, image, tmp_path / "p.zarr", scale=(0.5, 0.5))
    viewer = make_napari_viewer()

    layers = viewer.open(str(store), plugin="napari-unet-lab")

    assert [type(layer).__name__ for layer in layers] == ["Image", "Image", "Labels", "Labels"]
    for layer in layers:
        assert layer.multiscale and isinstance(layer.data[0], da.Array)
        assert layer.data[0].shape == (700, 300)
        np.testing.assert_allclose(layer.scale, (0.5, 0.5))
