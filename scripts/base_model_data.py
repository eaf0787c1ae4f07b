"""The data the built-in models learn from: BBBC039 and DSB 2018, read and resized.

Shared by ``train_base_model.py`` (training and validation) and its helpers; the
provenance records go into the model files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from napari_unet_lab.core.images import grayscale
from napari_unet_lab.core.predict.scale import object_diameters, resized_image

DATA = Path("/work/shared/data/bbbc039")
DSB_DATA = Path("/work/shared/data/dsb2018_train")
PROVENANCE = {
    "dataset": "BBBC039 version 1 (Broad Bioimage Benchmark Collection)",
    "content": "Hoechst-stained U2OS nuclei, widefield fluorescence, 520 x 696 px, 12-bit",
    "licence": "CC0 1.0",
    "citation": (
        "Caicedo et al., Evaluation of Deep Learning Strategies for Nucleus Segmentation "
        "in Fluorescence Images, Cytometry Part A 95:952-965, 2019; "
        "Ljosa et al., Nature Methods 9:637, 2012"
    ),
    "split": "train",
    "split_note": "a seeded random split of BBBC039, not the official one",
    "validation": "val split, 50 images",
}
DSB_PROVENANCE = {
    "dataset": "DSB 2018 stage-1 training set (BBBC038), with the community mask corrections "
    "of kaggle-dsbowl-2018-dataset-fixes",
    "content": "nuclei of many kinds: fluorescence at several magnifications, brightfield, "
    "stained tissue (RGB, converted to grayscale by luminance)",
    "licence": "CC0 1.0",
    "citation": "Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 "
    "Data Science Bowl, Nature Methods 16:1247-1253, 2019",
    "split": "train (index.json of the shared copy: every fifth image of each group is val)",
    "validation": "val split, 123 images",
}


def read_split(folder: Path, limit: int | None = None) -> tuple[list[str], list, list]:
    """Return names, images and instance labels of one split."""
    names = sorted(path.stem for path in (folder / "images").glob("*.tif"))[:limit]
    images = [tifffile.imread(folder / "images" / f"{name}.tif") for name in names]
    labels = [tifffile.imread(folder / "labels" / f"{name}.tif") for name in names]
    return names, images, labels


def read_dsb_split(
    folder: Path, split: str, limit: int | None = None, dark_copies: int = 1, colour: bool = False
) -> tuple[list, list, list]:
    """Return names, grayscale images and instance labels of one DSB 2018 split.

    Images whose nuclei are darker than their background come `dark_copies` times.
    With `colour`, the RGB images alone, channels first.
    """
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    entries = [entry for entry in index if entry["split"] == split]
    if colour:
        entries = [entry for entry in entries if not entry["grayscale"]]
    names, images, labels = [], [], []
    for entry in entries[:limit]:
        image = tifffile.imread(folder / "images" / f"{entry['id']}.tif")
        if image.ndim == 3:
            image = np.moveaxis(image[..., :3], -1, 0) if colour else grayscale(image)
        objects = tifffile.imread(folder / "labels" / f"{entry['id']}.tif")
        inside = objects > 0
        brightness = image.mean(axis=0) if image.ndim == 3 else image
        dark = inside.any() and brightness[inside].mean() < brightness[~inside].mean()
        for copy in range(dark_copies if dark else 1):
            names.append(f"dsb2018/{entry['id']}" + (f" (copy {copy + 1})" if copy else ""))
            images.append(image)
            labels.append(objects)
    return names, images, labels


def at_object_diameter(
    image: np.ndarray, labels: np.ndarray, diameter: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Resize an image and its labels so the median object is `diameter` pixels across.

    Images within 10 % of it are kept as they are (zoom augmentation covers that).
    Returns the image, the labels and the factor used.
    """
    found = object_diameters(labels)
    factor = diameter / float(np.median(found)) if found.size else 1.0
    if abs(factor - 1.0) <= 0.1:
        return image, labels, 1.0
    resized = resized_image(image, factor, 0 if image.ndim == 3 else None)
    # nearest neighbour: every object keeps its own id, no new ids appear
    rows = np.minimum((np.arange(resized.shape[-2]) + 0.5) / factor, labels.shape[0] - 1)
    cols = np.minimum((np.arange(resized.shape[-1]) + 0.5) / factor, labels.shape[1] - 1)
    return resized, labels[rows.astype(int)[:, None], cols.astype(int)[None, :]], factor
