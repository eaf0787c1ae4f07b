"""Label export keeps what a label image is: its ids, its dtype and its pixel size."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet_lab.core.formats.tiff import (
    labels_tiff_units,
    load_labels_tiff,
    save_labels_tiff,
    written_by_this_package,
)


def label_image(dtype, shape=(64, 80), count=30, seed=0) -> np.ndarray:
    """Blocky instance labels like a segmentation: large flat regions, many ids."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=dtype)
    for label in range(1, count + 1):
        y, x = rng.integers(0, shape[-2] - 8), rng.integers(0, shape[-1] - 8)
        labels[..., y : y + 8, x : x + 8] = label
    return labels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32])
def test_round_trip_keeps_dtype_values_and_scale(tmp_path, dtype) -> None:
    labels = label_image(dtype)
    labels[0, 0] = np.iinfo(dtype).max  # the extreme id survives too

    path = save_labels_tiff(tmp_path / "labels.tif", labels, scale=(0.65, 0.325), units="µm")
    read, scale = load_labels_tiff(path)

    assert read.dtype == labels.dtype
    np.testing.assert_array_equal(read, labels)
    assert scale == (0.65, 0.325)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_stack_round_trip_keeps_z_spacing(tmp_path, dtype) -> None:
    labels = label_image(dtype, shape=(5, 40, 50))
    path = save_labels_tiff(tmp_path / "stack.tif", labels, scale=(2.0, 0.5, 0.25), units="um")

    read, scale = load_labels_tiff(path)

    assert read.dtype == labels.dtype
    np.testing.assert_array_equal(read, labels)
    assert scale == (2.0, 0.5, 0.25)


def test_default_scale_is_one_pixel(tmp_path) -> None:
    path = save_labels_tiff(tmp_path / "labels.tif", label_image(np.int32))
    assert load_labels_tiff(path)[1] == (1.0, 1.0)


def test_file_is_compressed(tmp_path) -> None:
    labels = label_image(np.uint16, shape=(256, 256), count=200)
    path = save_labels_tiff(tmp_path / "labels.tif", labels)

    assert path.stat().st_size < labels.nbytes / 5
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_uint16_gets_imagej_calibration(tmp_path) -> None:
    """Fiji reads the pixel size from ImageJ metadata and the resolution tags."""
    labels = label_image(np.uint16, shape=(3, 40, 50))
    path = save_labels_tiff(tmp_path / "labels.tif", labels, (1.5, 0.65, 0.65), "micrometer")

    with tifffile.TiffFile(path) as tif:
        metadata = tif.imagej_metadata
        x_resolution, y_resolution = tif.pages.first.resolution
    assert metadata is not None
    assert metadata["unit"] == "micron"
    assert metadata["spacing"] == 1.5
    assert metadata["slices"] == 3
    assert x_resolution == pytest.approx(1 / 0.65)
    assert y_resolution == pytest.approx(1 / 0.65)


def test_wide_integers_get_standard_resolution_tags(tmp_path) -> None:
    """ImageJ cannot hold int32; other readers still find the pixel size, in centimetres."""
    path = save_labels_tiff(tmp_path / "labels.tif", label_image(np.int32), (0.5, 0.25), "µm")

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert tif.imagej_metadata is None
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert page.resolution == pytest.approx((1e4 / 0.25, 1e4 / 0.5))


def test_refuses_to_overwrite(tmp_path) -> None:
    path = tmp_path / "labels.tif"
    path.write_bytes(b"precious")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_labels_tiff(path, label_image(np.uint16))

    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_overwrite_replaces_the_file(tmp_path) -> None:
    path = tmp_path / "labels.tif"
    path.write_bytes(b"old")
    labels = label_image(np.uint16)

    save_labels_tiff(path, labels, overwrite=True)

    np.testing.assert_array_equal(tifffile.imread(path), labels)


@pytest.mark.parametrize("overwrite", [False, True])
def test_failure_mid_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch, overwrite):
    """Writing is atomic: an error while writing never damages what was there."""
    old = tmp_path / "labels.tif"
    old.write_bytes(b"precious")
    target = old if overwrite else tmp_path / "new.tif"

    def write_half_then_fail(file, *args, **kwargs):
        file.write(b"II*\0 half a TIFF")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_labels_tiff(target, label_image(np.uint16), overwrite=overwrite)

    assert old.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((8, 8), np.float32),
        np.zeros((8, 8), bool),
        np.zeros((8,), np.uint16),
        np.zeros((2, 2, 8, 8), np.uint16),
    ],
    ids=["float", "bool", "1d", "4d"],
)
def test_rejects_what_is_not_a_label_image(tmp_path, labels) -> None:
    with pytest.raises(ValueError, match="Labels must be"):
        save_labels_tiff(tmp_path / "labels.tif", labels)
    assert list(tmp_path.iterdir()) == []


def test_rejects_a_scale_that_does_not_fit(tmp_path) -> None:
    with pytest.raises(ValueError, match="scale"):
        save_labels_tiff(tmp_path / "labels.tif", label_image(np.uint16), scale=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        save_labels_tiff(tmp_path / "labels.tif", label_image(np.uint16), scale=(0.0, 1.0))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_units_read_back_as_napari_spells_them(tmp_path, dtype) -> None:
    """ImageJ's "micron" comes back as "micrometer"; an uncalibrated axis as None."""
    labels = label_image(dtype, shape=(3, 20, 30))
    path = save_labels_tiff(
        tmp_path / "stack.tif", labels, scale=(2.0, 0.5, 0.5), units=("pixel", "µm", "µm")
    )

    assert labels_tiff_units(path) == (None, "micrometer", "micrometer")
    assert written_by_this_package(path)


def test_only_this_package_files_are_recognised(tmp_path) -> None:
    tifffile.imwrite(tmp_path / "other.tif", label_image(np.uint16), imagej=True)
    (tmp_path / "text.tif").write_text("not a TIFF")

    assert not written_by_this_package(tmp_path / "other.tif")
    assert not written_by_this_package(tmp_path / "text.tif")
    assert not written_by_this_package(tmp_path / "missing.tif")
    assert labels_tiff_units(tmp_path / "other.tif") == (None, None)
