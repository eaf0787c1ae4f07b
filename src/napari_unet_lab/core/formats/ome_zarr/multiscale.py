"""Multiscale images in OME-Zarr 0.4: levels, their metadata, and reading them lazily.

A multiscale image is a zarr group whose ``multiscales`` attribute names its
resolution levels (arrays ``0``, ``1``, ...) with their axes, pixel sizes and
units. Every level is written and read chunk by chunk, so images larger than
memory never have to fit in it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from numcodecs import Blosc

from ...progress import Progress
from .axes import Axis

NGFF_VERSION = "0.4"

# Blosc with byte shuffle: fast, and the compressor every zarr reader has.
_COMPRESSOR = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


@dataclass
class Multiscale:
    """A multiscale image opened lazily from OME-Zarr.

    Attributes
    ----------
    levels : list of dask.array.Array
        Full resolution first, then each smaller level.
    axes : tuple of Axis
        One per dimension of the levels.
    scale : tuple of float
        Pixel size of the full-resolution level, per axis.
    translate : tuple of float
        Position of its first pixel, per axis (0 unless the file says otherwise).
    name : str
        The image's name, if the file gives one.
    attributes : dict
        All attributes of the group, for metadata beyond OME's.
    """

    levels: list[da.Array]
    axes: tuple[Axis, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    name: str
    attributes: dict[str, Any]

    @property
    def units(self) -> tuple[str | None, ...]:
        """The unit of each axis (None for pixels)."""
        return tuple(axis.unit for axis in self.axes)


def pyramid_shapes(
    shape: Sequence[int], levels: int | None = None, smallest: int = 512
) -> list[tuple[int, ...]]:
    """Return the shape of each level, halving Y and X (rounding up) from one to the next.

    Parameters
    ----------
    shape : sequence of int
        Full-resolution shape, Y and X last.
    levels : int or None
        Number of levels; None adds levels until Y and X both fit in `smallest`.
    smallest : int
        See `levels`.

    Examples
    --------
    >>> pyramid_shapes((3, 700, 1500))
    [(3, 700, 1500), (3, 350, 750), (3, 175, 375)]
    """
    shapes = [tuple(int(n) for n in shape)]
    while (levels is None and max(shapes[-1][-2:]) > smallest) or (
        levels is not None and len(shapes) < levels
    ):
        *stack, height, width = shapes[-1]
        if height == 1 and width == 1:
            break
        shapes.append((*stack, math.ceil(height / 2), math.ceil(width / 2)))
    return shapes


def create_multiscale(
    group: zarr.Group,
    shape: Sequence[int],
    dtype: Any,
    axes: Sequence[Axis],
    scale: Sequence[float],
    *,
    name: str,
    chunks: Sequence[int],
    levels: int | None = None,
    label: dict[str, Any] | None = None,
) -> list[zarr.Array]:
    """Create the (empty) arrays and OME metadata of a multiscale image in `group`.

    Parameters
    ----------
    group : zarr.Group
        Where the levels go, as arrays ``0``, ``1``, ...
    shape, dtype
        Of the full-resolution level; each further level halves Y and X.
    axes : sequence of Axis
        One per dimension.
    scale : sequence of float
        Pixel size of the full-resolution level per axis; Y and X double per level.
    name : str
        Name of the image.
    chunks : sequence of int
        Chunk shape of every level.
    levels : int or None
        See `pyramid_shapes`.
    label : dict, optional
        The ``image-label`` attribute, for a label image.

    Returns
    -------
    list of zarr.Array
        The levels, full resolution first; fill them with `iter_fill_pyramid`.
    """
    scale = [float(s) for s in scale]
    if len(axes) != len(shape) or len(scale) != len(shape):
        raise ValueError(f"need one axis and one scale per dimension of shape {tuple(shape)}")
    if not all(math.isfinite(s) and s > 0 for s in scale):
        raise ValueError(f"pixel sizes must be positive and finite; got {scale}")
    arrays, datasets = [], []
    for level, level_shape in enumerate(pyramid_shapes(shape, levels, smallest=max(chunks[-2:]))):
        arrays.append(
            group.create_array(
                str(level),
                shape=level_shape,
                chunks=tuple(min(c, n) for c, n in zip(chunks, level_shape, strict=True)),
                dtype=dtype,
                fill_value=0,
                compressors=[_COMPRESSOR],
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
        )
        factor = 2**level
        level_scale = [*scale[:-2], scale[-2] * factor, scale[-1] * factor]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": level_scale}],
            }
        )
    multiscale = {
        "version": NGFF_VERSION,
        "name": name,
        "axes": [axis.to_json() for axis in axes],
        "datasets": datasets,
        "type": "nearest",
        "metadata": {
            "description": "every second pixel along Y and X of the level above (no smoothing)",
            "method": "napari_unet_lab.core.formats.ome_zarr.iter_fill_pyramid",
        },
    }
    group.attrs["multiscales"] = [multiscale]
    if label is not None:
        group.attrs["image-label"] = {"version": NGFF_VERSION, **label}
    return arrays


def iter_copy_blocks(source: Any, target: zarr.Array) -> Generator[Progress, None, None]:
    """Copy an array-like into a zarr array one chunk row at a time, yielding progress.

    Only one band of chunks is in memory at once; dask arrays are computed band by band.
    """
    if tuple(source.shape) != tuple(target.shape):
        raise ValueError(f"shape {tuple(source.shape)} does not fit {tuple(target.shape)}")
    bands = list(_chunk_bands(target))
    for done, key in enumerate(bands, 1):
        target[key] = np.asarray(source[key])
        yield Progress(done, len(bands), "writing")


def iter_fill_pyramid(arrays: Sequence[zarr.Array]) -> Generator[Progress, None, None]:
    """Fill each level after the first from the level above: every second pixel in Y and X.

    Taking pixels rather than averaging keeps label values (and class probabilities)
    values that occur at full resolution.
    """
    for level in range(1, len(arrays)):
        above, below = arrays[level - 1], arrays[level]
        bands = list(_chunk_bands(below))
        for done, key in enumerate(bands, 1):
            *stack, rows = key
            source_rows = slice(2 * rows.start, 2 * rows.stop, 2)
            below[key] = above[(*stack, source_rows, slice(None, None, 2))]
            yield Progress(done, len(bands), f"resolution level {level} of {len(arrays) - 1}")


def _chunk_bands(array: zarr.Array):
    """Keys of whole-width bands, one chunk high, covering the array."""
    *stack_shape, height, _ = array.shape
    *stack_chunks, rows, _ = array.chunks
    for stack_start in np.ndindex(
        *(math.ceil(n / c) for n, c in zip(stack_shape, stack_chunks, strict=True))
    ):
        stack = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(stack_start, stack_chunks, stack_shape, strict=True)
        )
        for top in range(0, height, rows):
            yield (*stack, slice(top, min(top + rows, height)))


def multiscales_of(attributes: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Return the ``multiscales`` metadata of a group (OME-Zarr 0.4 or 0.5), or None."""
    found = attributes.get("multiscales")
    if found is None and isinstance(attributes.get("ome"), dict):
        found = attributes["ome"].get("multiscales")  # 0.5 nests it under "ome"
    return found if isinstance(found, list) and found else None


