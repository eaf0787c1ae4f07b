"""``napari-unet-lab train``: train a model on images and annotations, save a model file.

The annotations are what the Train widget takes: instance labels (objects), or class
masks and sparse scribbles for a semantic task such as membranes in EM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import NEW_NETWORK_CHANNELS
from ..core.model.files import ModelFileError, ModelInfo, model_paths
from ..core.model.unet import UNet, randomly_initialised
from ..core.train import (
    FINE_TUNING_RATE,
    LOSSES,
    MAX_CLASSES,
    NEW_NETWORK_RATE,
    AnnotatedImage,
    TrainingSettings,
    default_class_names,
    prepare_training,
    trained_model_info,
)
from ..core.train.settings import DEFAULT_MINUTES, DEFAULT_PATIENCE, automatic_learning_rate
from .common import (
    EXIT_OK,
    PROG,
    InputError,
    TextProgress,
    UsageError,
    device_options,
    integer_at_least,
    integer_between,
    load_named_model,
    non_negative_number,
    output_options,
    paired_files,
    positive_number,
    refuse_existing,
    run_with_progress,
    seed,
    selected_device,
    share_below_one,
    write_json,
)
from .model_images import TrainingData, training_data


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        "train",
        parents=[output_options(), device_options()],
        help="train a model on images and their annotations",
        description=(
            "Train a U-Net on 2D images and their annotations, from scratch or from a base "
            "model, and save it as a model file. Annotations are instance labels (0 "
            "background, one value per object; border weights of Ronneberger et al. 2015), "
            "class masks (0 background, 1, 2, … a class each, every pixel annotated) or "
            "scribbles (0 not annotated, 1 background, 2, … a class each), as --annotations says."
        ),
    )
    parser.add_argument("images", metavar="IMAGES", type=Path, help="image or folder")
    parser.add_argument(
        "labels", metavar="LABELS", type=Path, help="annotation image or folder (see --annotations)"
    )
    parser.add_argument(
        "--annotations",
        choices=ANNOTATIONS,
        default="objects",
        help="what LABELS hold: objects (instance labels), classes (class masks, 0 "
        "background) or scribbles (0 not annotated, 1 background, 2… classes); "
        "default: objects",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="model file to write (.json)"
    )
    parser.add_argument(
        "--from",
        dest="base",
        metavar="MODEL",
        help="start from this model (file or built-in name) instead of from scratch",
    )
    parser.add_argument(
        "--match-object-size",
        action=argparse.BooleanOptionalAction,
        default=MATCH_OBJECT_SIZE,
        help="with --from and instance labels: train on images resized so their objects are "
        "as large as the model's (the diameter its file records; benchmarks/README.md)",
    )
    _add_training_options(parser)
    parser.add_argument("--name", help="model name shown in napari (default: the file name)")
    parser.add_argument(
        "--depth",
        type=integer_between(1, 6),  # what UNetConfig takes
        default=3,
        help="new model: poolings, 1 to 6 (default: 3)",
    )
    parser.add_argument(
        "--base-channels",
        type=integer_at_least(1),
        default=NEW_NETWORK_CHANNELS,
        help=f"new model: channels at full resolution (default: {NEW_NETWORK_CHANNELS})",
    )
    parser.add_argument(
        "--padding",
        choices=("valid", "same"),
        default="valid",
        help="new model: convolution padding (default: valid)",
    )
    parser.add_argument("--report", type=Path, help="write losses and scores to this JSON file")
    parser.set_defaults(run=run)
    return parser


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    how_long = parser.add_mutually_exclusive_group()
    how_long.add_argument(
        "--minutes",
        type=positive_number,
        help="train for this much wall time, or less when validation stops improving (see "
        f"--patience); steps take different times on every machine (default: {DEFAULT_MINUTES:g})",
    )
    how_long.add_argument(
        "--steps", type=integer_at_least(1), help="train for this many optimiser steps instead"
    )
    add("--batch-size", type=integer_at_least(1), default=4, help="patches per step (default: 4)")
    add(
        "--patch-size",
        type=integer_at_least(1),
        default=252,
        help="patch edge, rounded up to a size the network takes (default: 252)",
    )
    add(
        "--learning-rate",
        type=positive_number,
        default=None,
        help=f"Adam step size at the start (default: {NEW_NETWORK_RATE:g} for a new model, "
        f"{FINE_TUNING_RATE:g} with --from)",
    )
    add("--seed", type=seed, default=0, help="seed of all randomness, 0 or more (default: 0)")
    add("--validation-images", type=Path, help="held-out images or folder")
    add("--validation-labels", type=Path, help="their labels")
    add(
        "--validation-share",
        type=share_below_one,
        default=0.0,
        help="hold out this share (0 to below 1) of the training pairs for validation instead",
    )
    add(
        "--validate-every",
        type=integer_at_least(0),
        default=0,
        help="steps between validations; 0: after the last step only (default: 0)",
    )
    add(
        "--patience",
        type=integer_at_least(0),
        default=DEFAULT_PATIENCE,
        help="stop after this many validations without gain, keeping the best weights; "
        f"0: never (default: {DEFAULT_PATIENCE})",
    )
    add(
        "--loss",
        choices=LOSSES,
        default=TrainingSettings().loss,
        help=f"training loss (default: {TrainingSettings().loss})",
    )
    add("--freeze-encoder", action="store_true", help="train only the decoder (fine-tuning)")
    from ..core.config import AugmentationConfig, TargetConfig  # here: the rest is training's

    targets, augmentation = TargetConfig(), AugmentationConfig()
    add(
        "--w0",
        type=non_negative_number,
        default=targets.w0,
        help="border weight: extra weight of background pixels between touching objects; "
        f"0: none (default: {targets.w0:g})",
    )
    add(
        "--sigma",
        type=positive_number,
        default=targets.sigma,
        help="border weight: width of the gap term between objects, in pixels, above 0 "
        f"(default: {targets.sigma:g})",
    )
    add(
        "--zoom",
        type=non_negative_number,
        default=augmentation.zoom,
        help="augmentation: zoom each patch in or out at random by up to 1 + ZOOM times (0.25: "
        "from 1/1.25 to 1.25), so the model meets more object sizes; 0: off (default: "
        f"{augmentation.zoom:g})",
    )
    add(
        "--invert-contrast",
        type=_chance,
        default=augmentation.invert,
        help="augmentation: chance, 0 to 1, that a patch's contrast is inverted (dark objects "
        f"on a bright background); 0: off (default: {augmentation.invert:g})",
    )


def _chance(text: str) -> float:
    """Parse a probability: a number from 0 to 1."""
    value = non_negative_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a chance from 0 to 1, got {text}")
    return value


# What ``--annotations`` takes, as the user calls the kinds of annotation.
ANNOTATIONS = ("objects", "classes", "scribbles")
MATCH_OBJECT_SIZE = True  # as benchmarks/bench_fine_tune_resize.py measured it helps


def annotated_images(data: TrainingData, annotations: str = "objects") -> list[AnnotatedImage]:
    """Return image and annotation pairs as the core's annotated images.

    Parameters
    ----------
    data : TrainingData
        Images and their annotations.
    annotations : {"objects", "classes", "scribbles"}
        What the annotations are; class masks become scribbles on every pixel.

    Raises
    ------
    InputError
        If a class mask names more classes than a network may learn.
    """
    if annotations != "classes":
        return [
            AnnotatedImage(image, labels, annotations, name=name)
            for image, labels, name in zip(data.images, data.labels, data.names, strict=True)
        ]
    return [
        AnnotatedImage(image, class_mask_as_scribbles(mask, name), "scribbles", name=name)
        for image, mask, name in zip(data.images, data.labels, data.names, strict=True)
    ]


def class_mask_as_scribbles(mask: np.ndarray, name: str = "the class mask") -> np.ndarray:
    """Return a class mask (0 background, 1, 2, … classes) as scribbles covering every pixel.

    Scribbles keep 0 for "not annotated", so every class moves up by one: a class
    mask annotates the background everywhere it is 0.

    Examples
    --------
    >>> class_mask_as_scribbles(np.array([[0, 1], [2, 0]]))
    array([[1, 2],
           [3, 1]])
    """
    largest = int(mask.max(initial=0))
    if largest + 1 > MAX_CLASSES:
        raise InputError(
            f"{name} holds class {largest}, but a network learns at most {MAX_CLASSES - 1} "
            "classes besides the background (0)"
        )
    return mask.astype(np.int64) + 1


def check_writable(paths: Sequence[Path]) -> None:
    """Refuse outputs that cannot be written, before any training step rather than after.

    Raises
    ------
    UsageError
        Naming the output and why: its folder is missing, is a file, or
        cannot be written in (read-only, /proc, no permission).
    """
    for path in paths:
        folder = path.parent
        if not folder.exists():
            raise UsageError(f"cannot write {path}: the folder {folder} does not exist")
        if not folder.is_dir():
            raise UsageError(f"cannot write {path}: {folder} is a file, not a folder")
        try:  # the only sure test: permissions, read-only mounts and /proc all say no here
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp"):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            raise UsageError(
                f"cannot write {path}: the folder {folder} does not take new files ({reason}); "
                "choose another place with -o"
            ) from None


def _model_destination(args: argparse.Namespace) -> tuple[Path, Path]:
    """Return where the model goes; a half-saved model left there does not block the name."""
    from ..core.model.files import check_model_destination

    try:
        return check_model_destination(args.output, overwrite=args.overwrite)
    except FileExistsError:
        raise  # exit code 5, as for every output that exists
    except OSError as error:  # a folder, or a folder that does not exist
        raise UsageError(str(error)) from None


def _base_model(args: argparse.Namespace) -> tuple[UNet | None, ModelInfo | None]:
    """Load the model of ``--from``; instance labels need one that predicts objects."""
    if args.base is None:
        return None, None
    model, base_info, _ = load_named_model(args.base)
    if args.annotations == "objects" and model.config.n_classes != 2:
        raise ModelFileError(
            f"{args.base} predicts {model.config.n_classes} classes; training from instance "
            "labels needs a model of 2 (background and object)"
        )
    return model, base_info


def _training_and_validation_pairs(args: argparse.Namespace) -> tuple[list, list]:
    pairs = paired_files(args.images, args.labels)
    if args.validation_images is not None:
        return pairs, paired_files(args.validation_images, args.validation_labels)
    if not args.validation_share:
        return pairs, []
    order = np.random.default_rng(args.seed).permutation(len(pairs))
    held_out = max(1, round(args.validation_share * len(pairs)))
    if held_out >= len(pairs):
        raise InputError(
            f"--validation-share {args.validation_share} leaves no training image of {len(pairs)}"
        )
    validation_pairs = [pairs[i] for i in sorted(order[:held_out])]
    return [pairs[i] for i in sorted(order[held_out:])], validation_pairs


def _new_model(args: argparse.Namespace, data: TrainingData) -> UNet:
    from ..core.config import UNetConfig

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
    return randomly_initialised(config, args.seed)  # from the seed, global state kept


def _settings(args: argparse.Namespace, normalization: dict[str, Any]) -> TrainingSettings:
    from ..core.config import AugmentationConfig

    minutes = None if args.steps is not None else (args.minutes or DEFAULT_MINUTES)
    try:
        return TrainingSettings(
            steps=args.steps or TrainingSettings().steps,  # unused with minutes
            minutes=minutes,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
            learning_rate=args.learning_rate or automatic_learning_rate(args.base is not None),
            validate_every=args.validate_every,
            patience=args.patience,
            loss=args.loss,
            freeze_encoder=args.freeze_encoder,
            normalization=normalization,
            augmentation=AugmentationConfig(zoom=args.zoom, invert=args.invert_contrast),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Train a model on images and their annotations, and save it as a model file."""
    from ..core.config import TargetConfig
    from ..core.images import DEFAULT_NORMALIZATION
    from ..core.model.files import save_model

    if (args.validation_images is None) != (args.validation_labels is None):
        raise UsageError("give both --validation-images and --validation-labels, or neither")
    if args.validation_images is not None and args.validation_share:
        raise UsageError("give --validation-images or --validation-share, not both")
    device = selected_device(args.device)
    json_path, weights_path = model_paths(args.output)
    outputs = [json_path, weights_path, *([args.report] if args.report else [])]
    refuse_existing([args.report] if args.report else [], args.overwrite)
    try:
        targets = TargetConfig(w0=args.w0, sigma=args.sigma)
    except ValueError as error:
        raise UsageError(str(error)) from None

    model, base_info = _base_model(args)
    if model is not None:
        in_channels, class_names = model.config.in_channels, list(base_info.class_names)
        normalization = dict(base_info.normalization)
    else:
        in_channels = None
        class_names, normalization = default_class_names(2), dict(DEFAULT_NORMALIZATION)

    pairs, validation_pairs = _training_and_validation_pairs(args)
    model_name = "" if base_info is None else base_info.name
    data = training_data(pairs, in_channels, model_name)
    if in_channels is None:  # a new model takes the channels of the first image
        in_channels = 1 if data.images[0].ndim == 2 else data.images[0].shape[0]
    validation = training_data(validation_pairs, in_channels, model_name)
    if model is None:
        model = _new_model(args, data)
    model.to(device)
    settings = _settings(args, normalization)
    # inputs are known good: now the outputs, before any training
    check_writable(outputs)
    _model_destination(args)  # a half-saved model left there does not block the name

    # the one pipeline of napari and scripts: the same targets and class weights
    preparation = prepare_training(
        model,
        annotated_images(data, args.annotations),
        annotated_images(validation, args.annotations),
        settings,
        args.seed,
        targets,
        (base_info.object_diameter if args.match_object_size and base_info else None),
    )
    try:
        training_run = run_with_progress(preparation, TextProgress("preparing", not args.quiet))
    except ValueError as error:  # annotations the core refuses, in plain words
        raise InputError(str(error)) from None
    started = time.perf_counter()
    result = run_with_progress(training_run.run(), TextProgress("training", not args.quiet))
    wall_seconds = time.perf_counter() - started

    training_run.model.cpu()
    if args.annotations != "objects":  # the annotations may have named more classes
        class_names = default_class_names(training_run.model.config.n_classes, base_info)
    metrics = {}
    if result.validation_iou is not None:
        definition = (
            "pixel IoU of the object class on the validation images, against their training "
            "targets (1 px background gap between touching objects)"
            if args.annotations == "objects"
            else "pixel IoU averaged over the classes besides the background, on the annotated "
            "pixels of the validation images"
        )
        metrics = {
            "val_pixel_iou": round(float(result.validation_iou), 4),
            "val_images": len(validation.images),
            "definition": definition,
        }
    info = trained_model_info(
        training_run,
        args.name or json_path.stem,
        seed=args.seed,
        images=data.names,
        validation_images=validation.names,
        targets=targets,
        class_names=class_names,
        base=base_info,
        description=(
            f"U-Net trained with {PROG} on {len(data.images)} image(s)"
            + ("." if base_info is None else f", starting from the model {base_info.name!r}.")
        ),
        training={"command": f"{PROG} train"},
        metrics=metrics,
        annotations=annotated_images(data, args.annotations),  # object size, as annotated
    )
    saved = save_model(json_path, training_run.model, info, overwrite=args.overwrite)
    _print_and_report(args, saved, result, wall_seconds, settings, data, validation)
    return EXIT_OK


def _print_and_report(args, saved, result, wall_seconds, settings, data, validation):
    validation_text = (
        f", validation IoU {result.validation_iou:.3f}" if result.validation_iou is not None else ""
    )
    print(
        f"trained {result.steps} steps in {wall_seconds:.1f} s, final loss "
        f"{result.losses[-1]:.4f}{validation_text}"
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
            "validation_images": validation.names,
        }
        write_json(args.report, report, args.overwrite)
        print(f"report: {args.report}")
