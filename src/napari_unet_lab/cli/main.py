"""The ``napari-unet-lab`` command: segment, evaluate, train and export models from a shell.

Every subcommand uses the same core functions and model files as the napari
widgets, so a model trained here opens in napari and the other way round.
Nothing here imports napari or Qt, except the ``demo`` subcommand when it runs.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import tifffile

from .. import __version__
from ..core.device import available_devices, select_device
from ..core.formats.atomic import write_atomically
from ..core.formats.tiff import save_labels_tiff
from ..core.metrics import AP_THRESHOLDS, segmentation_scores
from ..core.model.export_formats import ExportError, MissingPackageError
from ..core.model.files import ModelFileError, ModelInfo, builtin_models, load_model, model_paths
from ..core.model.unet import UNet, randomly_initialised
from ..core.predict.objects import OBJECT_THRESHOLD
from ..core.train.run import LOSSES, TrainingSettings

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


class InputError(ValueError):
    """Images or labels that cannot be used: unreadable, wrong dimensions, mismatched."""


class UsageError(ValueError):
    """Options that do not fit together or do not fit this machine."""


# ------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options
        return _run_demo(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help()
        return EXIT_OK
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version or a usage error, already printed
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    name = f"{PROG} {args.command}"
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return _fail(name, "interrupted; nothing more was written", EXIT_INTERRUPTED)
    except UsageError as error:
        return _fail(name, str(error), EXIT_USAGE)
    except ModelFileError as error:
        return _fail(name, f"unusable model: {error}", EXIT_BAD_MODEL)
    except InputError as error:
        return _fail(name, str(error), EXIT_BAD_INPUT)
    except FileExistsError as error:
        message = str(error).replace("pass overwrite=True", "add --overwrite")
        return _fail(name, message, EXIT_OUTPUT_EXISTS)
    except (MissingPackageError, ExportError, MemoryError) as error:
        return _fail(name, str(error), EXIT_FAILURE)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        return _fail(name, f"{error.strerror or error}{where}", EXIT_FAILURE)


def _fail(name: str, message: str, status: int) -> int:
    print(f"{name}: error: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``napari-unet-lab`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment microscopy images with a U-Net: predict, evaluate, train, export.",
        epilog=(
            "exit codes: 0 success, 1 failure, 2 wrong usage, 3 unusable input data, "
            "4 unusable model file, 5 output exists (add --overwrite), 130 interrupted. "
            "MODEL is a model file (.json or .safetensors) or the name of a built-in model "
            f"({', '.join(builtin_models()) or 'none installed'})."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")
    compute = argparse.ArgumentParser(add_help=False)
    compute.add_argument(
        "--device",
        default="auto",
        help=f"where to compute: {', '.join(available_devices())} (default: auto)",
    )
    segmenting = argparse.ArgumentParser(add_help=False, parents=[compute])
    segmenting.add_argument(
        "--tile-size",
        type=_tile_size,
        default="auto",
        help="input tile edge in pixels; auto: chosen for the device and memory; 0: the whole "
        "image at once (default: auto)",
    )
    segmenting.add_argument(
        "--batch-size",
        type=_count(0),
        default=0,
        help="tiles per batch; 0: automatic, 1 on the CPU, 4 on a GPU (default: 0)",
    )
    segmenting.add_argument(
        "--threshold",
        type=_share,
        default=OBJECT_THRESHOLD,
        help="object probability of object seeds; objects grow to half of it "
        f"(default: {OBJECT_THRESHOLD})",
    )
    segmenting.add_argument(
        "--min-size", type=_count(0), default=15, help="smallest object in pixels (default: 15)"
    )
    segmenting.add_argument(
        "--no-split",
        dest="split_touching",
        action="store_false",
        help="do not split objects joined by a narrow neck",
    )

    predict = commands.add_parser(
        "predict",
        parents=[common, segmenting],
        help="segment TIFF images and save the objects as label images",
        description=(
            "Segment TIFF images (files, or folders of .tif/.tiff files) and write "
            "<name>_objects.tif (one label per object) to the output folder."
        ),
    )
    predict.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    predict.add_argument("inputs", metavar="INPUT", nargs="+", type=Path, help="image or folder")
    predict.add_argument("-o", "--output", type=Path, required=True, help="folder for results")
    predict.add_argument(
        "--classes", action="store_true", help="also write <name>_classes.tif (class per pixel)"
    )
    predict.add_argument(
        "--probability",
        action="store_true",
        help="also write <name>_foreground.tif (object probability, float32)",
    )
    predict.set_defaults(run=run_predict)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common, segmenting],
        help="measure pixel IoU and object average precision against true labels",
        description=(
            "Segment images and compare with true instance labels: pixel IoU of the objects "
            "and object average precision at IoU 0.5 and averaged over 0.5:0.95, per image "
            "and overall. IMAGES and LABELS are two files, or two folders whose files pair up "
            f"by name (a.tif with a.tif or a{LABEL_SUFFIXES[0]}.tif; the same folder works)."
        ),
    )
    evaluate.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    evaluate.add_argument("images", metavar="IMAGES", type=Path, help="image or folder")
    evaluate.add_argument("labels", metavar="LABELS", type=Path, help="label image or folder")
    evaluate.add_argument("--report", type=Path, help="write the scores to this JSON file")
    evaluate.set_defaults(run=run_evaluate)

    train = commands.add_parser(
        "train",
        parents=[common, compute],
        help="train a model on images and their instance labels",
        description=(
            "Train a U-Net on 2D images and instance labels (0 background, one value per "
            "object), from scratch or from a base model, with the border weights of "
            "Ronneberger et al. (2015), and save it as a model file."
        ),
    )
    train.add_argument("images", metavar="IMAGES", type=Path, help="image or folder")
    train.add_argument("labels", metavar="LABELS", type=Path, help="label image or folder")
    train.add_argument(
        "-o", "--output", type=Path, required=True, help="model file to write (.json)"
    )
    train.add_argument(
        "--from",
        dest="base",
        metavar="MODEL",
        help="start from this model (file or built-in name) instead of from scratch",
    )
    train.add_argument(
        "--steps", type=_count(1), default=1500, help="optimiser steps (default: 1500)"
    )
    train.add_argument(
        "--batch-size", type=_count(1), default=4, help="patches per step (default: 4)"
    )
    train.add_argument(
        "--patch-size",
        type=_count(1),
        default=252,
        help="patch edge, rounded up to a size the network takes (default: 252)",
    )
    train.add_argument(
        "--learning-rate",
        type=_positive,
        default=1e-3,
        help="Adam step size at the start (default: 0.001)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of all randomness (default: 0)")
    train.add_argument("--validation-images", type=Path, help="held-out images or folder")
    train.add_argument("--validation-labels", type=Path, help="their labels")
    train.add_argument(
        "--validation-share",
        type=_share,
        default=0.0,
        help="hold out this share of the training pairs for validation instead",
    )
    train.add_argument(
        "--validate-every",
        type=_count(0),
        default=0,
        help="steps between validations; 0: after the last step only (default: 0)",
    )
    train.add_argument(
        "--patience",
        type=_count(0),
        default=0,
        help="stop after this many validations without gain, keeping the best weights; "
        "0: never (default: 0)",
    )
    train.add_argument(
        "--loss",
        choices=LOSSES,
        default=TrainingSettings().loss,
        help=f"training loss (default: {TrainingSettings().loss})",
    )
    train.add_argument(
        "--freeze-encoder", action="store_true", help="train only the decoder (fine-tuning)"
    )
    train.add_argument("--name", help="model name shown in napari (default: the file name)")
    train.add_argument(
        "--depth", type=_count(1), default=3, help="new model: poolings (default: 3)"
    )
    train.add_argument(
        "--base-channels",
        type=_count(1),
        default=32,
        help="new model: channels at full resolution (default: 32)",
    )
    train.add_argument(
        "--padding",
        choices=("valid", "same"),
        default="valid",
        help="new model: convolution padding (default: valid)",
    )
    train.add_argument("--report", type=Path, help="write losses and scores to this JSON file")
    train.set_defaults(run=run_train)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="export a model as ONNX, TorchScript or a bioimage.io package",
        description=(
            "Export a model for other tools: TorchScript (.pt), ONNX (.onnx), or a "
            "bioimage.io model package (.zip, validated offline with bioimageio.spec). "
            "ONNX and bioimage.io need: pip install 'napari-unet-lab[export]'."
        ),
    )
    export.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    export.add_argument("--format", choices=("onnx", "torchscript", "bioimageio"), required=True)
    export.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    export.add_argument(
        "--test-image",
        type=Path,
        help="bioimage.io: image for the test tensors (default: the nuclei sample)",
    )
    export.add_argument(
        "--weights",
        nargs="+",
        choices=("torchscript", "onnx"),
        default=["torchscript", "onnx"],
        help="bioimage.io: weight formats to include (default: torchscript onnx)",
    )
    export.add_argument(
        "--author", action="append", default=[], help="bioimage.io: an author (repeatable)"
    )
    export.add_argument(
        "--license", default="BSD-3-Clause", help="bioimage.io: SPDX licence of the weights"
    )
    export.add_argument("--tag", action="append", default=[], help="bioimage.io: extra tag")
    export.set_defaults(run=run_export)

    commands.add_parser(
        "demo",
        add_help=False,
        help="open napari on the sample nuclei and segment them (try: demo --help)",
    )
    return parser


def _count(smallest: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < smallest:
            raise argparse.ArgumentTypeError(f"must be at least {smallest}, got {value}")
        return value

    parse.__name__ = "integer"  # how argparse names the type in its messages
    return parse


def _tile_size(text: str) -> int | str | None:
    if text == "auto":
        return text
    try:
        return _count(0)(text) or None  # 0: one pass over the whole image
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be auto or a number of pixels, got {text!r}"
        ) from None


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


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
    return *load_model(json_path), False


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Return the TIFF files given, with folders replaced by the TIFF images in them.

    In folders, label images (``*_labels.tif``…) and results of `run_predict`
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


def _device(name: str) -> str:
    try:
        return str(select_device(name))
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"--device {name}: {error}") from None


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse before any work starts, rather than after an hour of it."""
    if overwrite:
        return
    existing = [path for path in paths if path.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} already exists{more}; add --overwrite to replace it")