def read_ome_zarr(path_or_group: str | os.PathLike | zarr.Group) -> Multiscale:
    """Open an OME-Zarr multiscale image (or label image) lazily.

    Parameters
    ----------
    path_or_group : str, path-like or zarr.Group
        A group with ``multiscales`` metadata.

    Returns
    -------
    Multiscale
        Its levels as dask arrays (nothing is read yet), axes, pixel size and units.

    Raises
    ------
    ValueError
        If the group has no OME-Zarr multiscale metadata.
    """
    if isinstance(path_or_group, zarr.Group):
        group, fallback_name = path_or_group, path_or_group.basename or "image"
    else:
        group = zarr.open_group(path_or_group, mode="r")
        fallback_name = Path(path_or_group).stem
    attributes = dict(group.attrs)
    multiscales = multiscales_of(attributes)
    if multiscales is None:
        raise ValueError(
            f"the zarr store {group.store} is not an OME-Zarr image (no multiscales metadata)"
        )
    multiscale = multiscales[0]
    levels = [da.from_zarr(group[dataset["path"]]) for dataset in multiscale["datasets"]]
    ndim = levels[0].ndim
    axes_json = multiscale.get("axes") or [{"name": n} for n in "tczyx"[-ndim:]]
    axes = tuple(
        Axis(axis["name"], axis.get("type"), axis.get("unit"))
        if isinstance(axis, dict)
        else Axis(str(axis))  # 0.3 listed names only
        for axis in axes_json
    )
    scale, translate = np.ones(ndim), np.zeros(ndim)
    for transforms in (
        multiscale["datasets"][0].get("coordinateTransformations", []),
        multiscale.get("coordinateTransformations", []),  # applies to every level, after
    ):
        for transform in transforms:
            if transform.get("type") == "scale" and "scale" in transform:
                factor = np.asarray(transform["scale"], dtype=float)
                scale, translate = scale * factor, translate * factor
            elif transform.get("type") == "translation" and "translation" in transform:
                translate = translate + np.asarray(transform["translation"], dtype=float)
    return Multiscale(
        levels=levels,
        axes=axes,
        scale=tuple(float(s) for s in scale),
        translate=tuple(float(t) for t in translate),
        name=str(multiscale.get("name") or fallback_name),
        attributes=attributes,
    )
