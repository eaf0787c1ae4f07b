"""Label export: instance labels to compressed TIFF files that keep dtype and pixel size.

Files are written so that other tools read them correctly: 8- and 16-bit labels get ImageJ
metadata (Fiji shows the calibration), every file gets resolution tags, and wider integer
types, which ImageJ cannot hold, are written as standard TIFFs whose description carries
the exact scale as JSON.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from .atomic import write_atomically

# Integer dtypes that ImageJ (and so Fiji) opens natively.
IMAGEJ_LABEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

# Spellings of length units mapped to the names ImageJ uses; None means "uncalibrated".
_UNIT_NAMES = {
    "": None,
    "pixel": None,
    "pixels": None,
    "px": None,
    "nm": "nm",
    "nanometer": "nm",
    "nanometre": "nm",
    "um": "micron",
    "µm": "micron",  # micro sign
    "μm": "micron",  # Greek mu
    "micron": "micron",
    "microns": "micron",
    "micrometer": "micron",
    "micrometre": "micron",
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "cm": "cm",
    "centimeter": "cm",
    "centimetre": "cm",
    "m": "m",
    "meter": "m",
    "metre": "m",
    "inch": "inch",
    "in": "inch",
}

# ImageJ's unit names as napari (pint) spells them; other units are not read back.
_NAPARI_UNITS = {
    "nm": "nanometer",
    "micron": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "inch": "inch",
}

# The TIFF Software tag of every file this module writes: how its files are recognised.
SOFTWARE = "napari-unet-lab"

# Pixels per centimetre = this factor / pixel size, for the standard TIFF resolution tags.
_PER_CENTIMETRE = {"nm": 1e7, "micron": 1e4, "mm": 10.0, "cm": 1.0, "m": 0.01}

# Resolution units of files from other software that we read as micrometres per pixel.
_MICROMETRES_PER_RESOLUTION_UNIT = {
    tifffile.RESUNIT.CENTIMETER: 10_000,
    tifffile.RESUNIT.MILLIMETER: 1_000,
    tifffile.RESUNIT.MICROMETER: 1,
}


def save_labels_tiff(
    path: str | os.PathLike,
    labels: np.ndarray,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Save an instance label image as a compressed TIFF, atomically.

    Parameters
    ----------
    path : str or path-like
        Where to write; the folder must exist. ``.tif`` or ``.tiff`` is conventional.
    labels : array-like of integers, shape (Y, X) or (Z, Y, X)
        Instance labels, 0 for background. The dtype is kept exactly.
    scale : sequence of float, optional
        Pixel size along each axis, e.g. ``(0.65, 0.65)`` or ``(2.0, 0.65, 0.65)`` for a stack,
        as napari's ``layer.scale``. Default: 1 per axis.
    units : str or sequence of str, optional
        Unit of `scale`, one for all axes or one per axis, e.g. ``"µm"``, ``"micrometer"`` or
        ``"nm"``. ``None`` or ``"pixel"`` means uncalibrated.
    overwrite : bool
        Replace an existing file at `path`. Without it an existing file is never touched.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    ValueError
        If `labels` is not an integer array with 2 or 3 dimensions, or `scale` or `units`
        do not fit it.
    FileExistsError
        If `path` exists and `overwrite` is false.

    Notes
    -----
    The file is first written to a hidden temporary file in the same folder, flushed to disk,
    and only then moved to `path`, so `path` never holds a half-written file: an error or a
    crash mid-way leaves the old file (or none) in place. On an error the temporary file is
    removed; only a killed process can leave a ``.<name>.<random>.tmp`` file behind.

    uint8 and uint16 labels are written in ImageJ's TIFF dialect (unit, z spacing) so Fiji
    shows the calibration; other integer dtypes (int16, int32, uint32, int64, ...) are written
    as standard TIFFs, which Fiji opens through Bio-Formats.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> labels = np.array([[0, 1], [2, 2]], dtype=np.int32)
    >>> path = save_labels_tiff(f"{folder}/labels.tif", labels, scale=(0.5, 0.5), units="µm")
    >>> read, scale = load_labels_tiff(path)
    >>> read.dtype, scale
    (dtype('int32'), (0.5, 0.5))
    """
    labels = _as_label_array(labels)
    scale = _as_scale(scale, labels.ndim)
    units = _as_units(units, labels.ndim)
    arguments = _tiff_arguments(labels, scale, units)
    return write_atomically(
        path, lambda file: tifffile.imwrite(file, labels, **arguments), overwrite=overwrite
    )


