"""The npe2 reader and OME-Zarr writer functions, called the way napari calls them."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.larger_than_memory import predict_to_zarr
from napari_unet_lab.readers import get_reader, get_tiff_reader
from napari_unet_lab.writers import write_labels_tiff, write_labels_zarr


def _read(path):
    reader = get_reader(str(path))
    assert reader is not None
    return reader(str(path))


def test_labels_written_by_the_writer_open_lazily_with_their_scale(tmp_path) -> None:
    labels = np.random.default_rng(0).integers(0, 9, (600, 700)).astype(np.uint16)
    meta = {"scale": [0.65, 0.65], "units": ["micrometer", "micrometer"], "name": "nuclei"}

    (path,) = write_labels_zarr(str(tmp_path / "nuclei"), labels, meta)

    assert path == str(tmp_path / "nuclei.zarr")
    ((data, layer_meta, kind),) = _read(path)
    assert kind == "labels"
    assert layer_meta["multiscale"] and isinstance(data[0], da.Array)  # 700 px: two levels
    np.testing.assert_array_equal(data[0].compute(), labels)
    np.testing.assert_array_equal(data[1].compute(), labels[::2, ::2])
    assert layer_meta["scale"] == (0.65, 0.65)
    assert layer_meta["units"] == ("micrometer", "micrometer")
    assert layer_meta["name"] == "nuclei"


def test_writer_refuses_to_replace_an_existing_store(tmp_path) -> None:
    """napari's save dialog does not ask about folders, so the writer never replaces one."""
    labels = np.ones((8, 8), np.uint8)
    (path,) = write_labels_zarr(str(tmp_path / "labels.zarr"), labels, {})

    with pytest.raises(FileExistsError):
        write_labels_zarr(path, labels * 2, {})

    ((data, _, _),) = _read(path)
    np.testing.assert_array_equal(data.compute(), labels)


def test_reader_declines_stores_and_files_that_are_not_ours(tmp_path) -> None:
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.create_array("image", shape=(4, 4), dtype="uint8")
    foreign = zarr.open_group(tmp_path / "ome.zarr", mode="w", zarr_format=2)
    foreign.create_array("0", shape=(4, 4), dtype="uint8")
    foreign.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    (tmp_path / "image.tif").write_bytes(b"II*\0")
    ours = write_labels_zarr(str(tmp_path / "ours.zarr"), np.ones((4, 4), np.uint8), {})[0]

    for path in ("plain.zarr", "ome.zarr", "image.tif", "missing.zarr"):
        assert get_reader(str(tmp_path / path)) is None
    assert get_reader([ours, ours]) is None
    assert get_reader([ours]) is not None


def test_prediction_store_opens_as_probability_images_and_label_layers(tmp_path) -> None:
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "nucleus"])
    image = np.random.default_rng(0).random((2, 90, 70), dtype=np.float32)
    store = predict_to_zarr(
        UNet(config), info, image, tmp_path / "p.zarr", scale=(2.0, 0.5, 0.5), units="µm"
    )

    layers = _read(store)

    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("p background probability", "image"),
        ("p nucleus probability", "image"),
        ("p classes", "labels"),
        ("p objects", "labels"),
    ]
    for data, meta, _ in layers:
        assert isinstance(data, da.Array)
        assert data.shape == (2, 90, 70)
        assert meta["scale"] == (2.0, 0.5, 0.5)
    assert not layers[0][1]["visible"] and layers[1][1]["visible"]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_label_tiff_written_by_the_writer_opens_with_scale_and_units(tmp_path, dtype) -> None:
    """Both TIFF dialects (ImageJ for 8/16 bit, JSON for wider ids) keep the pixel size."""
    labels = np.arange(5 * 6 * 7, dtype=dtype).reshape(5, 6, 7)
    meta = {"scale": [2.0, 0.65, 0.5], "units": ["micrometer"] * 3}
    (path,) = write_labels_tiff(str(tmp_path / "cells.tif"), labels, meta)

    reader = get_tiff_reader(path)
    assert reader is not None
    ((data, layer_meta, kind),) = reader(path)

    assert kind == "labels"
    assert data.dtype == dtype
    np.testing.assert_array_equal(data, labels)
    assert layer_meta == {
        "name": "cells",
        "scale": (2.0, 0.65, 0.5),
        "units": ("micrometer", "micrometer", "micrometer"),
    }


def test_uncalibrated_label_tiff_opens_without_units(tmp_path) -> None:
    (path,) = write_labels_tiff(str(tmp_path / "plain.tif"), np.ones((4, 4), np.uint8), {})

    ((_, layer_meta, _),) = get_tiff_reader(path)(path)

    assert layer_meta == {"name": "plain", "scale": (1.0, 1.0)}


def test_tiff_reader_leaves_other_tiffs_to_napari(tmp_path) -> None:
    tifffile.imwrite(tmp_path / "raw.tif", np.ones((4, 4), np.uint16))
    (tmp_path / "broken.tif").write_bytes(b"II*\0")
    ours = write_labels_tiff(str(tmp_path / "ours.tif"), np.ones((4, 4), np.uint8), {})[0]

    for name in ("raw.tif", "broken.tif", "missing.tif"):
        assert get_tiff_reader(str(tmp_path / name)) is None
    assert get_tiff_reader([ours, ours]) is None
