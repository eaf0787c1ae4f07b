"""What every subcommand shares: exit codes, option checks, progress, models and TIFF files in.

Exit codes: 0 success, 1 failure, 2 wrong usage, 3 unusable input data,
4 unusable model file, 5 an output exists (pass ``--overwrite``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import tifffile

from ..core.device import available_devices, select_device
from ..core.formats.atomic import write_atomically
from ..core.model.builtin import builtin_models
from ..core.model.files import ModelFileError, ModelInfo, load_model, model_paths
from ..core.model.unet import UNet

PROG = "napari-unet-lab"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_BAD_MODEL = 4
EXIT_OUTPUT_EXISTS = 5
EXIT_INTERRUPTED = 130

IMAGE_SUFFIXES = (".tif", ".tiff")
# A label image belongs to the image of the same name, or of its name plus one of these.
LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask")
PREDICTION_SUFFIXES = ("_objects", "_classes", "_foreground")  # what `predict` writes
NOT_IMAGE_SUFFIXES = LABEL_SUFFIXES + PREDICTION_SUFFIXES

LARGEST_SEED = 2**64 - 1  # torch.Generator.manual_seed takes no larger one


# What to ask less of when memory runs out, by subcommand.
MEMORY_ADVICE = {
    "predict": "a smaller --tile-size or --batch-size",
    "evaluate": "a smaller --tile-size or --batch-size",
    "train": "a smaller --patch-size or --batch-size",
}


def out_of_memory_message(command: str) -> str:
    """Return what to tell the user when `command` ran out of memory."""
    less = MEMORY_ADVICE.get(command, "smaller images")
    return f"there was not enough memory; ask for less at once ({less}), or close other programs"


class InputError(ValueError):
    """Images or labels that cannot be used: unreadable, wrong dimensions, mismatched."""


class UsageError(ValueError):
    """Options that do not fit together or do not fit this machine."""


# ------------------------------------------------------------------ option checks
# argparse turns ArgumentTypeError into "argument --x: <message>" and exit code 2.
def integer_at_least(smallest: int) -> Callable[[str], int]:
    """Return an argparse type that takes whole numbers from `smallest` up."""

    def parse(text: str) -> int:
        value = int(text)
        if value < smallest:
            raise argparse.ArgumentTypeError(f"must be at least {smallest}, got {value}")
        return value

    parse.__name__ = "integer"  # how argparse names the type in its messages
    return parse


def integer_between(smallest: int, largest: int) -> Callable[[str], int]:
    """Return an argparse type that takes whole numbers from `smallest` to `largest`."""

    def parse(text: str) -> int:
        value = int(text)
        if not smallest <= value <= largest:
            raise argparse.ArgumentTypeError(f"must be {smallest} to {largest}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def seed(text: str) -> int:
    """Parse a random seed: a whole number from 0 to 2**64 - 1."""
    value = integer_at_least(0)(text)
    if value > LARGEST_SEED:
        raise argparse.ArgumentTypeError(f"must be at most 2**64 - 1, got {value}")
    return value


def tile_size(text: str) -> int | str | None:
    """Parse a tile size: ``auto``, 0 (the whole image at once) or a number of pixels."""
    if text == "auto":
        return text
    try:
        return integer_at_least(0)(text) or None  # 0: one pass over the whole image
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"must be auto, 0 or a number of pixels, got {text!r}"
        ) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def share(text: str) -> float:
    """Parse a share: a number from 0 to 1."""
    value = _number(text)
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def share_below_one(text: str) -> float:
    """Parse a share of the data to hold out: from 0 up to, but not including, 1."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"must be at least 0 and below 1 (something must be left), got {text}"
        )
    return value


def positive_number(text: str) -> float:
    """Parse a finite number above 0."""
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """Parse a finite number of 0 or more."""
    value = _number(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {text}")
    return value


def output_options() -> argparse.ArgumentParser:
    """Return the options of every subcommand that writes files: ``-q``, ``--overwrite``."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    options.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return options


def device_options() -> argparse.ArgumentParser:
    """Return the ``--device`` option of every subcommand that computes."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--device",
        default="auto",
        help=f"where to compute: {', '.join(available_devices())} (default: auto)",
    )
    return options


def selected_device(name: str) -> str:
    """Return the device `name` stands for on this machine (``auto`` included).

    Raises
    ------
    UsageError
        If this machine has no such device.
    """
    choices = f"choose from {', '.join(available_devices())}"
    try:
        device = select_device(name)
    except ValueError as error:  # a known kind of device, missing here
        raise UsageError(f"--device {name}: {error}; {choices}") from None
    except RuntimeError:  # torch's long list of every device type it knows
        raise UsageError(f"--device {name}: not a device name; {choices}") from None
    if device.type == "cuda" and (device.index or 0) >= _cuda_device_count():
        raise UsageError(f"--device {name}: this machine has no such GPU; {choices}")
    return str(device)


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


# ---------------------------------------------------------------------- progress
class TextProgress:
    """A progress line on stderr: redrawn in place on a terminal, every 10 % in a log.

    Parameters
    ----------
    label : str
        What is in progress, shown before the bar.
    enabled : bool
        Print anything at all.
    stream : file, optional
        Where to print; default ``sys.stderr``.
    """

    def __init__(self, label: str, enabled: bool = True, stream: TextIO | None = None):
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.live = self.enabled and self.stream.isatty()
        self.shown_tenth = -1
        self.shown_at = 0.0
        self.width = 0

    def update(self, fraction: float, message: str = "") -> None:
        """Show that `fraction` (0 to 1) of the work is done."""
        if not self.enabled:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        if self.live:
            if now - self.shown_at < 0.1 and fraction < 1:
                return
            filled = round(20 * fraction)
            line = f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {fraction:4.0%} {message}"
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif int(10 * fraction) > self.shown_tenth:
            self.shown_tenth = int(10 * fraction)
            self.stream.write(f"{self.label}: {fraction:.0%} {message}\n")
        self.shown_at = now
        self.stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()


