"""``napari-unet-lab predict``: segment TIFF images and save the objects as label images."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import tifffile

from ..core.formats.atomic import write_atomically
from ..core.formats.tiff import save_labels_tiff
from .common import (
    EXIT_OK,
    InputError,
    image_files,
    load_named_model,
    output_options,
    refuse_existing,
    selected_device,
)
from .large_images import is_zarr_image, prediction_store, segment_zarr
from .segmenting import segment_file, segmenting_options


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        "predict",
        parents=[output_options(), segmenting_options()],
        help="segment TIFF images and save the objects as label images",
        description=(
            "Segment TIFF images (files, or folders of .tif/.tiff files) and write "
            "<name>_objects.tif (one label per object) to the output folder. Zarr and "
            "OME-Zarr images (<name>.zarr, any size) give <name>_prediction.zarr, an OME-Zarr "
            "store of class probabilities, classes and objects."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    parser.add_argument(
        "inputs", metavar="INPUT", nargs="+", type=Path, help="image, folder or .zarr image"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for results")
    parser.add_argument(
        "--classes", action="store_true", help="also write <name>_classes.tif (class per pixel)"
    )
    parser.add_argument(
        "--probability",
        action="store_true",
        help="also write <name>_foreground.tif (object probability, float32)",
    )
    add_object_diameter_option(parser)
    parser.set_defaults(run=run)
    return parser


def object_diameter(text: str) -> str | float | None:
    """Parse ``--object-diameter``: auto, trained (None: not resized) or pixels above 0."""
    if text.strip().lower() in ("auto", "trained"):
        return "auto" if text.strip().lower() == "auto" else None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"must be auto, trained or a number of pixels above 0, got {text}"
        )
    return value


def add_object_diameter_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--object-diameter`` (shared with ``evaluate``) to `parser`."""
    parser.add_argument(
        "--object-diameter",
        type=object_diameter,
        default="auto",
        metavar="auto|trained|N",
        help="typical object diameter in pixels: images are resized so their objects match the "
        "model's training objects; auto: estimated from a first pass; trained: not resized "
        "(default: auto)",
    )


def size_said(result) -> str:
    """Return what a segmentation says about the object size, for a result line."""
    if result.object_diameter is None:
        return f" ({result.size_note})" if result.size_note else ""
    return f" (objects about {result.object_diameter:.0f} px, resized {result.scale:.2f}×)"


def run(args: argparse.Namespace) -> int:
    """Segment images and write the objects (and classes, probability) as TIFF files.

    Zarr images go to an OME-Zarr store each (`large_images`), read block by block.
    """
    args.device = selected_device(args.device)
    model, info, _ = load_named_model(args.model)
    stores = {
        path: prediction_store(args.output, path) for path in args.inputs if is_zarr_image(path)
    }
    tiffs = [path for path in args.inputs if path not in stores]
    images = image_files(tiffs) if tiffs or not stores else []
    kinds = ["objects"] + (["classes"] if args.classes else [])
    kinds += ["foreground"] if args.probability else []
    outputs = {
        path: {kind: args.output / f"{path.stem}_{kind}.tif" for kind in kinds} for path in images
    }
    stems = [path.stem for path in images] + [store.stem for store in stores.values()]
    if len(set(stems)) < len(stems):
        twice = sorted({stem for stem in stems if stems.count(stem) > 1})
        raise InputError(f"several inputs are called {', '.join(twice)}; their results would clash")
    refuse_existing(
        [p for files in outputs.values() for p in files.values()] + [*stores.values()],
        args.overwrite,
    )
    created = not args.output.exists()
    args.output.mkdir(parents=True, exist_ok=True)  # now, so a folder we cannot make fails early
    try:
        for index, path in enumerate(images, start=1):
            label = f"[{index}/{len(images) + len(stores)}] {path.name}"
            result = segment_file(model, info, path, args, label)
            save_results(outputs[path], result, args.overwrite)
            count = len(np.unique(result.objects)) - bool((result.objects == 0).any())
            print(f"{path.name}: {count} objects{size_said(result)} -> {outputs[path]['objects']}")
        for index, (path, store) in enumerate(stores.items(), start=len(images) + 1):
            label = f"[{index}/{len(images) + len(stores)}] {path.name}"
            result = segment_zarr(model, info, path, store, args, label)
            print(f"{path.name}: {result.object_count} objects{size_said(result)} -> {store}")
    except BaseException:
        if created and not any(args.output.iterdir()):
            args.output.rmdir()  # a failed first image leaves no empty folder behind
        raise
    return EXIT_OK


def save_results(files: dict[str, Path], result, overwrite: bool) -> None:
    """Save a segmentation's objects, and its classes and probability where asked for."""
    save_labels_tiff(files["objects"], result.objects, overwrite=overwrite)
    if "classes" in files:
        save_labels_tiff(files["classes"], result.classes, overwrite=overwrite)
    if "foreground" in files:
        save_probability_tiff(files["foreground"], result.foreground, overwrite)


def save_probability_tiff(path: Path, probability: np.ndarray, overwrite: bool) -> Path:
    """Save a float32 probability map as a compressed TIFF, atomically."""
    data = np.ascontiguousarray(probability, dtype=np.float32)
    return write_atomically(
        path,
        lambda file: tifffile.imwrite(file, data, photometric="minisblack", compression="zlib"),
        overwrite=overwrite,
    )
