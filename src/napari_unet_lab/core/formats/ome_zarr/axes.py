"""Axes of OME-Zarr images: names, kinds, and the units OME-Zarr allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Length units as people write them -> the UDUNITS-2 names OME-Zarr requires; None: pixels.
_UNIT_SPELLINGS = {
    "": None,
    "pixel": None,
    "pixels": None,
    "px": None,
    "nm": "nanometer",
    "nanometre": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",  # micro sign
    "μm": "micrometer",  # Greek mu
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "m": "meter",
    "metre": "meter",
    "å": "angstrom",
    "s": "second",
    "ms": "millisecond",
}
_OME_UNITS = {
    *(
        prefix + "meter"
        for prefix in (
            "yocto zepto atto femto pico nano micro milli centi deci "
            "deca hecto kilo mega giga tera peta exa zetta yotta"
        ).split()
    ),
    "meter",
    "angstrom",
    "foot",
    "inch",
    "mile",
    "parsec",
    "yard",
    *(p + "second" for p in ("", "milli", "micro", "nano", "pico", "kilo")),
    "minute",
    "hour",
    "day",
}

# Blosc with byte shuffle: fast, and the compressor every zarr reader has.


@dataclass(frozen=True)
class Axis:
    """One axis of an OME-Zarr image.

    Attributes
    ----------
    name : str
        ``"y"``, ``"x"``, ``"z"``, ``"t"``, ``"c"``, ...
    type : str or None
        ``"space"``, ``"time"``, ``"channel"``, or None if unknown.
    unit : str or None
        A UDUNITS-2 unit name (``"micrometer"``), or None for pixels.
    """

    name: str
    type: str | None = "space"
    unit: str | None = None

    def to_json(self) -> dict[str, str]:
        """Return the axis as OME-Zarr writes it."""
        entry = {"name": self.name}
        if self.type is not None:
            entry["type"] = self.type
        if self.unit is not None:
            entry["unit"] = self.unit
        return entry


def ome_unit(unit: str | None) -> str | None:
    """Return the OME-Zarr (UDUNITS-2) name of a unit, None for pixels.

    Raises
    ------
    ValueError
        If OME-Zarr has no such unit.

    Examples
    --------
    >>> ome_unit("µm"), ome_unit("micrometer"), ome_unit("pixel")
    ('micrometer', 'micrometer', None)
    """
    if unit is None:
        return None
    text = str(unit).strip()
    key = text.lower()
    if key in _UNIT_SPELLINGS:
        return _UNIT_SPELLINGS[key]
    if key in _OME_UNITS:
        return key
    raise ValueError(f"OME-Zarr has no unit {unit!r}; use e.g. 'micrometer' or 'nanometer'")


def label_axes(ndim: int, units: str | Sequence[str | None] | None = None) -> tuple[Axis, ...]:
    """Name the axes of a label image: ``(y, x)``, ``(z, y, x)`` or ``(t, z, y, x)``.

    Parameters
    ----------
    ndim : int
        2, 3 or 4.
    units : str or sequence of str, optional
        One unit for all axes, or one per axis (for time, a time unit).
    """
    names = {2: "yx", 3: "zyx", 4: "tzyx"}.get(ndim)
    if names is None:
        raise ValueError(f"labels must have 2 to 4 dimensions (t, z, y, x); got {ndim}")
    if units is None or isinstance(units, str):
        units = [units] * ndim
    units = list(units)
    if len(units) != ndim:
        raise ValueError(f"got {len(units)} units for {ndim} dimensions")
    return tuple(
        Axis(name, "time" if name == "t" else "space", ome_unit(unit))
        for name, unit in zip(names, units, strict=True)
    )
