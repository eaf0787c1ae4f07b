"""The models shipped with the plugin, and which of them to offer for an image."""

from __future__ import annotations

import math
from collections.abc import Collection
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from ..images import grayscale
from .files import ModelFileError, read_model_info

# the built-in model offered first: nuclei of many kinds and sizes (benchmarks/README.md)
DEFAULT_MODEL = "nuclei_broad"
# the built-in model offered for RGB images: it takes the colours of stained tissue
RGB_MODEL = "nuclei_tissue"


def builtin_models() -> dict[str, Path]:
    """Return the models shipped with the plugin, by name, as paths to their JSON files.

    The default model (`DEFAULT_MODEL`) comes first, so every list of them offers it first.
    """
    folder = files("napari_unet_lab") / "models"
    if not folder.is_dir():
        return {}
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            path = Path(str(entry))
            try:
                found[read_model_info(path).name] = path
            except ModelFileError:
                continue  # a damaged built-in model is left out rather than breaking the list
    first = {DEFAULT_MODEL: found.pop(DEFAULT_MODEL)} if DEFAULT_MODEL in found else {}
    return {**first, **found}


def builtin_model_for(image: Any, rgb: bool, shipped: Collection[str] | None = None) -> str | None:
    """Return the name of the built-in model to offer for an image; None if none is shipped.

    Stained tissue, an RGB image whose pixels are mostly light (`mostly_light`), gets
    `RGB_MODEL`, which takes its colours, where it is shipped; every other image, RGB
    fluorescence included (bright nuclei on black, which `RGB_MODEL` never saw), gets
    `DEFAULT_MODEL`. `shipped`: the names of the built-in models, where the caller has read
    them already (`builtin_models` reads every file).
    """
    shipped = builtin_models() if shipped is None else shipped
    if rgb and RGB_MODEL in shipped and mostly_light(image):
        return RGB_MODEL
    return DEFAULT_MODEL if DEFAULT_MODEL in shipped else None


def mostly_light(image: Any, samples: int = 65_536, window: int = 1024) -> bool:
    """Whether most pixels of an RGB(A) image (colours last) are light, as in stained tissue.

    The median luminance of a regular sub-grid of about `samples` pixels of the first
    plane's central `window` × `window` pixels lies above the middle of its 1–99.8 % range.
    Cheap enough for a layer change on the GUI thread: a lazy (dask, zarr) slide reads only
    the chunks of that window, never every chunk of the image.
    """
    plane = image[(0,) * (image.ndim - 3)] if image.ndim > 3 else image
    top, left = (max(0, (size - window) // 2) for size in plane.shape[:2])
    plane = plane[top : top + window, left : left + window]
    step = max(1, math.ceil(math.sqrt(plane.shape[0] * plane.shape[1] / samples)))
    pixels = grayscale(np.asarray(plane[::step, ::step]))
    pixels = pixels[np.isfinite(pixels)]
    if pixels.size == 0:
        return False
    low, high = np.percentile(pixels, [1, 99.8])
    return bool(np.median(pixels) > (low + high) / 2)
