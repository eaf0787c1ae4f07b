"""Images opened for prediction without reading their pixels: arrays, zarr and OME-Zarr."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from ..formats.ome_zarr import Axis, read_ome_zarr


@dataclass(frozen=True)
class ImageSource:
    """An image opened for prediction without reading its pixels.

    Attributes
    ----------
    data : array-like
        The pixels, ``(..., Y, X)``: a dask array for zarr stores, else what was given.
    axes : tuple of Axis or None
        One per dimension of `data`, where the file names them (OME-Zarr).
    scale : tuple of float or None
        Pixel size per dimension of `data`, where the file gives it.
    channel_axis : int or None
        The axis the file marks as channels, if any.
    name : str
        A short name for the image.
    translate : tuple of float or None
        Position of the first pixel per dimension of `data`, where the file gives it.
    """

    data: Any
    axes: tuple[Axis, ...] | None = None
    scale: tuple[float, ...] | None = None
    channel_axis: int | None = None
    name: str = "image"
    translate: tuple[float, ...] | None = None


def open_image(source: Any) -> ImageSource:
    """Open an image lazily: an array, a zarr array, or a zarr / OME-Zarr path.

    Parameters
    ----------
    source : array-like, zarr.Array, str or path-like
        NumPy and dask arrays are used as they are. Zarr arrays, and paths to a
        zarr array or to an OME-Zarr image (its full-resolution level), are
        wrapped in dask, so nothing is read until a tile is. Axes of length 1
        other than Y and X are dropped from OME-Zarr images (``(1, 1, 1, Y, X)``
        becomes ``(Y, X)``).

    Returns
    -------
    ImageSource
    """
    name = "image"
    image_axes: tuple[Axis, ...] | None = None
    image_scale: tuple[float, ...] | None = None
    image_translate: tuple[float, ...] | None = None
    channel_axis = None
    if isinstance(source, (str, os.PathLike)):
        name = Path(source).stem
        source = zarr.open(source, mode="r")
        if isinstance(source, zarr.Group):
            multiscale = read_ome_zarr(source)
            data, image_axes, image_scale = multiscale.levels[0], multiscale.axes, multiscale.scale
            keep = [
                axis for axis in range(data.ndim) if data.shape[axis] > 1 or axis >= data.ndim - 2
            ]
            data = data[tuple(slice(None) if axis in keep else 0 for axis in range(data.ndim))]
            image_axes = tuple(image_axes[axis] for axis in keep)
            image_scale = tuple(image_scale[axis] for axis in keep)
            image_translate = tuple(multiscale.translate[axis] for axis in keep)
            channels = [i for i, axis in enumerate(image_axes) if axis.type == "channel"]
            channel_axis = channels[0] if channels else None
            name = multiscale.name
            source = data
    if isinstance(source, zarr.Array):
        source = da.from_zarr(source)
    return ImageSource(source, image_axes, image_scale, channel_axis, name, image_translate)
