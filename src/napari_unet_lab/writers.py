"""The napari writer contribution: save a Labels layer as a TIFF with its pixel size."""

from __future__ import annotations

import os
from typing import Any

from napari_unet_lab.core.export import save_labels_tiff


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
