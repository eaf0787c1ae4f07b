"""Sample data shipped with the plugin: crowded U2OS nuclei from BBBC039.

See ``sample_data/README.md`` for the source, licence and citations. Nothing here imports
napari or Qt: napari calls the ``nuclei_sample*`` functions through the plugin manifest and
turns the returned layer-data tuples into layers itself.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Any

import numpy as np
import tifffile

_SOURCE = "BBBC039 v1 (Broad Bioimage Benchmark Collection), CC0 1.0"


def sample_names() -> list[str]:
    """List the names of the shipped sample images.

    Returns
    -------
    list of str
        Names such as ``"nuclei_1"``, sorted; each can be passed to :func:`load_sample`.
    """
    folder = files("napari_unet_lab") / "sample_data"
    names = [
        entry.name.removesuffix(".tif")
        for entry in folder.iterdir()
        if entry.name.endswith(".tif") and not entry.name.endswith("_labels.tif")
    ]
    return sorted(names)


def load_sample(name: str = "nuclei_1") -> tuple[np.ndarray, np.ndarray]:
    """Load one sample image and its ground-truth instance labels.

    Parameters
    ----------
    name : str
        One of :func:`sample_names`, e.g. ``"nuclei_1"``.

    Returns
    -------
    image : ndarray of uint16, shape (520, 696)
        Hoechst-stained nuclei, 12-bit values.
    labels : ndarray of uint16, shape (520, 696)
        Ground truth: 0 is background, 1..N one nucleus each.

    Raises
    ------
    KeyError
        If there is no sample called `name`.
    """
    if name not in sample_names():
        raise KeyError(f"No sample called {name!r}; the samples are {sample_names()}.")
    return _read_sample_file(f"{name}.tif"), _read_sample_file(f"{name}_labels.tif")


def _read_sample_file(file_name: str) -> np.ndarray:
    # as_file gives a real path even if the package was imported from a zip archive.
    with as_file(files("napari_unet_lab") / "sample_data" / file_name) as path:
        return tifffile.imread(path)


def sample_layer_data(name: str = "nuclei_1") -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return one sample as napari layer-data tuples: the image and its ground truth.

    Parameters
    ----------
    name : str
        One of :func:`sample_names`.

    Returns
    -------
    list of (data, kwargs, layer_type)
        An ``"image"`` tuple named `name`, then a ``"labels"`` tuple named
        ``"<name> ground truth"``.
    """
    image, labels = load_sample(name)
    metadata = {"source": _SOURCE, "sample": name}
    image_kwargs = {
        "name": name,
        "colormap": "gray",
        # 12-bit data in a 16-bit container: show the range the camera used, not 0..65535.
        "contrast_limits": (float(np.percentile(image, 0.5)), float(np.percentile(image, 99.8))),
        "metadata": metadata,
    }
    labels_kwargs = {"name": f"{name} ground truth", "opacity": 0.5, "metadata": metadata}
    return [(image, image_kwargs, "image"), (labels, labels_kwargs, "labels")]


def nuclei_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return the first nuclei sample (``nuclei_1``) as napari layer-data tuples."""
    return sample_layer_data("nuclei_1")


def nuclei_sample_2() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return the second nuclei sample (``nuclei_2``) as napari layer-data tuples."""
    return sample_layer_data("nuclei_2")


def nuclei_sample_3() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return the third nuclei sample (``nuclei_3``) as napari layer-data tuples."""
    return sample_layer_data("nuclei_3")