def run_with_progress(work: Generator[Any, None, Any], progress: TextProgress) -> Any:
    """Run a core generator to its end, showing its progress records; return its result.

    On an exception (Ctrl-C included) the generator is closed, which stops
    prediction between tiles and training between steps.
    """
    try:
        while True:
            record = next(work)
            progress.update(record.fraction, record.message)
    except StopIteration as stop:
        return stop.value
    finally:
        work.close()
        progress.close()


# ------------------------------------------------------------------ files in, out
def load_named_model(name: str) -> tuple[UNet, ModelInfo, bool]:
    """Load a model file, or a built-in model by name; also say whether it is built in.

    Raises
    ------
    ModelFileError
        If `name` is neither a readable model file nor a built-in model.
    """
    json_path, weights_path = model_paths(name)
    builtin = builtin_models()
    if name in builtin and not (json_path.exists() or weights_path.exists()):
        return *load_model(builtin[name]), True
    if not (json_path.exists() or weights_path.exists()):
        names = ", ".join(builtin) or "none installed"
        raise ModelFileError(
            f"{name!r} is neither a model file nor a built-in model (built-in: {names})"
        )
    try:
        return *load_model(json_path), False
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        # load_model promises ModelFileError for every damage; a file it missed still
        # deserves a message rather than a traceback
        raise ModelFileError(f"the model file {json_path.name} is not usable: {error}") from None


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Return the TIFF files given, with folders replaced by the TIFF images in them.

    In folders, label images (``*_labels.tif``…) and results of ``predict``
    (``*_objects.tif``…) are left out; files named one by one are always taken.

    Raises
    ------
    InputError
        If a path does not exist, or no TIFF file is found.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [
                file for file in _tiffs_in(path) if not file.stem.endswith(NOT_IMAGE_SUFFIXES)
            ]
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path} does not exist")
    if not found:
        raise InputError(f"no TIFF images ({', '.join(IMAGE_SUFFIXES)}) found")
    return found


def _tiffs_in(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not path.name.startswith(".")
    )


def paired_files(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    """Pair images with their label images: two files, or two folders matched by name.

    In folders, ``a.tif`` pairs with ``a.tif`` or ``a_labels.tif`` (also
    ``_label``, ``_masks``, ``_mask``, ``.tiff``). Images and labels may share a
    folder; label files are then not taken for images.

    Raises
    ------
    InputError
        If paths are missing, of different kinds, or an image has no labels.
    """
    for path in (images, labels):
        if not path.exists():
            raise InputError(f"{path} does not exist")
    if images.is_file() and labels.is_file():
        return [(images, labels)]
    if not (images.is_dir() and labels.is_dir()):
        raise InputError("give two image files, or two folders, for the images and their labels")
    by_stem = {path.stem: path for path in _tiffs_in(labels)}
    same_folder = images.resolve() == labels.resolve()
    pairs, missing = [], []
    for image in _tiffs_in(images):
        if same_folder and image.stem.endswith(LABEL_SUFFIXES):
            continue
        candidates = [image.stem + suffix for suffix in LABEL_SUFFIXES]
        if not same_folder:
            candidates.insert(0, image.stem)
        match = next((by_stem[stem] for stem in candidates if stem in by_stem), None)
        if match is None:
            missing.append(image.name)
        else:
            pairs.append((image, match))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise InputError(
            f"no label image in {labels} for {shown} (looked for the same name, or the name "
            f"plus {', '.join(LABEL_SUFFIXES)})"
        )
    if not pairs:
        raise InputError(f"no TIFF images found in {images}")
    return pairs


def read_image(path: Path) -> tuple[np.ndarray, bool]:
    """Read a TIFF image; also say whether it is RGB(A) with the colours last.

    Raises
    ------
    InputError
        If the file cannot be read as an image.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            image = series.asarray()
            rgb = series.axes.endswith("S") and image.shape[-1] in (3, 4)
    except (OSError, ValueError, IndexError, KeyError) as error:  # TiffFileError: ValueError
        raise InputError(f"cannot read {path} as a TIFF image: {error}") from None
    if image.ndim < 2 or 0 in image.shape or np.dtype(image.dtype).kind not in "biuf":
        raise InputError(f"{path} holds no image (shape {image.shape}, type {image.dtype})")
    return image, rgb


def read_labels(path: Path) -> np.ndarray:
    """Read a TIFF of instance labels (integers, 0 for background).

    Raises
    ------
    InputError
        If the file cannot be read or does not hold integer labels.
    """
    labels, _ = read_image(path)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{path} holds {labels.dtype} values, not instance labels (integers: 0 for the "
            "background, one value per object)"
        )
    if labels.min() < 0:
        raise InputError(f"{path} holds negative labels")
    return labels


def refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse before any work starts, rather than after an hour of it.

    Raises
    ------
    FileExistsError
        If one of `paths` exists and `overwrite` is false.
    """
    if overwrite:
        return
    existing = [path for path in paths if path.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} already exists{more}; add --overwrite to replace it")


def write_json(path: Path, content: dict[str, Any], overwrite: bool) -> Path:
    """Write `content` as indented JSON, atomically: the whole file or none of it."""
    text = json.dumps(content, indent=2) + "\n"
    return write_atomically(path, lambda file: file.write(text.encode()), overwrite=overwrite)