def load_labels_tiff(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a label TIFF written by :func:`save_labels_tiff` (or by ImageJ/Fiji).

    Parameters
    ----------
    path : str or path-like
        The TIFF file.

    Returns
    -------
    labels : ndarray
        The labels, with the dtype they were saved with.
    scale : tuple of float
        Pixel size per axis, in the unit the file was saved with; 1 per axis when the file
        has no calibration this function trusts (ImageJ metadata, this package's metadata, or
        resolution tags in metric units, which are read as micrometres).
    """
    with tifffile.TiffFile(path) as tif:
        labels = tif.asarray()
        page = tif.pages.first
        imagej = tif.imagej_metadata
        shaped = tif.shaped_metadata
        if shaped and "scale" in shaped[0]:
            return labels, tuple(float(s) for s in shaped[0]["scale"])

        x_pixel, y_pixel = _pixel_size_from_tags(page, imagej)
        if imagej is not None and "spacing" in imagej:
            # save_labels_tiff always writes spacing for stacks; ImageJ drops a 1-plane Z axis.
            labels = labels.reshape((-1, *labels.shape[-2:]))
            return labels, (float(imagej["spacing"]), y_pixel, x_pixel)
        return labels, (1.0,) * (labels.ndim - 2) + (y_pixel, x_pixel)


def labels_tiff_units(path: str | os.PathLike) -> tuple[str | None, ...]:
    """Return the unit of each axis of a label TIFF, as napari names units.

    Parameters
    ----------
    path : str or path-like
        A TIFF written by :func:`save_labels_tiff` (or by ImageJ/Fiji).

    Returns
    -------
    tuple of str or None
        One per axis of the labels :func:`load_labels_tiff` returns, e.g.
        ``("micrometer", "micrometer")``; None where the axis is uncalibrated or its
        unit is not a length napari knows.
    """
    with tifffile.TiffFile(path) as tif:
        shaped = tif.shaped_metadata
        imagej = tif.imagej_metadata
        ndim = len(tif.series[0].shape)
        if shaped and "units" in shaped[0]:
            stored = tuple(shaped[0]["units"])
        elif imagej is not None:
            x_unit = imagej.get("unit")
            y_unit = imagej.get("yunit", x_unit)
            z_unit = imagej.get("zunit", x_unit)
            if "spacing" in imagej:
                ndim = 3  # ImageJ drops a 1-plane Z axis; load_labels_tiff puts it back
            stored = ((z_unit,) if ndim == 3 else ()) + (y_unit, x_unit)
        else:
            stored = (None,) * ndim
    known = (_UNIT_NAMES.get(str(unit).strip().lower()) if unit else None for unit in stored)
    return tuple(_NAPARI_UNITS.get(unit) for unit in known)


def written_by_this_package(path: str | os.PathLike) -> bool:
    """Return True if `path` is a TIFF that :func:`save_labels_tiff` wrote.

    Cheap (reads the first page's tags only) and never raises: anything that is
    not such a TIFF, unreadable files included, gives False.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages.first.software == SOFTWARE
    except Exception:  # noqa: BLE001  # truncated or foreign files fail in many ways: not ours
        return False


def _as_label_array(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Labels must be an integer array (one id per object), not {labels.dtype}; "
            "convert a mask with `mask.astype(np.uint8)` first."
        )
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"Labels must be 2D (Y, X) or a 3D stack (Z, Y, X); got shape {labels.shape}."
        )
    # Native byte order, so that the dtype read back compares equal to the one written.
    return labels.astype(labels.dtype.newbyteorder("="), copy=False)


def _as_scale(scale: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if scale is None:
        return (1.0,) * ndim
    scale = tuple(float(s) for s in scale)
    if len(scale) != ndim:
        raise ValueError(f"Got {len(scale)} scale values for {ndim}D labels: {scale}.")
    if not all(math.isfinite(s) and s > 0 for s in scale):
        raise ValueError(f"Pixel sizes must be positive and finite; got {scale}.")
    return scale


def _as_units(units: str | Sequence[str | None] | None, ndim: int) -> tuple[str | None, ...]:
    if units is None or isinstance(units, str):
        units = (units,) * ndim
    units = tuple(units)
    if len(units) != ndim:
        raise ValueError(f"Got {len(units)} units for {ndim}D labels: {units}.")
    return tuple(_unit_name(u) for u in units)


def _unit_name(unit: str | None) -> str | None:
    if unit is None:
        return None
    text = str(unit).strip()
    if text.lower() in _UNIT_NAMES:
        return _UNIT_NAMES[text.lower()]
    # ImageJ stores the unit as a `key=value` line of ASCII text.
    if not text.isascii() or not text.isprintable() or "=" in text:
        raise ValueError(f"Cannot store the unit {unit!r} in a TIFF file.")
    return text


def _tiff_arguments(
    labels: np.ndarray, scale: tuple[float, ...], units: tuple[str | None, ...]
) -> dict:
    axes = "YX" if labels.ndim == 2 else "ZYX"
    x_unit = units[-1]
    arguments = {
        # minisblack: never guess RGB from a last axis of length 3 or 4.
        "photometric": "minisblack",
        "compression": "zlib",
        "resolution": (1.0 / scale[-1], 1.0 / scale[-2]),
        "software": SOFTWARE,
    }
    if labels.dtype in IMAGEJ_LABEL_DTYPES:
        metadata: dict = {"axes": axes}
        if x_unit is not None:
            metadata["unit"] = x_unit
        if units[-2] != x_unit:
            metadata["yunit"] = units[-2] or "pixel"
        if labels.ndim == 3:
            metadata["spacing"] = scale[0]
            if units[0] != x_unit:
                metadata["zunit"] = units[0] or "pixel"
        # ImageJ's own convention: resolution in pixels per `unit`, ResolutionUnit NONE.
        arguments.update(imagej=True, metadata=metadata, resolutionunit="NONE")
    else:
        metadata = {"axes": axes, "scale": list(scale), "units": list(units)}
        arguments.update(metadata=metadata, **_standard_resolution(scale, x_unit))
    return arguments


def _standard_resolution(scale: tuple[float, ...], unit: str | None) -> dict:
    # Baseline TIFF knows only inches and centimetres; other readers (Bio-Formats) use these.
    if unit in _PER_CENTIMETRE:
        factor = _PER_CENTIMETRE[unit]
        return {
            "resolution": (factor / scale[-1], factor / scale[-2]),
            "resolutionunit": "CENTIMETER",
        }
    if unit == "inch":
        return {"resolutionunit": "INCH"}
    return {"resolutionunit": "NONE"}


def _pixel_size_from_tags(page: tifffile.TiffPage, imagej: dict | None) -> tuple[float, float]:
    x_tag, y_tag = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x_tag is None or y_tag is None or 0 in (*x_tag.value, *y_tag.value):
        return 1.0, 1.0
    unit = page.tags.valueof("ResolutionUnit", default=tifffile.RESUNIT.INCH)
    if imagej is not None or unit == tifffile.RESUNIT.NONE:
        per_unit = Fraction(1)
    elif unit in _MICROMETRES_PER_RESOLUTION_UNIT:
        per_unit = Fraction(_MICROMETRES_PER_RESOLUTION_UNIT[unit])
    else:
        # Inches (the TIFF default, often a meaningless 72 dpi) are not a microscope's unit.
        return 1.0, 1.0
    # The tags are rationals (pixels per unit); inverting them exactly keeps 0.65 as 0.65.
    x_pixels, y_pixels = Fraction(*x_tag.value), Fraction(*y_tag.value)
    return float(per_unit / x_pixels), float(per_unit / y_pixels)