def _write_json(path: Path, content: dict[str, Any], overwrite: bool) -> Path:
    text = json.dumps(content, indent=2) + "\n"
    return write_atomically(path, lambda file: file.write(text.encode()), overwrite=overwrite)


def _segment(model: UNet, info: ModelInfo, path: Path, args, label: str):
    from ..core.predict.segment import iter_segment

    image, rgb = read_image(path)
    try:
        work = iter_segment(
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
        )
        return run_with_progress(work, TextProgress(label, not args.quiet))
    except ValueError as error:  # the image does not fit the model
        raise InputError(f"{path}: {error}") from None


# ------------------------------------------------------------------------ predict
def run_predict(args: argparse.Namespace) -> int:
    """Segment images and write the objects (and classes, probability) as TIFF files."""
    args.device = _device(args.device)
    model, info, _ = load_named_model(args.model)
    images = image_files(args.inputs)
    kinds = ["objects"] + (["classes"] if args.classes else [])
    kinds += ["foreground"] if args.probability else []
    outputs = {
        path: {kind: args.output / f"{path.stem}_{kind}.tif" for kind in kinds} for path in images
    }
    stems = [path.stem for path in images]
    if len(set(stems)) < len(stems):
        twice = sorted({stem for stem in stems if stems.count(stem) > 1})
        raise InputError(f"several inputs are called {', '.join(twice)}; their results would clash")
    _refuse_existing([p for files in outputs.values() for p in files.values()], args.overwrite)
    args.output.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(images, start=1):
        label = f"[{index}/{len(images)}] {path.name}"
        result = _segment(model, info, path, args, label)
        files = outputs[path]
        save_labels_tiff(files["objects"], result.objects, overwrite=args.overwrite)
        if args.classes:
            save_labels_tiff(files["classes"], result.classes, overwrite=args.overwrite)
        if args.probability:
            save_probability_tiff(files["foreground"], result.foreground, args.overwrite)
        count = len(np.unique(result.objects)) - bool((result.objects == 0).any())
        print(f"{path.name}: {count} objects -> {files['objects']}")
    return EXIT_OK


