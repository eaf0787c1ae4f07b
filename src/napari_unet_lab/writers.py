"""The napari writer contributions: save a Labels layer as TIFF or OME-Zarr, with its pixel size."""

from __future__ import annotations

import os
from typing import Any

from napari_unet_lab.core.formats.ome_zarr import write_labels_ome_zarr
from napari_unet_lab.core.formats.tiff import save_labels_tiff


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write one napari Labels layer to a compressed TIFF (npe2 single-layer writer).

    Parameters
    ----------
    path : str
        Destination chosen in napari's save dialog; ``.tif`` is appended if it has no
        extension.
    data : array-like or list of array-like
        The layer's labels, 2D or a 3D stack; the dtype is kept. Of a multiscale layer,
        the full-resolution level is written.
    meta : dict
        The layer's attributes as napari passes them; ``scale`` and ``units`` are stored.

    Returns
    -------
    list of str
        The path written.
    """
    if not os.path.splitext(path)[1]:
        path = f"{path}.tif"
    if meta.get("multiscale"):
        data = data[0]  # full resolution; the smaller levels are napari's display pyramid
    units = meta.get("units")
    if units is not None:
        # napari gives pint units; the core takes their names ("micrometer", "pixel").
        units = [str(unit) for unit in units]
    # napari's save dialog has already asked before replacing an existing file.
    written = save_labels_tiff(path, data, scale=meta.get("scale"), units=units, overwrite=True)
    return [str(written)]


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Write one napari Labels layer to an OME-Zarr store (npe2 single-layer writer).

    Parameters
    ----------
    path : str
        Destination chosen in napari's save dialog; ``.zarr`` is appended if it has no
        extension. An existing store is never replaced: napari's dialog does not ask
        about folders, so it is refused with a message and the user picks another name.
    data : array-like or list of array-like
        The layer's labels (NumPy or dask, 2D to 4D), written chunk by chunk with a
        pyramid of smaller levels for viewing. Of a multiscale layer, the
        full-resolution level is written and the pyramid rebuilt.
    meta : dict
        The layer's attributes as napari passes them; ``scale``, ``units`` and
        ``name`` are stored.

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    FileExistsError
        If `path` exists, with a message for the user.
    """
    if not os.path.splitext(path)[1]:
        path = f"{path}.zarr"
    if os.path.exists(path):
        # napari shows this text as it is: say what to do in the save dialog
        raise FileExistsError(
            f"{os.path.basename(path)} already exists and was left as it is: save again "
            "with another name, or delete the old one first."
        )
    if meta.get("multiscale"):
        data = data[0]
    units = meta.get("units")
    if units is not None:
        units = [str(unit) for unit in units]  # pint units -> "micrometer", "pixel"
    written = write_labels_ome_zarr(
        path, data, scale=meta.get("scale"), units=units, name=meta.get("name")
    )
    return [str(written)]
