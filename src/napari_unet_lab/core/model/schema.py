"""What a model file's JSON must hold, checked before anything is built from it.

A model file can come from anywhere: a colleague, a download, an old version of
the plugin, a disk that failed halfway. `description_problem` looks at every
field the plugin uses (types, required fields, sane sizes, the intensity
normalisation, the weights file name) and says in plain words what is wrong,
so that a damaged or hostile file is refused with one clear message instead of
a traceback, a huge allocation, or a file read from elsewhere on the disk.

Fields the plugin only shows (``training``, ``provenance``, ``metrics``) may hold
anything JSON can, as long as each is an object.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..config import UNetConfig

FORMAT_NAME = "napari-unet-lab model"
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"

# Sane bounds for the architecture, far beyond any useful U-Net, so that a
# damaged or hostile file cannot make the plugin allocate gigabytes.
ARCHITECTURE_BOUNDS = {
    "in_channels": (1, 256),  # image channels
    "n_classes": (2, 256),  # output classes, background included
    "depth": (1, 6),  # poolings
    "base_channels": (1, 512),  # channels at full resolution
}
WIDEST_LAYER = 2048  # channels at the bottom, base_channels * 2**depth; the paper's: 1024
LARGEST_PATCH = 65536  # pixels along one side of a training patch
PATCH_SIZE_KEYS = ("patch_size", "patch_input_size", "patch_output_size")
NORMALIZATION_METHODS = ("percentile", "fixed", "none")
# Images are normalised in float32: intensities, and the scale 1 / (high - low), must fit.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_SMALLEST_NORMAL = 1.1754943508222875e-38

_SHA256 = re.compile(r"[0-9a-f]{64}")


def description_problem(description: Any) -> str | None:
    """Say what makes a model description unusable, or return None if it is usable.

    Parameters
    ----------
    description : any
        The parsed JSON of a model file.

    Returns
    -------
    str or None
        The first problem found, in plain words starting in lower case (it
        follows "the model file x.json is not a valid model description: "), or None.

    Examples
    --------
    >>> description_problem({"format": FORMAT_NAME, "architecture": {"depth": 9}})
    'architecture.depth must be a whole number from 1 to 6, not 9'
    """
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        return f"it is not a {FORMAT_NAME} file"
    version = description.get("format_version", 0)  # files before versions had none
    if not _is_whole_number(version) or version < 0:
        return f"format_version must be a whole number, not {_shown(version)}"
    if version > FORMAT_VERSION:
        return "it was written by a newer napari-unet-lab; please update the plugin"
    for check in (
        _architecture_problem,
        _class_names_problem,
        _normalization_problem,
        _weights_problem,
        _texts_problem,
        _records_problem,
        _object_size_problem,
    ):
        problem = check(description)
        if problem is not None:
            return problem
    return None


def normalization_problem(normalization: Any) -> str | None:
    """Say what is wrong with an intensity normalisation, or return None if it is usable.

    Accepted: ``{"method": "percentile", "low": p, "high": q}`` with
    ``0 <= p < q <= 100``, ``{"method": "fixed", "low": a, "high": b}`` with finite
    ``a < b``, and ``{"method": "none"}``.

    Examples
    --------
    >>> normalization_problem({"method": "percentile", "high": 99.8})
    'normalization.low is missing'
    """
    if not isinstance(normalization, dict):
        return f"normalization must be an object, not {_shown(normalization)}"
    method = normalization.get("method", "percentile")
    if method not in NORMALIZATION_METHODS:
        return f"normalization.method must be one of {', '.join(NORMALIZATION_METHODS)}"
    if method == "none":
        return None
    for key in ("low", "high"):
        if key not in normalization:
            return f"normalization.{key} is missing"
        value = normalization[key]
        if not _is_number(value) or not math.isfinite(value):
            return f"normalization.{key} must be a finite number, not {_shown(value)}"
    low, high = normalization["low"], normalization["high"]
    if method == "percentile" and not 0 <= low < high <= 100:
        return f"normalization percentiles must satisfy 0 <= low < high <= 100, not {low}, {high}"
    if method == "fixed" and not low < high:  # else every pixel maps to 0: no objects
        return f"normalization.low must be below normalization.high, not {low}, {high}"
    if method == "fixed" and (problem := intensity_range_problem(low, high)) is not None:
        return f"normalization: {problem}"
    return None


def intensity_range_problem(low: Any, high: Any) -> str | None:
    """Say why intensities `low` and `high` cannot be mapped to 0 and 1, or return None.

    The mapping is done in float32 (`images.normalised`), so both must be
    finite float32 values with ``low <= high``, and ``1 / (high - low)`` must be
    a normal float32 too. ``low == high`` is accepted: a constant image, only
    shifted.

    Examples
    --------
    >>> intensity_range_problem(100.0, 1100.0) is None
    True
    >>> intensity_range_problem(5.0, 2.0)
    'the intensity mapped to 0 (5.0) is above the one mapped to 1 (2.0)'
    """
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        shown = f"{_shown(low)}, {_shown(high)}"
        return f"the intensities mapped to 0 and 1 must be numbers, not {shown}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"the intensities mapped to 0 and 1 must be finite numbers, not {low}, {high}"
    if low > high:
        return f"the intensity mapped to 0 ({low}) is above the one mapped to 1 ({high})"
    if max(abs(low), abs(high)) > FLOAT32_MAX:
        return f"the intensities {low}, {high} lie beyond what 32-bit images hold (±3.4e38)"
    if low < high and not FLOAT32_SMALLEST_NORMAL <= 1 / (high - low) <= FLOAT32_MAX:
        return (
            f"the intensities {low}, {high} are too close together or too far apart "
            "to map to 0 and 1"
        )
    return None


def is_plain_weights_file_name(name: Any) -> bool:
    """Tell whether `name` names a ``.safetensors`` file beside the JSON, and nothing else.

    Examples
    --------
    >>> [is_plain_weights_file_name(n) for n in ("a.safetensors", "../a.safetensors", 7)]
    [True, False, False]
    """
    return (
        isinstance(name, str)
        and len(name) <= 255
        and name.endswith(WEIGHTS_SUFFIX)
        and len(name) > len(WEIGHTS_SUFFIX)
        and not name.startswith(".")  # no "..", no hidden files
        and not any(mark in name for mark in ("/", "\\", ":", "\0"))  # no folders, no drives
    )


def _architecture_problem(description: dict[str, Any]) -> str | None:
    architecture = description.get("architecture")
    if architecture is None:
        return "architecture is missing"
    if not isinstance(architecture, dict):
        return f"architecture must be an object, not {_shown(architecture)}"
    unknown = sorted(set(map(str, architecture)) - set(UNetConfig.__dataclass_fields__))
    if unknown:
        return f"architecture has unknown settings: {', '.join(unknown)}"
    for key, (lowest, highest) in ARCHITECTURE_BOUNDS.items():
        value = architecture.get(key, getattr(UNetConfig, key))
        if not _is_whole_number(value) or not lowest <= value <= highest:
            return (
                f"architecture.{key} must be a whole number from {lowest} to {highest}, "
                f"not {_shown(value)}"
            )
    widest = architecture.get("base_channels", UNetConfig.base_channels) * 2 ** architecture.get(
        "depth", UNetConfig.depth
    )
    if widest > WIDEST_LAYER:
        return (
            f"the architecture is too large: {widest} channels at its bottom "
            f"(base_channels x 2^depth), at most {WIDEST_LAYER}"
        )
    padding, batch_norm = architecture.get("padding", "valid"), architecture.get("batch_norm", True)
    if padding not in ("valid", "same"):
        return f"architecture.padding must be valid or same, not {_shown(padding)}"
    if not isinstance(batch_norm, bool):
        return f"architecture.batch_norm must be true or false, not {_shown(batch_norm)}"
    return None


def _class_names_problem(description: dict[str, Any]) -> str | None:
    names = description.get("class_names")
    if names is None:
        return "class_names is missing"
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return f"class_names must be a list of names, not {_shown(names)}"
    n_classes = description["architecture"].get("n_classes", UNetConfig.n_classes)
    if len(names) != n_classes:
        return f"class_names has {len(names)} names for {n_classes} classes"
    return None


def _normalization_problem(description: dict[str, Any]) -> str | None:
    if "normalization" not in description:  # files before normalisation was recorded
        return None
    return normalization_problem(description["normalization"])


def _weights_problem(description: dict[str, Any]) -> str | None:
    if "weights" not in description:  # early files: the weights are <name>.safetensors
        return None
    weights = description["weights"]
    if not isinstance(weights, dict):
        return f"weights must be an object naming the weights file, not {_shown(weights)}"
    name = weights.get("file")
    if name is not None and not is_plain_weights_file_name(name):
        return (
            f"weights.file must be the name of a {WEIGHTS_SUFFIX} file in the same folder, "
            f"not {_shown(name)}"
        )
    checksum = weights.get("sha256")
    if checksum is not None and not (isinstance(checksum, str) and _SHA256.fullmatch(checksum)):
        return f"weights.sha256 must be 64 hexadecimal digits, not {_shown(checksum)}"
    return None


def _texts_problem(description: dict[str, Any]) -> str | None:
    for key in ("name", "description"):
        value = description.get(key, "")
        if not isinstance(value, str):
            return f"{key} must be text, not {_shown(value)}"
    return None


def _records_problem(description: dict[str, Any]) -> str | None:
    for key in ("training", "provenance", "metrics"):
        value = description.get(key)
        if value is not None and not isinstance(value, dict):
            return f"{key} must be an object, not {_shown(value)}"
    training = description.get("training") or {}
    settings = training.get("settings")
    if settings is not None and not isinstance(settings, dict):
        return f"training.settings must be an object, not {_shown(settings)}"
    for where, record in (("training", training), ("training.settings", settings or {})):
        for key in PATCH_SIZE_KEYS:
            value = record.get(key)
            if value is not None and not (_is_whole_number(value) and 1 <= value <= LARGEST_PATCH):
                return (
                    f"{where}.{key} must be a whole number from 1 to {LARGEST_PATCH}, "
                    f"not {_shown(value)}"
                )
    return None


def _object_size_problem(description: dict[str, Any]) -> str | None:
    # Files before object sizes were recorded have none: the model then predicts as trained.
    size = description.get("object_size")
    if size is None:
        return None
    if not isinstance(size, dict):
        return f"object_size must be an object, not {_shown(size)}"
    # shown_larger: how much larger than trained the network sees objects (at most 4 times)
    for key, highest in (
        ("diameter", LARGEST_PATCH),
        ("pixel_size", FLOAT32_MAX),
        ("shown_larger", 4.0),
    ):
        value = size.get(key)
        if value is not None and not (_is_number(value) and 0 < value <= highest):
            return f"object_size.{key} must be a positive number or null, not {_shown(value)}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any, longest: int = 40) -> str:
    """Show a JSON value as the file writes it, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= longest else text[: longest - 1] + "…"
