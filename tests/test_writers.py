"""The npe2 writer function, called the way napari calls it."""

from __future__ import annotations

import numpy as np

from napari_unet_lab.core.formats.tiff import load_labels_tiff
from napari_unet_lab.writers import write_labels_tiff


def test_writer_appends_tif_and_replaces_after_napari_asked(tmp_path) -> None:
    """The save dialog has confirmed overwriting, so the writer may replace the file."""
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    (tmp_path / "labels.tif").write_bytes(b"old")

    written = write_labels_tiff(str(tmp_path / "labels"), labels, {"scale": [1.0, 2.0]})

    assert written == [str(tmp_path / "labels.tif")]
    read, scale = load_labels_tiff(written[0])
    assert read.dtype == np.int32
    np.testing.assert_array_equal(read, labels)
    assert scale == (1.0, 2.0)


def test_writer_keeps_units_and_writes_full_resolution_of_multiscale(tmp_path) -> None:
    """napari passes pint units (their str() is e.g. 'micrometer') and pyramids as lists."""
    full = np.arange(16, dtype=np.uint16).reshape(4, 4)
    meta = {"scale": [0.5, 0.5], "units": ["micrometer", "micrometer"], "multiscale": True}

    (path,) = write_labels_tiff(str(tmp_path / "labels.tiff"), [full, full[::2, ::2]], meta)

    read, scale = load_labels_tiff(path)
    np.testing.assert_array_equal(read, full)
    assert scale == (0.5, 0.5)
