"""The napari reader contributions: our label TIFFs and OME-Zarr stores, with their pixel size.

napari's own reader opens a TIFF's pixels only, so labels saved with "U-Net Lab labels TIFF"
would come back without their pixel size; these readers put it back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_unet_lab.core.formats.ome_zarr import Multiscale, read_ome_zarr, store_kind
from napari_unet_lab.core.formats.tiff import (
    labels_tiff_units,
    load_labels_tiff,
    written_by_this_package,
)
from napari_unet_lab.core.predict.larger_than_memory import open_prediction

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader for a label or prediction store of this plugin, else None.

    Other zarr stores (and anything else) get None, so napari offers them to other
    readers (napari's own, napari-ome-zarr) instead.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if store_kind(path) is None:
        return None
    return read_zarr_store


def get_tiff_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader for a label TIFF this plugin wrote, else None.

    Other TIFFs get None, so napari's own reader (or another plugin's) opens them.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not written_by_this_package(path):
        return None
    return read_labels_tiff


def read_labels_tiff(path: str | list[str]) -> list[LayerData]:
    """Open a label TIFF as one Labels layer with its pixel size and units."""
    if isinstance(path, list):
        path = path[0]
    labels, scale = load_labels_tiff(path)
    meta: dict[str, Any] = {"name": Path(path).stem, "scale": scale}
    units = labels_tiff_units(path)
    if any(unit is not None for unit in units):
        meta["units"] = tuple(unit or "pixel" for unit in units)
    return [(labels, meta, "labels")]


def read_zarr_store(path: str | list[str]) -> list[LayerData]:
    """Open a store as napari layer data: nothing is read until napari shows a region.

    A label store (saved with "U-Net Lab labels OME-Zarr") gives one Labels layer. A
    prediction store (``predict_to_zarr``) gives one Image layer of probability per
    class (the background hidden), the most likely class, and the objects as Labels.
    """
    if isinstance(path, list):
        path = path[0]
    path = os.fspath(path)
    if store_kind(path) == "labels":
        labels = read_ome_zarr(path)
        return [(_levels(labels), _placement(labels, name=labels.name), "labels")]
    prediction = open_prediction(path)
    stem = Path(path.rstrip("/\\")).stem
    probabilities = prediction.probabilities
    layers = []
    for index, class_name in enumerate(prediction.class_names):
        levels = [level[index] for level in probabilities.levels]
        meta = _placement(probabilities, name=f"{stem} {class_name} probability", skip=1)
        meta.update(
            contrast_limits=(0.0, 1.0),
            colormap="magma",
            visible=index != 0,  # p(background) = 1 - p(objects) for two classes
        )
        layers.append((levels if len(levels) > 1 else levels[0], meta, "image"))
    for labels, name in ((prediction.classes, "classes"), (prediction.objects, "objects")):
        if labels is not None:
            layers.append((_levels(labels), _placement(labels, name=f"{stem} {name}"), "labels"))
    for _, meta, _ in layers:  # how it was made: the model, the object diameter used
        meta["metadata"] = {"settings": dict(prediction.settings)}
    return layers


def _levels(image: Multiscale) -> Any:
    return image.levels if len(image.levels) > 1 else image.levels[0]


def _placement(image: Multiscale, name: str, skip: int = 0) -> dict[str, Any]:
    """Name, pixel size, position and units of a layer, leaving out the first `skip` axes."""
    meta: dict[str, Any] = {
        "name": name,
        "scale": image.scale[skip:],
        "translate": image.translate[skip:],
        "multiscale": len(image.levels) > 1,
    }
    units = image.units[skip:]
    if any(unit is not None for unit in units):
        meta["units"] = tuple(unit or "pixel" for unit in units)
    return meta
