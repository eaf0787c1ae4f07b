"""What ``predict`` and ``evaluate`` share: the segmentation options and segmenting one file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.config import ObjectConfig
from ..core.model.files import ModelInfo
from ..core.model.unet import UNet
from .common import (
    InputError,
    TextProgress,
    device_options,
    integer_at_least,
    read_image,
    run_with_progress,
    share,
    tile_size,
)


def segmenting_options() -> argparse.ArgumentParser:
    """Return the options of the subcommands that segment: device, tiles, objects."""
    objects = ObjectConfig()  # the defaults the napari widget starts with
    options = argparse.ArgumentParser(add_help=False, parents=[device_options()])
    options.add_argument(
        "--tile-size",
        type=tile_size,
        default="auto",
        help="input tile edge in pixels; auto: chosen for the device and memory; 0: the whole "
        "image at once (default: auto)",
    )
    options.add_argument(
        "--batch-size",
        type=integer_at_least(0),
        default=0,
        help="tiles per batch; 0: automatic, 1 on the CPU, 4 on a GPU (default: 0)",
    )
    options.add_argument(
        "--threshold",
        type=share,
        default=objects.threshold,
        help="object probability of object seeds, 0 to 1; objects grow to half of it "
        f"(default: {objects.threshold})",
    )
    options.add_argument(
        "--min-size",
        type=integer_at_least(0),
        default=objects.min_size,
        help=f"smallest object in pixels (default: {objects.min_size})",
    )
    options.add_argument(
        "--no-split",
        dest="split_touching",
        action="store_false",
        help="do not split objects joined by a narrow neck",
    )
    return options


def segment_file(model: UNet, info: ModelInfo, path: Path, args: argparse.Namespace, label: str):
    """Segment the TIFF image at `path` with the options in `args`, showing progress.

    Raises
    ------
    InputError
        If the file is not an image, or not one the model takes.
    """
    # the module, not the function: tests (and users) may replace segment.iter_segment
    from ..core.predict import segment

    image, rgb = read_image(path)  # an RGB image for a grayscale model: its luminance (core)
    try:
        work = segment.iter_segment(
            model,
            info,
            image,
            rgb=rgb,
            tile_size=args.tile_size,
            batch_size=args.batch_size or None,
            device=args.device,
            threshold=args.threshold,
            min_size=args.min_size,
            split_touching=args.split_touching,
            object_diameter=getattr(args, "object_diameter", None),
        )
        result = run_with_progress(work, TextProgress(label, not args.quiet))
    except ValueError as error:  # the image does not fit the model
        raise InputError(f"{path}: {error}") from None
    if result.image_note:
        print(f"{path.name}: {result.image_note}")
    return result
