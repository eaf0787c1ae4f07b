"""``napari-unet-lab export``: a model as TorchScript, ONNX or a bioimage.io package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.model.export import FORMATS
from ..core.model.files import ModelFileError
from .common import (
    EXIT_OK,
    InputError,
    UsageError,
    load_named_model,
    output_options,
    refuse_existing,
)
from .model_images import read_model_image


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        "export",
        parents=[output_options()],
        help="export a model as ONNX, TorchScript or a bioimage.io package",
        description=(
            "Export a model for other tools: TorchScript (.pt), ONNX (.onnx), or a "
            "bioimage.io model package (.zip, validated offline with bioimageio.spec). "
            "ONNX and bioimage.io need: pip install 'napari-unet-lab[export]'."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    parser.add_argument(
        "--test-image",
        type=Path,
        help="bioimage.io: image for the test tensors (default: the nuclei sample)",
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        choices=("torchscript", "onnx"),
        default=["torchscript", "onnx"],
        help="bioimage.io: weight formats to include (default: torchscript onnx)",
    )
    parser.add_argument(
        "--author", action="append", default=[], help="bioimage.io: an author (repeatable)"
    )
    parser.add_argument(
        "--license", default="BSD-3-Clause", help="bioimage.io: SPDX licence of the weights"
    )
    parser.add_argument("--tag", action="append", default=[], help="bioimage.io: extra tag")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export a model as TorchScript, ONNX or a bioimage.io package."""
    from ..core.model import export as model_export

    model, info, builtin = load_named_model(args.model)
    refuse_existing([args.output], args.overwrite)
    if args.format == "torchscript":
        path = model_export.export_torchscript(model, args.output, overwrite=args.overwrite)
        print(f"TorchScript model (checked against PyTorch): {path}")
        return EXIT_OK
    if args.format == "onnx":
        path = model_export.export_onnx(model, args.output, overwrite=args.overwrite)
        print(f"ONNX model (checked with onnxruntime): {path}")
        return EXIT_OK
    if args.test_image is not None:
        test_image = read_model_image(args.test_image, model.config.in_channels, info.name)
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