def save_probability_tiff(path: Path, probability: np.ndarray, overwrite: bool) -> Path:
    """Save a float32 probability map as a compressed TIFF, atomically."""
    data = np.ascontiguousarray(probability, dtype=np.float32)
    return write_atomically(
        path,
        lambda file: tifffile.imwrite(file, data, photometric="minisblack", compression="zlib"),
        overwrite=overwrite,
    )


# ----------------------------------------------------------------------- evaluate
def run_evaluate(args: argparse.Namespace) -> int:
    """Segment images, score them against true labels, print a table, write a report."""
    args.device = _device(args.device)
    model, info, _ = load_named_model(args.model)
    pairs = paired_files(args.images, args.labels)
    if args.report is not None:
        _refuse_existing([args.report], args.overwrite)
    rows = []
    for index, (image_path, labels_path) in enumerate(pairs, start=1):
        truth = read_labels(labels_path)
        label = f"[{index}/{len(pairs)}] {image_path.name}"
        objects = _segment(model, info, image_path, args, label).objects
        if objects.shape != truth.shape:
            raise InputError(
                f"{labels_path.name} has shape {truth.shape}, but {image_path.name} gives "
                f"objects of shape {objects.shape}"
            )
        scores = segmentation_scores(objects, truth, AP_THRESHOLDS)
        rows.append({"image": str(image_path), "labels": str(labels_path), **scores})
    report = {
        "model": {"name": info.name, "source": args.model},
        "settings": {
            "threshold": args.threshold,
            "min_size": args.min_size,
            "split_touching": args.split_touching,
            "tile_size": args.tile_size,
        },
        "thresholds": list(AP_THRESHOLDS),
        "overall": overall_scores(rows),
        "images": rows,
    }
    print(score_table(report))
    if args.report is not None:
        _write_json(args.report, report, args.overwrite)
        print(f"report: {args.report}")
    return EXIT_OK


