"""bioimage.io model packages: a zip other tools (deepImageJ, bioimageio.core) can run.

The package holds the network as TorchScript and/or ONNX weights, test tensors
cut from a real image, a cover image, a README and a description
(`package_description`). It is validated offline before it is written.
Needs the optional packages of the ``export`` extra
(``pip install "napari-unet-lab[export]"``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import tifffile
import torch

from ...formats.atomic import write_atomically
from ..files import ModelInfo
from ..unet import UNet
from .bioimageio_description import normalised_like_bioimageio, package_description, package_readme
from .network import ExportError, require, smallest_input_size
from .torchscript_onnx import onnx_bytes, torchscript_bytes


@dataclass(frozen=True)
class BioimageioPackage:
    """A bioimage.io model package written by `export_bioimageio`.

    Attributes
    ----------
    path : Path
        The zip file.
    status : str
        bioimage.io validation status: ``"valid-format"`` when the description,
        its files, hashes and test tensors check out (``"passed"`` when
        bioimageio.core also ran the model).
    warnings : list of str
        What the validation suggests improving; the package is valid regardless.
    """

    path: Path
    status: str
    warnings: list[str] = field(default_factory=list)


def export_bioimageio(
    path: str | Path,
    model: UNet,
    info: ModelInfo,
    test_image: np.ndarray,
    *,
    authors: Sequence[str] = (),
    license: str = "BSD-3-Clause",
    tags: Sequence[str] = (),
    weights: Sequence[str] = ("torchscript", "onnx"),
    overwrite: bool = False,
) -> BioimageioPackage:
    """Write a bioimage.io model package (a zip) and validate it, offline.

    Parameters
    ----------
    path : str or path-like
        The zip file to write, conventionally ``<name>.bioimageio.zip``.
    model, info : UNet, ModelInfo
        The network and its description, as `load_model` returns them.
    test_image : ndarray, shape (Y, X) or (C, Y, X)
        Raw image the package's test tensors are cut from (the centre, at most
        256 pixels square, of a size the network accepts).
    authors : sequence of str
        Names of the model's authors.
    license : str
        SPDX identifier of the licence the weights are shared under.
    tags : sequence of str
        Extra bioimage.io tags (``"nuclei"``, ``"fluorescence-light-microscopy"``…).
    weights : sequence of {"torchscript", "onnx"}
        Weight formats to include; the first is the original, the others name it
        as their parent.
    overwrite : bool
        Replace an existing file; without it an existing file is never touched.

    Returns
    -------
    BioimageioPackage
        The path, the validation status and any validation warnings.

    Raises
    ------
    MissingPackageError
        If bioimageio.spec (or, for ONNX weights, onnx/onnxruntime) is missing.
    ExportError
        If the package does not validate.
    ValueError
        If the test image does not fit the model.

    Notes
    -----
    The description records what other tools need: input axes
    ``(batch, channel, y, x)`` with sizes ``min + k * step`` (`smallest_input_size`
    and `UNet.size_multiple`); output sizes as the input's minus twice
    `UNet.output_offset` (valid padding crops the border itself) or, for same
    padding, with `UNet.halo` to crop; the model file's intensity normalisation
    as preprocessing (``scale_range`` on percentiles, or ``scale_linear`` for a
    fixed range); softmax to class probabilities as postprocessing; citations.
    The full model description of this plugin is kept under
    ``config: napari-unet-lab``.

    Validation runs `bioimageio.spec.load_description` with
    ``perform_io_checks=True``, which checks every file's SHA-256 and the test
    tensors' shapes against the axes. Those checks only need the network for
    URLs, and the package holds none (citations are DOIs), so it runs offline.
    bioimageio.core, if installed, can additionally run the test tensors through
    the weights (``bioimageio test <zip>``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"the file {path} already exists; pass overwrite=True to replace it.")
    spec = require("bioimageio.spec", "bioimage.io export")
    unknown = [name for name in weights if name not in ("torchscript", "onnx")]
    if unknown or not weights:
        raise ValueError(f"weights must be 'torchscript' and/or 'onnx', got {list(weights)}")
    if model.config != info.config:
        raise ValueError("the model does not match its description")
    check_license(license)

    test_input = _test_input(model, test_image)
    normalised = normalised_like_bioimageio(test_input, info.normalization)
    with torch.no_grad():
        logits = model.for_inference().cpu()(torch.from_numpy(normalised))
        test_output = torch.softmax(logits, dim=1).numpy().astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="napari-unet-lab-export-") as folder:
        folder = Path(folder)
        files = {"test_input": folder / "test_input.npy", "test_output": folder / "test_output.npy"}
        np.save(files["test_input"], test_input)
        np.save(files["test_output"], test_output)
        # the same tensors as images, for people and viewers (bioimage.io "sample tensors")
        files["sample_input"] = folder / "sample_input.tif"
        files["sample_output"] = folder / "sample_output.tif"
        tifffile.imwrite(
            files["sample_input"],
            test_input[0].squeeze(0) if test_input.shape[1] == 1 else test_input[0],
        )
        tifffile.imwrite(files["sample_output"], test_output[0])
        files["cover"] = _write_cover(folder / "cover.png", normalised, test_output, model)
        files["documentation"] = folder / "README.md"
        files["documentation"].write_text(package_readme(model, info), encoding="utf-8")
        if "torchscript" in weights:
            files["torchscript"] = folder / "weights_torchscript.pt"
            files["torchscript"].write_bytes(torchscript_bytes(model))
        if "onnx" in weights:
            files["onnx"] = folder / "weights.onnx"
            files["onnx"].write_bytes(onnx_bytes(model))

        packed = folder / "package.zip"
        try:
            description = package_description(
                model, info, files, list(weights), authors=authors, license=license, tags=tags
            )
            with _offline_validation(spec):
                spec.save_bioimageio_package(description, output_path=packed)
        except ValueError as error:  # pydantic's ValidationError, or an invalid package
            raise ExportError(f"bioimage.io refuses the description: {error}") from None
        status, notes = validate_bioimageio(packed)
        if status == "failed":  # checked before publishing: no invalid package at `path`
            raise ExportError("the bioimage.io package is not valid:\n" + "\n".join(notes))

        def copy_package(file) -> None:
            with packed.open("rb") as source:
                shutil.copyfileobj(source, file)

        write_atomically(path, copy_package, overwrite=overwrite)
    return BioimageioPackage(path, status, notes)


