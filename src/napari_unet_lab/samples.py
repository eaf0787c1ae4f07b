"""Sample data shipped with the plugin: nuclei images with their ground truth.

Three crowded U2OS fluorescence images from BBBC039 (``nuclei_1`` to ``nuclei_3``) and three
other kinds of nuclei from DSB 2018: large fluorescent nuclei (``nuclei_large``), brightfield
(``nuclei_brightfield``, dark nuclei on a bright background) and stained tissue in RGB
(``nuclei_tissue``).

See ``sample_data/README.md`` for the source, licence and citations. Nothing here imports
napari or Qt: napari calls the ``*_sample*`` functions through the plugin manifest and
turns the returned layer-data tuples into layers itself.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Any

import numpy as np
import tifffile

_BBBC039 = "BBBC039 v1 (Broad Bioimage Benchmark Collection), CC0 1.0"
_DSB2018 = (
    "DSB 2018 stage-1 training set, BBBC038 (Broad Bioimage Benchmark Collection), "
    "with the kaggle-dsbowl-2018-dataset-fixes corrections, CC0 1.0"
)
# The DSB 2018 image each sample comes from (all from the project's val split, so the
# built-in model never trained on them); sample_data/README.md says how they were cut.
_DSB2018_IMAGE_IDS = {
    "nuclei_large": "f6cb37ebf29c225284c8415962f7287abe7007fae8fe3d8a3899b608b832d7d5",
    "nuclei_brightfield": "1a11552569160f0b1ea10bedbd628ce6c14f29edec5092034c2309c556df833e",
    "nuclei_tissue": "c0152b1a260e71f9823d17f4fbb4bf7020d5dce62b4a12b3099c1c8e52a1c43a",
}


def sample_names() -> list[str]:
    """List the names of the shipped sample images.

    Returns
    -------
    list of str
        Names such as ``"nuclei_1"`` or ``"nuclei_tissue"``, sorted; each can be passed to
        :func:`load_sample`.
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
    image : ndarray
        The BBBC039 samples: uint16, shape (520, 696), Hoechst-stained nuclei, 12-bit values.
        The DSB 2018 samples: uint8, shape (H, W), or (H, W, 3) for the RGB ``nuclei_tissue``.
    labels : ndarray of uint16, shape (H, W)
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
        An ``"image"`` tuple named `name` (an RGB image for ``nuclei_tissue``), then a
        ``"labels"`` tuple named ``"<name> ground truth"``.
    """
    image, labels = load_sample(name)
    if name in _DSB2018_IMAGE_IDS:
        metadata = {"source": _DSB2018, "sample": name, "image_id": _DSB2018_IMAGE_IDS[name]}
    else:
        metadata = {"source": _BBBC039, "sample": name}
    if image.ndim == 3:  # (H, W, 3) stained tissue: napari shows the colours as they are
        image_kwargs = {"name": name, "rgb": True, "metadata": metadata}
    else:
        image_kwargs = {
            "name": name,
            "colormap": "gray",
            # Show the range the camera used (12-bit data in a 16-bit container), not 0..65535.
            "contrast_limits": (
                float(np.percentile(image, 0.5)),
                float(np.percentile(image, 99.8)),
            ),
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


def large_nuclei_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return the large fluorescent nuclei sample (``nuclei_large``, DSB 2018) as layer data."""
    return sample_layer_data("nuclei_large")


def brightfield_nuclei_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return the brightfield nuclei sample (``nuclei_brightfield``, DSB 2018) as layer data."""
    return sample_layer_data("nuclei_brightfield")


def tissue_nuclei_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Return the stained tissue sample (``nuclei_tissue``, RGB, DSB 2018) as layer data."""
    return sample_layer_data("nuclei_tissue")
