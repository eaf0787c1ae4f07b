"""Label images saved as OME-Zarr, and telling our stores from other zarr stores."""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ...progress import Progress, run_to_end
from ..atomic import folder_written_atomically
from .axes import label_axes
from .multiscale import (
    create_multiscale,
    iter_copy_blocks,
    iter_fill_pyramid,
    multiscales_of,
)

# Our own attribute, beside OME's: says which of our stores a group is (see `store_kind`).
PLUGIN_KEY = "napari-unet-lab"
STORE_FORMAT_VERSION = 1


def write_labels_ome_zarr(
    path: str | os.PathLike,
    labels: Any,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    *,
    name: str | None = None,
    levels: int | None = None,
    chunk_size: int = 512,
    overwrite: bool = False,
) -> Path:
    """Save a label image as an OME-Zarr multiscale label image, atomically.

    Parameters
    ----------
    path : str or path-like
        The store to create, conventionally ending in ``.zarr``.
    labels : array-like of integers, shape (Y, X), (Z, Y, X) or (T, Z, Y, X)
        0 for background. NumPy, dask or zarr; written one band of chunks at a time,
        so it may be larger than memory. The dtype is kept.
    scale : sequence of float, optional
        Pixel size per axis (napari's ``layer.scale``); 1 by default.
    units : str or sequence of str, optional
        One unit for all axes or one per axis (``"µm"``, ``"micrometer"``, ...);
        None or ``"pixel"`` for uncalibrated axes.
    name : str, optional
        Name stored with the image (napari's layer name); the file name by default.
    levels : int or None
        Resolution levels, each half the size of the one before in Y and X
        (every second pixel, so labels stay labels). None: until the image fits
        in one `chunk_size` tile.
    chunk_size : int
        Chunk edge in Y and X.
    overwrite : bool
        Replace an existing store. Without it nothing existing is touched.

    Returns
    -------
    Path
        The store written.

    Raises
    ------
    FileExistsError
        If `path` exists and `overwrite` is false.
    ValueError
        If `labels` is not an integer array of 2 to 4 dimensions, or `scale` or
        `units` do not fit it.

    Notes
    -----
    The store is written to a hidden folder beside `path` and renamed to `path`
    once complete, so `path` never holds a half-written store.

    Examples
    --------
    >>> import tempfile
    >>> from napari_unet_lab.core.formats.ome_zarr import read_ome_zarr
    >>> folder = tempfile.mkdtemp()
    >>> labels = np.array([[0, 1], [2, 2]], dtype=np.uint16)
    >>> path = write_labels_ome_zarr(f"{folder}/labels.zarr", labels, (0.5, 0.5), "µm")
    >>> image = read_ome_zarr(path)
    >>> image.scale, image.units, image.levels[0].dtype.name
    ((0.5, 0.5), ('micrometer', 'micrometer'), 'uint16')
    """
    return run_to_end(
        iter_write_labels_ome_zarr(
            path,
            labels,
            scale,
            units,
            name=name,
            levels=levels,
            chunk_size=chunk_size,
            overwrite=overwrite,
        )
    )


def iter_write_labels_ome_zarr(
    path: str | os.PathLike,
    labels: Any,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    *,
    name: str | None = None,
    levels: int | None = None,
    chunk_size: int = 512,
    overwrite: bool = False,
) -> Generator[Progress, None, Path]:
    """Save labels as OME-Zarr, yielding progress; see `write_labels_ome_zarr`."""
    path = Path(path)
    dtype = np.dtype(labels.dtype)
    if dtype.kind == "b" or not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"labels must be integers (one id per object), not {dtype}; "
            "convert a mask with `mask.astype(np.uint8)` first"
        )
    axes = label_axes(labels.ndim, units)
    scale = (1.0,) * labels.ndim if scale is None else tuple(float(s) for s in scale)
    if len(scale) != labels.ndim:
        raise ValueError(f"got {len(scale)} scale values for {labels.ndim}D labels")
    chunks = (1,) * (labels.ndim - 2) + (chunk_size, chunk_size)
    with folder_written_atomically(path, overwrite=overwrite) as folder:
        group = zarr.open_group(folder, mode="w", zarr_format=2)
        arrays = create_multiscale(
            group,
            labels.shape,
            dtype.newbyteorder("="),
            axes,
            scale,
            name=name or path.stem,
            chunks=chunks,
            levels=levels,
            label={},
        )
        group.attrs[PLUGIN_KEY] = {"kind": "labels", "format_version": STORE_FORMAT_VERSION}
        yield from iter_copy_blocks(labels, arrays[0])
        yield from iter_fill_pyramid(arrays)
    return path


def store_kind(path: str | os.PathLike) -> str | None:
    """Tell which of our stores `path` is: ``"labels"``, ``"prediction"``, or None.

    None for anything else (other zarr stores, files, missing paths), without raising.
    """
    try:
        if not Path(path).is_dir():
            return None
        attributes = dict(zarr.open_group(path, mode="r").attrs)
    except Exception:  # not a zarr group, or unreadable: not ours
        return None
    ours = attributes.get(PLUGIN_KEY)
    if not isinstance(ours, dict) or multiscales_of(attributes) is None:
        return None
    kind = ours.get("kind")
    return kind if kind in ("labels", "prediction") else None