def overall_scores(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-image scores: pixel IoU pooled over all pixels, AP averaged over images.

    Mean AP over images is the measure of the 2018 Data Science Bowl; the pooled
    pixel IoU weighs every pixel alike (the mean over images is given too).
    """
    union = sum(row["pixel_union"] for row in rows)
    thresholds = list(rows[0]["average_precision"]) if rows else []
    return {
        "images": len(rows),
        "pixel_iou": sum(row["pixel_intersection"] for row in rows) / union if union else 1.0,
        "pixel_iou_mean_per_image": float(np.mean([row["pixel_iou"] for row in rows])),
        "average_precision": {
            threshold: float(np.mean([row["average_precision"][threshold] for row in rows]))
            for threshold in thresholds
        },
        "ap_50": float(np.mean([row["ap_50"] for row in rows])),
        "mean_average_precision": float(np.mean([row["mean_average_precision"] for row in rows])),
        "objects_found": sum(row["objects_found"] for row in rows),
        "objects_true": sum(row["objects_true"] for row in rows),
    }


def score_table(report: dict[str, Any]) -> str:
    """Return the evaluation as a small plain-text table."""
    header = ("image", "objects", "true", "pixel IoU", "AP@0.5", "AP@0.5:0.95")
    lines = [
        (
            Path(row["image"]).name,
            str(row["objects_found"]),
            str(row["objects_true"]),
            f"{row['pixel_iou']:.3f}",
            f"{row['ap_50']:.3f}",
            f"{row['mean_average_precision']:.3f}",
        )
        for row in report["images"]
    ]
    overall = report["overall"]
    lines.append(
        (
            f"overall ({overall['images']})",
            str(overall["objects_found"]),
            str(overall["objects_true"]),
            f"{overall['pixel_iou']:.3f}",
            f"{overall['ap_50']:.3f}",
            f"{overall['mean_average_precision']:.3f}",
        )
    )
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def row(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([row(header), *map(row, lines[:-1]), "-" * len(row(header)), row(lines[-1])])


# -------------------------------------------------------------------------- train
@dataclass
class TrainingData:
    """Training images with their instance labels and file names."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]


def _training_data(pairs: Sequence[tuple[Path, Path]], in_channels: int | None) -> TrainingData:
    images, labels, names = [], [], []
    for image_path, labels_path in pairs:
        image, rgb = read_image(image_path)
        truth = read_labels(labels_path)
        channels = 1 if image.ndim == 2 else image.shape[0]
        if rgb or image.ndim > 3 or (in_channels is not None and channels != in_channels):
            wanted = "(Y, X)" if in_channels in (None, 1) else f"({in_channels}, Y, X)"
            raise InputError(
                f"{image_path}: training takes 2D images {wanted}, channels first; "
                f"got shape {image.shape}{' (RGB)' if rgb else ''}"
            )
        if truth.shape != image.shape[-2:]:
            raise InputError(
                f"{labels_path.name} has shape {truth.shape}, its image {image_path.name} "
                f"{image.shape}"
            )
        images.append(image)
        labels.append(truth)
        names.append(image_path.name)
    return TrainingData(images, labels, names)


def run_train(args: argparse.Namespace) -> int:
    """Train a model on images and instance labels, and save it as a model file."""
    import torch

    from ..core.config import UNetConfig
    from ..core.images import DEFAULT_NORMALIZATION
    from ..core.model.files import save_model
    from ..core.train.run import train
    from ..core.train.targets import (
        border_weight_map,
        class_balance_weights,
        semantic_target_from_instances,
    )

    if (args.validation_images is None) != (args.validation_labels is None):
        raise UsageError("give both --validation-images and --validation-labels, or neither")
    if args.validation_images is not None and args.validation_share:
        raise UsageError("give --validation-images or --validation-share, not both")
    device = _device(args.device)
    json_path, weights_path = model_paths(args.output)
    _refuse_existing(
        [json_path, weights_path, *([args.report] if args.report else [])], args.overwrite
    )

    if args.base is not None:
        model, base_info, _ = load_named_model(args.base)
        if model.config.n_classes != 2:
            raise ModelFileError(
                f"{args.base} predicts {model.config.n_classes} classes; training from instance "
                "labels needs a model of 2 (background and object)"
            )
        in_channels, class_names = model.config.in_channels, list(base_info.class_names)
        normalization = dict(base_info.normalization)
    else:
        model, base_info, in_channels = None, None, None
        class_names, normalization = ["background", "object"], dict(DEFAULT_NORMALIZATION)

    pairs = paired_files(args.images, args.labels)
    if args.validation_images is not None:
        validation_pairs = paired_files(args.validation_images, args.validation_labels)
    elif args.validation_share:
        order = np.random.default_rng(args.seed).permutation(len(pairs))
        held_out = max(1, round(args.validation_share * len(pairs)))
        if held_out >= len(pairs):
            raise InputError(
                f"--validation-share {args.validation_share} leaves no training image of "
                f"{len(pairs)}"
            )
        validation_pairs = [pairs[i] for i in sorted(order[:held_out])]
        pairs = [pairs[i] for i in sorted(order[held_out:])]
    else:
        validation_pairs = []
    data = _training_data(pairs, in_channels)
    validation = _training_data(validation_pairs, in_channels) if validation_pairs else None

    if model is None:
        channels = 1 if data.images[0].ndim == 2 else data.images[0].shape[0]
        try:
            config = UNetConfig(
                in_channels=channels,
                depth=args.depth,
                base_channels=args.base_channels,
                padding=args.padding,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
        model = randomly_initialised(config, args.seed)  # from the seed, global state kept
    model.to(device)

    targets = [semantic_target_from_instances(labels) for labels in data.labels]
    class_weights = class_balance_weights(targets)
    w0, sigma = 10.0, 5.0
    weights = [
        border_weight_map(labels, w0=w0, sigma=sigma, class_weights=class_weights)
        for labels in data.labels
    ]
    try:
        settings = TrainingSettings(
            steps=args.steps,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
            learning_rate=args.learning_rate,
            validate_every=args.validate_every,
            patience=args.patience,
            loss=args.loss,
            freeze_encoder=args.freeze_encoder,
            normalization=normalization,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    held_out = (
        [
            (image, labels > 0)
            for image, labels in zip(validation.images, validation.labels, strict=True)
        ]
        if validation
        else None
    )
    progress = TextProgress("training", not args.quiet)
    started = time.perf_counter()
    result = run_with_progress(
        train(
            model,
            data.images,
            targets,
            weights,
            settings=settings,
            rng=args.seed,
            validation=held_out,
        ),
        progress,
    )
    wall_seconds = time.perf_counter() - started

    model.cpu()
    name = args.name or json_path.stem
    training = {
        "settings": settings.to_dict(),
        "steps_planned": settings.steps,
        "steps_done": result.steps,
        "seed": args.seed,
        "from": None if base_info is None else base_info.name,
        "border_weights": {"w0": w0, "sigma": sigma},
        "class_weights": [round(float(w), 6) for w in class_weights],
        "final_loss": result.losses[-1] if result.losses else None,
        "training_seconds": round(result.seconds, 1),
        "device": device,
        "torch_version": torch.__version__,
        "command": f"{PROG} train",
    }
    metrics = {}
    if result.validation_iou is not None:
        metrics = {
            "val_pixel_iou": round(float(result.validation_iou), 4),
            "val_images": len(validation.images),
            "definition": "pixel IoU of the object class on the validation images",
        }
    info = ModelInfo(
        config=model.config,
        class_names=class_names,
        normalization=normalization,
        name=name,
        description=(
            f"U-Net trained with {PROG} on {len(data.images)} image(s)"
            + ("." if base_info is None else f", starting from the model {base_info.name!r}.")
        ),
        training=training,
        provenance={
            "images": data.names,
            "validation_images": validation.names if validation else [],
            "base_model": None if base_info is None else base_info.provenance,
        },
        metrics=metrics,
    )
    saved = save_model(json_path, model, info, overwrite=args.overwrite)
    validation_text = (
        f", validation IoU {result.validation_iou:.3f}" if result.validation_iou is not None else ""
    )
    print(
        f"trained {result.steps} steps in {wall_seconds:.1f} s, final loss "
        f"{training['final_loss']:.4f}{validation_text}"
    )
    print(f"model: {saved}")
    if args.report is not None:
        report = {
            "model": str(saved),
            "steps": result.steps,
            "seconds": result.seconds,
            "wall_seconds": wall_seconds,
            "losses": [float(loss) for loss in result.losses],
            "validation_iou": result.validation_iou,
            "settings": settings.to_dict(),
            "images": data.names,
            "validation_images": validation.names if validation else [],
        }
        _write_json(args.report, report, args.overwrite)
        print(f"report: {args.report}")
    return EXIT_OK


# ------------------------------------------------------------------------- export
def run_export(args: argparse.Namespace) -> int:
    """Export a model as TorchScript, ONNX or a bioimage.io package."""
    from ..core.model import export_formats as model_export

    model, info, builtin = load_named_model(args.model)
    _refuse_existing([args.output], args.overwrite)
    if args.format == "torchscript":
        path = model_export.export_torchscript(model, args.output, overwrite=args.overwrite)
        print(f"TorchScript model (checked against PyTorch): {path}")
        return EXIT_OK
    if args.format == "onnx":
        path = model_export.export_onnx(model, args.output, overwrite=args.overwrite)
        print(f"ONNX model (checked with onnxruntime): {path}")
        return EXIT_OK
    if args.test_image is not None:
        test_image, rgb = read_image(args.test_image)
        if rgb:
            test_image = np.moveaxis(test_image, -1, 0)
    elif model.config.in_channels == 1:
        from ..samples import load_sample

        test_image = load_sample("nuclei_1")[0]
    else:
        raise UsageError(f"give a --test-image with {model.config.in_channels} channels")
    authors = args.author or (["napari-unet-lab contributors"] if builtin else [])
    try:
        model_export.check_license(args.license)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        package = model_export.export_bioimageio(
            args.output,
            model,
            info,
            test_image,
            authors=authors,
            license=args.license,
            tags=args.tag,
            weights=args.weights,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        if isinstance(error, ModelFileError):
            raise
        raise InputError(str(error)) from None
    print(f"bioimage.io model package: {package.path} (validation: {package.status})")
    for note in package.warnings:
        print(f"  suggestion: {note}")
    return EXIT_OK


# --------------------------------------------------------------------------- demo
def _run_demo(argv: list[str]) -> int:
    try:
        from ..gui.demo import main as run_demo
    except ModuleNotFoundError as error:
        if error.name != "napari_unet_lab.gui.demo":
            raise
        return _fail(f"{PROG} demo", "the demo is not part of this install", EXIT_FAILURE)
    return run_demo(argv)
