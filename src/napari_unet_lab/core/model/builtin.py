"""The models shipped with the plugin, and which of them to offer for an image."""

from __future__ import annotations

from collections.abc import Collection
from importlib.resources import files
from pathlib import Path

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


def builtin_model_for(rgb: bool, shipped: Collection[str] | None = None) -> str | None:
    """Return the name of the built-in model to offer for an image; None if none is shipped.

    RGB images (stained tissue) get `RGB_MODEL`, which takes their colours, where it is
    shipped; every other image gets `DEFAULT_MODEL`. `shipped`: the names of the built-in
    models, where the caller has read them already (`builtin_models` reads every file).
    """
    shipped = builtin_models() if shipped is None else shipped
    if rgb and RGB_MODEL in shipped:
        return RGB_MODEL
    return DEFAULT_MODEL if DEFAULT_MODEL in shipped else None