def check_license(license: str) -> str:
    """Return `license` if bioimage.io accepts it as an SPDX identifier, else raise ValueError."""
    v0_5 = require("bioimageio.spec.model.v0_5", "bioimage.io export")
    try:
        v0_5.LicenseId(license)
    except ValueError:  # pydantic's ValidationError
        raise ValueError(
            f"{license!r} is not an SPDX licence identifier bioimage.io knows "
            "(e.g. MIT, BSD-3-Clause, CC-BY-4.0, CC0-1.0)"
        ) from None
    return license


def validate_bioimageio(path: str | Path) -> tuple[str, list[str]]:
    """Validate a bioimage.io package or ``rdf.yaml`` with bioimageio.spec.

    With ``perform_io_checks=True``: every file's SHA-256 and the test tensors'
    shapes are checked. Only URLs in the description would be fetched; the
    packages of `export_bioimageio` have none, so their validation is offline.

    Returns
    -------
    (str, list of str)
        The status (``"failed"``, ``"valid-format"`` or ``"passed"``) and the
        errors (when failed) or warnings, one line each.
    """
    spec = require("bioimageio.spec", "bioimage.io validation")
    with _offline_validation(spec):
        description = spec.load_description(Path(path), perform_io_checks=True)
    summary = description.validation_summary
    notes = []
    for detail in summary.details:
        for entry in [*detail.errors, *detail.warnings]:
            location = ".".join(str(part) for part in entry.loc)
            notes.append(f"{location}: {entry.msg}" if location else entry.msg)
    return summary.status, notes


@contextlib.contextmanager
def _offline_validation(spec: ModuleType) -> Iterator[None]:
    """Validate with file checks on and nothing logged; the packages hold no URLs."""
    context = spec.get_validation_context().replace(perform_io_checks=True, log_warnings=False)
    with context, warnings.catch_warnings():
        # bioimageio.spec notes file references it resolves later, when packaging
        warnings.filterwarnings("ignore", message="Found mapping with 'source'")
        yield


def _test_input(model: UNet, image: np.ndarray, largest: int = 256) -> np.ndarray:
    image = np.asarray(image)
    channels = model.config.in_channels
    if image.ndim == 2 and channels == 1:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != channels:
        raise ValueError(
            f"the test image must be (Y, X) or (C, Y, X) with C = {channels} channels; "
            f"got shape {image.shape}"
        )
    if np.dtype(image.dtype).kind not in "biuf" or not np.isfinite(image).all():
        raise ValueError("the test image must hold finite numbers")
    height, width = image.shape[-2:]
    smallest = smallest_input_size(model)
    size = model.valid_input_size(min(height, width, max(largest, smallest)), larger=False)
    if size < smallest:
        raise ValueError(
            f"the test image ({height}x{width}) is smaller than the {smallest}x{smallest} "
            "pixels the model needs"
        )
    top, left = (height - size) // 2, (width - size) // 2
    crop = image[:, top : top + size, left : left + size]
    return np.ascontiguousarray(crop[None], dtype=np.float32)  # (1, C, Y, X)


def _write_cover(
    path: Path, normalised: np.ndarray, probabilities: np.ndarray, model: UNet
) -> Path:
    """Write a 2:1 cover: the test input (where the output lies) beside the object probability."""
    imageio = require("imageio.v3", "bioimage.io export")
    offset = model.output_offset
    size = probabilities.shape[-1]
    image = normalised[0, 0, offset : offset + size, offset : offset + size]
    low, high = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    objects = 1.0 - probabilities[0, 0]
    gray = np.concatenate([image, objects], axis=1)
    rgb = (np.repeat(gray[..., None], 3, axis=2) * 255).round().astype(np.uint8)
    rgb[:, size:, 1] = (rgb[:, size:, 1] * 0.6).astype(np.uint8)  # objects in magenta
    imageio.imwrite(path, rgb)
    return path
