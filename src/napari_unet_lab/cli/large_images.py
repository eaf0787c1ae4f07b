"""What ``predict`` does with a zarr or OME-Zarr image: segment it into an OME-Zarr store.

Such images may be larger than memory; they are read and written block by block
(`core.predict.larger_than_memory`), with the same object size setting as TIFF images.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import zarr

from ..core.formats.ome_zarr import PLUGIN_KEY
from ..core.model.files import ModelInfo
from ..core.model.unet import UNet
from ..core.predict.larger_than_memory import iter_predict_to_zarr, open_prediction
from .common import InputError, TextProgress, run_with_progress


@dataclass(frozen=True)
class StoreResult:
    """What a prediction store says about itself, for the result line.

    Attributes
    ----------
    store : Path
        The OME-Zarr store written.
    object_count : int
        Objects separated.
    object_diameter : float or None
        The object diameter used in pixels (given or estimated); None: as trained.
    scale : float
        How much the image was resized for the network.
    size_note : str
        The plain sentence on the object size; "" if none.
    """

    store: Path
    object_count: int
    object_diameter: float | None
    scale: float
    size_note: str


def is_zarr_image(path: Path) -> bool:
    """Return True for a zarr or OME-Zarr image (a folder named ``*.zarr``)."""
    return path.suffix.lower() == ".zarr" and path.is_dir()


def prediction_store(output: Path, image: Path) -> Path:
    """Return where the prediction of a zarr image goes: ``<name>_prediction.zarr``."""
    name = image.name[: -len(".zarr")]
    name = name[: -len(".ome")] if name.lower().endswith(".ome") else name
    return output / f"{name}_prediction.zarr"


def segment_zarr(
    model: UNet, info: ModelInfo, path: Path, store: Path, args: argparse.Namespace, label: str
) -> StoreResult:
    """Segment the zarr image at `path` into `store` with the options in `args`.

    Raises
    ------
    InputError
        If the image is not one the model takes, or the object size does not fit it.
    """
    work = iter_predict_to_zarr(
        model,
        info,
        path,
        store,
        tile_size=args.tile_size,
        batch_size=args.batch_size or None,
        device=args.device,
        threshold=args.threshold,
        min_size=args.min_size,
        split_touching=args.split_touching,
        object_diameter=getattr(args, "object_diameter", None),
        overwrite=args.overwrite,
    )
    try:
        run_with_progress(work, TextProgress(label, not args.quiet))
    except ValueError as error:  # the image does not fit the model, or the object size
        raise InputError(f"{path}: {error}") from None
    settings = open_prediction(store).settings
    return StoreResult(
        store=store,
        object_count=int(zarr.open_group(store, mode="r").attrs[PLUGIN_KEY]["object_count"]),
        object_diameter=settings.get("object_diameter"),
        scale=float(settings.get("scale", 1.0)),
        size_note=settings.get("size_note", ""),
    )
