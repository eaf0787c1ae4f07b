"""OME-Zarr label images and multiscale groups, written and read with zarr directly.

OME-Zarr (NGFF, https://ngff.openmicroscopy.org/0.4/) is a small JSON convention on
top of zarr: a group whose ``multiscales`` attribute names its resolution levels
(arrays ``0``, ``1``, ...) with their axes, pixel sizes and units. Label images
carry an ``image-label`` attribute as well. We write version 0.4 (zarr format 2,
``/``-separated chunk keys), which Fiji, QuPath, napari-ome-zarr and neuroglancer
read; we read 0.4 and 0.5.

Every array is written and read chunk by chunk, so labels larger than memory
(dask arrays, other zarr arrays) can be saved and opened: reading gives dask
arrays, and nothing is loaded until napari asks for a region.
"""

from .axes import Axis, label_axes, ome_unit
from .labels import (
    PLUGIN_KEY,
    STORE_FORMAT_VERSION,
    iter_write_labels_ome_zarr,
    store_kind,
    write_labels_ome_zarr,
)
from .multiscale import (
    NGFF_VERSION,
    Multiscale,
    create_multiscale,
    iter_copy_blocks,
    iter_fill_pyramid,
    multiscales_of,
    pyramid_shapes,
    read_ome_zarr,
)

__all__ = [
    "NGFF_VERSION",
    "PLUGIN_KEY",
    "STORE_FORMAT_VERSION",
    "Axis",
    "Multiscale",
    "create_multiscale",
    "iter_copy_blocks",
    "iter_fill_pyramid",
    "iter_write_labels_ome_zarr",
    "label_axes",
    "multiscales_of",
    "ome_unit",
    "pyramid_shapes",
    "read_ome_zarr",
    "store_kind",
    "write_labels_ome_zarr",
]
