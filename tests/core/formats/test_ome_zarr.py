"""Label images saved as OME-Zarr read back exactly, with their pixel size, lazily."""

import json

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet_lab.core.formats.ome_zarr import (
    pyramid_shapes,
    read_ome_zarr,
    store_kind,
    write_labels_ome_zarr,
)


def _labels(shape, dtype=np.uint32, seed=0):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(dtype)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32, np.int64])
def test_labels_round_trip_exactly_with_dtype_scale_and_units(tmp_path, dtype):
    labels = _labels((70, 90), dtype)

    path = write_labels_ome_zarr(
        tmp_path / "labels.zarr", labels, scale=(0.65, 0.5), units="µm", name="nuclei"
    )

    image = read_ome_zarr(path)
    assert isinstance(image.levels[0], da.Array)  # lazy
    assert image.levels[0].dtype == dtype
    np.testing.assert_array_equal(image.levels[0].compute(), labels)
    assert image.scale == (0.65, 0.5)
    assert image.units == ("micrometer", "micrometer")
    assert image.name == "nuclei"
    assert store_kind(path) == "labels"
    assert _leftovers(tmp_path) == []


def test_larger_than_a_chunk_dask_labels_get_a_nearest_pyramid(tmp_path):
    """Each level takes every second pixel of the one above, so labels stay labels."""
    labels = _labels((3, 300, 260))
    lazy = da.from_array(labels, chunks=(1, 64, 64))

    path = write_labels_ome_zarr(
        tmp_path / "stack.zarr", lazy, scale=(2.0, 0.5, 0.5), units="nm", chunk_size=64
    )

    image = read_ome_zarr(path)
    assert [level.shape for level in image.levels] == pyramid_shapes(labels.shape, smallest=64)
    assert len(image.levels) == 4
    expected = labels
    for level in image.levels:
        np.testing.assert_array_equal(level.compute(), expected)
        expected = expected[:, ::2, ::2]
    assert image.scale == (2.0, 0.5, 0.5)
    assert [axis.name for axis in image.axes] == ["z", "y", "x"]
    metadata = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert metadata["datasets"][1]["coordinateTransformations"][0]["scale"] == [2.0, 1.0, 1.0]
    assert metadata["axes"][0] == {"name": "z", "type": "space", "unit": "nanometer"}


def test_an_existing_store_is_never_replaced_without_overwrite(tmp_path):
    path = tmp_path / "labels.zarr"
    write_labels_ome_zarr(path, _labels((20, 20), seed=1))
    before = read_ome_zarr(path).levels[0].compute()

    with pytest.raises(FileExistsError):
        write_labels_ome_zarr(path, _labels((20, 20), seed=2))

    np.testing.assert_array_equal(read_ome_zarr(path).levels[0].compute(), before)
    replacement = _labels((10, 30), seed=3)
    write_labels_ome_zarr(path, replacement, overwrite=True)
    np.testing.assert_array_equal(read_ome_zarr(path).levels[0].compute(), replacement)
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken(block):
        raise RuntimeError("disk on fire")

    lazy = da.zeros((200, 200), dtype=np.uint16, chunks=64).map_blocks(broken, dtype=np.uint16)

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_labels_ome_zarr(tmp_path / "labels.zarr", lazy, chunk_size=64)

    assert list(tmp_path.iterdir()) == []


def test_float_labels_and_bad_units_are_refused(tmp_path):
    with pytest.raises(ValueError, match="integers"):
        write_labels_ome_zarr(tmp_path / "a.zarr", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="unit"):
        write_labels_ome_zarr(tmp_path / "b.zarr", np.zeros((4, 4), np.uint8), units="furlong")
    assert list(tmp_path.iterdir()) == []


def test_store_kind_is_none_for_anything_not_ours(tmp_path):
    """Foreign stores are left to other readers: a plain zarr, someone else's OME-Zarr, files."""
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.create_array("data", shape=(4, 4), dtype="uint8")
    foreign = zarr.open_group(tmp_path / "foreign.zarr", mode="w", zarr_format=2)
    foreign.create_array("0", shape=(4, 4), dtype="uint8")
    foreign.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    (tmp_path / "file.zarr").write_text("not a store")

    for name in ("plain.zarr", "foreign.zarr", "file.zarr", "missing.zarr"):
        assert store_kind(tmp_path / name) is None
    # ... though we read someone else's OME-Zarr image when asked to
    assert read_ome_zarr(tmp_path / "foreign.zarr").levels[0].shape == (4, 4)
