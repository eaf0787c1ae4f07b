"""Model export for other tools: TorchScript, ONNX, and the bioimage.io model format.

Exported networks compute what `UNet.forward` computes, the class scores
(logits), for a batch ``(B, C, Y, X)`` of normalised images; every export is
checked against the PyTorch network before it is written. A bioimage.io package
adds what other tools need to use the network on raw images: the sizes it
accepts, the intensity normalisation, a softmax to class probabilities, test
tensors, a cover image and documentation.

ONNX export and bioimage.io packages need the optional packages of the
``export`` extra (``pip install "napari-unet-lab[export]"``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import tifffile
import torch
from torch import nn

from ..formats.atomic import write_atomically
from ..images import intensity_range_for
from .files import ModelInfo
from .unet import Conv1x1, Conv3x3, UNet

EXTRA = "export"  # the pip extra with the packages that ONNX and bioimage.io export need
ONNX_OPSET = 18  # the lowest opset torch's ONNX exporter writes without converting
FORMATS = ("torchscript", "onnx", "bioimageio")

# Exported outputs must match the network's within this, relative to the largest score.
TOLERANCE = 1e-5
# bioimage.io's scale_range divides by (high - low + eps); the package states the same eps.
SCALE_RANGE_EPS = 1e-6

# Citations: the network, and the data of models trained on BBBC039.
UNET_CITATION = (
    "O. Ronneberger, P. Fischer, T. Brox. U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015.",
    "10.1007/978-3-319-24574-4_28",
)
BBBC039_CITATIONS = (
    (
        "J. C. Caicedo et al. Evaluation of Deep Learning Strategies for Nucleus Segmentation "
        "in Fluorescence Images. Cytometry Part A 95:952-965, 2019 (BBBC039).",
        "10.1002/cyto.a.23863",
    ),
    (
        "V. Ljosa, K. L. Sokolnicki, A. E. Carpenter. Annotated high-throughput microscopy "
        "image sets for validation. Nature Methods 9:637, 2012 (BBBC).",
        "10.1038/nmeth.2083",
    ),
)


class ExportError(RuntimeError):
    """An export does not compute what the network computes, or is not a valid package."""


class MissingPackageError(ImportError):
    """An optional package that an export format needs is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional package, or raise `MissingPackageError` naming the extra.

    Examples
    --------
    >>> require("numpy", "Counting").__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or module
        raise MissingPackageError(
            f"{purpose} needs the Python package {missing!r}, which is not installed; "
            f'install it with: pip install "napari-unet-lab[{EXTRA}]"'
        ) from None


# ------------------------------------------------------------------- the network
def exportable_network(model: UNet) -> UNet:
    """Return a copy of `model` to export: evaluation mode, CPU, plain convolutions.

    Batch norm is folded into the convolutions (`UNet.for_inference`), and the
    `Conv3x3`/`Conv1x1` layers, which take special CPU kernels to make tiled
    prediction bit-identical, become standard `torch.nn.Conv2d` layers with the
    same weights, an operation every runtime has. Results agree with the
    network to float32 rounding.
    """
    network = model.for_inference().cpu().float()
    for name, module in list(network.named_modules()):
        if isinstance(module, (Conv3x3, Conv1x1)):
            plain = nn.Conv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                padding=module.padding,
                bias=module.bias is not None,
            )
            plain.load_state_dict(module.state_dict())
            parent, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent), child, plain)
    return network.eval().requires_grad_(False)


def smallest_input_size(model: UNet) -> int:
    """Return the smallest input edge whose output has pixels unaffected by the border.

    For valid padding this is `UNet.min_input_size`; for same padding, the
    smallest accepted size larger than twice the halo, since the outer
    ``halo`` pixels of the output see the zero padding.
    """
    if model.config.padding == "valid":
        return model.min_input_size
    return model.valid_input_size(2 * model.halo + 1)


def example_input(
    model: UNet, shape: tuple[int, int] | None = None, batch: int = 2, seed: int = 0
) -> torch.Tensor:
    """Return a random batch ``(batch, C, Y, X)`` of a size the network accepts.

    The default shape, ``(smallest, smallest + size_multiple)``, is the
    smallest non-square one, so an export traced on it cannot mix up the axes.
    """
    if shape is None:
        smallest = smallest_input_size(model)
        shape = (smallest, smallest + model.size_multiple)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, model.config.in_channels, *shape), generator=generator)


def _check_agreement(model: UNet, run_exported, what: str) -> float:
    """Compare an exported network with `model` on an input of another batch and size.

    Exports are traced on `example_input`; checking on another batch size and
    image size shows that they take any accepted size, not only the traced one.

    Returns
    -------
    float
        The largest absolute difference of the class scores.
    """
    smallest, step = smallest_input_size(model), model.size_multiple
    inputs = example_input(model, (smallest + 3 * step, smallest + step), batch=1, seed=1)
    with torch.no_grad():
        expected = model.for_inference().cpu()(inputs).numpy()
    found = np.asarray(run_exported(inputs.numpy()))
    if found.shape != expected.shape:
        raise ExportError(
            f"the {what} export gives shape {found.shape} for input {tuple(inputs.shape)}, "
            f"the network {expected.shape}"
        )
    error = float(np.abs(found - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not error <= allowed:
        raise ExportError(
            f"the {what} export differs from the network by up to {error:.3g} (allowed "
            f"{allowed:.3g}); it was not written"
        )
    return error


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the deprecation notes and log lines of torch's exporters, not errors."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, but TorchScript files
            # are what bioimage.io consumers (deepImageJ, bioimageio.core) load
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")
            # the U-Net reads tensor sizes for its size check and skip crops; the crops
            # are the same for every accepted input size, so the trace is general
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# -------------------------------------------------------------------- TorchScript
def torchscript_bytes(model: UNet) -> bytes:
    """Return the network as a TorchScript file's content, checked against `model`.

    Raises
    ------
    ExportError
        If the TorchScript module's outputs differ from the network's.
    """
    network = exportable_network(model)
    with torch.no_grad(), _quiet_exporters():
        # check_trace off: _check_agreement checks at another batch and image size
        traced = torch.jit.trace(network, example_input(model), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")

    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(inputs)).numpy()

    _check_agreement(model, run, "TorchScript")
    return buffer.getvalue()


def export_torchscript(model: UNet, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save the network as TorchScript (``torch.jit.load`` reads it), atomically.

    Parameters
    ----------
    model : UNet
        The network; not changed.
    path : str or path-like
        The file to write, conventionally ``.pt``.
    overwrite : bool
        Replace an existing file; without it an existing file is never touched.

    Returns
    -------
    Path
        The file written.

    Notes
    -----
    The module takes a float32 batch ``(B, C, Y, X)`` of normalised images of a
    size the network accepts (`UNet.valid_input_size`) and returns class scores
    ``(B, n_classes, Y', X')``, smaller by twice `UNet.output_offset` for valid
    padding. It does not check the input size itself.
    """
    data = torchscript_bytes(model)
    return write_atomically(path, lambda file: file.write(data), overwrite=overwrite)


# --------------------------------------------------------------------------- ONNX
def onnx_bytes(model: UNet) -> bytes:
    """Return the network as an ONNX model's content, checked with onnxruntime.

    The input ``input`` has a dynamic batch size and dynamic sizes of the form
    ``smallest + k * size_multiple``, the sizes the network accepts.

    Raises
    ------
    MissingPackageError
        If onnx, onnxscript or onnxruntime is missing.
    ExportError
        If onnxruntime's outputs differ from the network's.
    """
    for package in ("onnx", "onnxscript"):
        require(package, "ONNX export")
    onnxruntime = require("onnxruntime", "Checking an ONNX export")
    network = exportable_network(model)
    step, smallest = model.size_multiple, smallest_input_size(model)
    Dim = torch.export.Dim
    rows, columns = Dim("rows", min=0), Dim("columns", min=0)
    sizes = {
        0: Dim("batch", min=1),
        2: step * rows + smallest,
        3: step * columns + smallest,
    }
    # torch.export specialises sizes traced at k = 0 or 1; trace at k = 2 and 3
    example = example_input(model, (smallest + 2 * step, smallest + 3 * step))
    with torch.no_grad(), _quiet_exporters():
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes={"image": sizes},
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    data = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    _check_agreement(model, lambda x: session.run(None, {"input": x})[0], "ONNX")
    return data


def export_onnx(model: UNet, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save the network as an ONNX model, checked with onnxruntime, atomically.

    Parameters
    ----------
    model : UNet
        The network; not changed.
    path : str or path-like
        The file to write, conventionally ``.onnx``.
    overwrite : bool
        Replace an existing file; without it an existing file is never touched.

    Returns
    -------
    Path
        The file written.

    Notes
    -----
    Input ``input``: a float32 batch ``(B, C, Y, X)`` of normalised images;
    output ``output``: class scores ``(B, n_classes, Y', X')``, as for
    `export_torchscript`. Opset `ONNX_OPSET`.
    """
    data = onnx_bytes(model)
    return write_atomically(path, lambda file: file.write(data), overwrite=overwrite)


# --------------------------------------------------------------------- bioimage.io
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
        The network and its description, as `core.io.load_model` returns them.
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
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    spec = require("bioimageio.spec", "bioimage.io export")
    unknown = [name for name in weights if name not in ("torchscript", "onnx")]
    if unknown or not weights:
        raise ValueError(f"weights must be 'torchscript' and/or 'onnx', got {list(weights)}")
    if model.config != info.config:
        raise ValueError("the model does not match its description")
    check_license(license)

    test_input = _test_input(model, test_image)
    normalised = _normalised_like_bioimageio(test_input, info.normalization)
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
        files["documentation"].write_text(_documentation(model, info), encoding="utf-8")
        if "torchscript" in weights:
            files["torchscript"] = folder / "weights_torchscript.pt"
            files["torchscript"].write_bytes(torchscript_bytes(model))
        if "onnx" in weights:
            files["onnx"] = folder / "weights.onnx"
            files["onnx"].write_bytes(onnx_bytes(model))

        packed = folder / "package.zip"
        try:
            description = _model_description(
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


def _normalised_like_bioimageio(
    test_input: np.ndarray, normalization: dict[str, Any]
) -> np.ndarray:
    """Apply the preprocessing the package states, as bioimage.io tools apply it."""
    method = normalization.get("method", "percentile")
    if method == "none":
        return test_input
    low, high = intensity_range_for(test_input, normalization)
    if method == "percentile":
        return ((test_input - low) / (high - low + SCALE_RANGE_EPS)).astype(np.float32)
    gain, offset = _linear_scaling(low, high)
    return (test_input * np.float32(gain) + np.float32(offset)).astype(np.float32)


def _linear_scaling(low: float, high: float) -> tuple[float, float]:
    gain = 1.0 / (high - low) if high != low else 1.0
    return gain, -low * gain


def _preprocessing(v0_5: ModuleType, normalization: dict[str, Any]) -> list[Any]:
    method = normalization.get("method", "percentile")
    if method == "none":
        return []
    if method == "percentile":
        # the plugin normalises each image (all its channels) by its own percentiles
        axes = [v0_5.AxisId(name) for name in ("channel", "y", "x")]
        return [
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=axes,
                    min_percentile=float(normalization.get("low", 1.0)),
                    max_percentile=float(normalization.get("high", 99.8)),
                    eps=SCALE_RANGE_EPS,
                )
            )
        ]
    if method == "fixed":
        gain, offset = _linear_scaling(float(normalization["low"]), float(normalization["high"]))
        return [v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=gain, offset=offset))]
    raise ValueError(f"unknown intensity normalisation {method!r}")


def _identifier(text: str, fallback: str) -> str:
    """Turn a class or channel name into the identifier bioimage.io asks for."""
    name = re.sub(r"\W+", "_", text.strip()).strip("_")
    if not name or not name[0].isalpha():
        name = f"{fallback}_{name}".rstrip("_")
    return name


def _model_description(
    model: UNet,
    info: ModelInfo,
    files: dict[str, Path],
    weights: list[str],
    *,
    authors: Sequence[str],
    license: str,
    tags: Sequence[str],
) -> Any:
    v0_5 = require("bioimageio.spec.model.v0_5", "bioimage.io export")
    step, smallest, offset = model.size_multiple, smallest_input_size(model), model.output_offset
    input_id = v0_5.TensorId("raw")
    input_axes = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(
            channel_names=[
                v0_5.Identifier(f"channel{index}") for index in range(model.config.in_channels)
            ]
        ),
    ]
    output_axes = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(
            channel_names=[
                v0_5.Identifier(_identifier(name, f"class{index}"))
                for index, name in enumerate(info.class_names)
            ]
        ),
    ]
    for axis in ("y", "x"):
        input_axes.append(
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId(axis),
                size=v0_5.ParameterizedSize(min=smallest, step=step),
                description=f"{smallest} + k * {step} pixels (k = 0, 1, 2, ...)",
            )
        )
        # valid convolutions crop the border themselves (the offset); with same
        # padding the outer halo of the output has seen zero padding
        size = v0_5.SizeReference(tensor_id=input_id, axis_id=v0_5.AxisId(axis), offset=-2 * offset)
        if model.config.padding == "valid":
            output_axes.append(
                v0_5.SpaceOutputAxis(
                    id=v0_5.AxisId(axis),
                    size=size,
                    description=f"input cropped by {offset} pixels on each side",
                )
            )
        else:
            output_axes.append(
                v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(axis), size=size, halo=model.halo)
            )
    inputs = [
        v0_5.InputTensorDescr(
            id=input_id,
            description="raw image; normalised by the preprocessing",
            axes=input_axes,
            test_tensor=v0_5.FileDescr(source=files["test_input"]),
            sample_tensor=v0_5.FileDescr(source=files["sample_input"]),
            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=_preprocessing(v0_5, info.normalization),
        )
    ]
    outputs = [
        v0_5.OutputTensorDescr(
            id=v0_5.TensorId("probabilities"),
            description="class probabilities; class 0 is the background",
            axes=output_axes,
            test_tensor=v0_5.FileDescr(source=files["test_output"]),
            sample_tensor=v0_5.FileDescr(source=files["sample_output"]),
            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[
                v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel")))
            ],
        )
    ]
    entries: dict[str, Any] = {}
    original = weights[0]
    comment = "converted from the napari-unet-lab safetensors weights (batch norm folded in)"
    for name in weights:
        parent = None if name == original else original
        if name == "torchscript":
            entries[name] = v0_5.TorchscriptWeightsDescr(
                source=files[name],
                pytorch_version=v0_5.Version(torch.__version__.split("+")[0]),
                parent=parent,
                comment=comment,
            )
        else:
            entries[name] = v0_5.OnnxWeightsDescr(
                source=files[name], opset_version=ONNX_OPSET, parent=parent, comment=comment
            )
    citations = [UNET_CITATION]
    all_tags = ["unet", "2d", "pytorch", "semantic-segmentation", "napari-unet-lab"]
    if _mentions(info.provenance, "BBBC039"):  # the data of the built-in nuclei model
        citations += list(BBBC039_CITATIONS)
        all_tags += ["nuclei", "fluorescence-light-microscopy"]
    all_tags += [tag for tag in tags if tag not in all_tags]
    return v0_5.ModelDescr(
        name=_bioimageio_name(info.name),
        description=(info.description or "A U-Net trained with napari-unet-lab.")[:512],
        authors=[v0_5.Author(name=name) for name in authors],
        cite=[v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in citations],
        license=v0_5.LicenseId(license),
        tags=all_tags,
        documentation=v0_5.FileDescr(source=files["documentation"]),
        covers=[v0_5.FileDescr(source=files["cover"])],
        inputs=inputs,
        outputs=outputs,
        weights=v0_5.WeightsDescr(**entries),
        config={
            "bioimageio": {
                "architecture_type": "UNet",
                "architecture_description": _architecture(model),
                "model_parameter_count": model.parameter_count(),
            },
            "napari-unet-lab": _plugin_description(info),
        },
    )


def _mentions(record: Any, text: str) -> bool:
    if isinstance(record, dict):
        return any(_mentions(value, text) for value in record.values())
    if isinstance(record, (list, tuple)):
        return any(_mentions(value, text) for value in record)
    return isinstance(record, str) and text in record


def _bioimageio_name(name: str) -> str:
    """Return a name of the characters bioimage.io allows, 5 to 64 long."""
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]", "_", name).strip() or "model"
    return f"{cleaned} (napari-unet-lab U-Net)"[:64] if len(cleaned) < 40 else cleaned[:64]


def _architecture(model: UNet) -> str:
    config = model.config
    return (
        f"2D U-Net (Ronneberger et al. 2015): {config.depth} poolings, "
        f"{config.base_channels} channels at full resolution, {config.padding} padding, "
        f"batch norm {'folded into the convolutions' if config.batch_norm else 'none'}"
    )


def _plugin_description(info: ModelInfo) -> dict[str, Any]:
    """Return the model file's JSON, to rebuild the model or predict as the plugin does."""
    return {
        "name": info.name,
        "architecture": info.config.to_dict(),
        "class_names": list(info.class_names),
        "normalization": dict(info.normalization),
        "training": info.training,
        "provenance": info.provenance,
        "metrics": info.metrics,
    }


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


def _documentation(model: UNet, info: ModelInfo) -> str:
    config, step = model.config, model.size_multiple
    smallest, offset = smallest_input_size(model), model.output_offset
    normalization = info.normalization
    method = normalization.get("method", "percentile")
    if method == "percentile":
        normalised = (
            f"mapped linearly so that the {normalization.get('low', 1.0)} and "
            f"{normalization.get('high', 99.8)} percentiles of each image (all channels "
            "together) become 0 and 1 (`scale_range`)"
        )
    elif method == "fixed":
        normalised = (
            f"mapped linearly from [{normalization['low']}, {normalization['high']}] to [0, 1] "
            "(`scale_linear`)"
        )
    else:
        normalised = "used as they are"
    if config.padding == "valid":
        geometry = (
            f"The output is smaller than the input by {offset} pixels on each side (valid "
            "convolutions, as in the paper). To segment a whole image, pad it by mirroring "
            f"(NumPy's `reflect` mode) by {offset} pixels, or predict overlapping tiles."
        )
    else:
        geometry = (
            f"The output has the input's size; its outer {model.halo} pixels (the halo) have "
            "seen the zero padding and are best cropped when predicting in tiles."
        )
    training = info.training.get("settings", {})
    trained = (
        ", ".join(
            f"{key} {value}" for key, value in training.items() if not isinstance(value, dict)
        )
        or "not recorded"
    )
    metrics = "\n".join(f"- {key}: {value}" for key, value in info.metrics.items()) or (
        "- not measured yet"
    )
    data = "\n".join(f"- {key}: {value}" for key, value in info.provenance.items()) or (
        "- not recorded"
    )
    classes = ", ".join(f"{index}: {name}" for index, name in enumerate(info.class_names))
    return f"""# {info.name}

{info.description or "A U-Net trained with napari-unet-lab."}

Exported from the napari-unet-lab model `{info.name}`: a 2D U-Net
(Ronneberger et al. 2015) with {config.depth} poolings, {config.base_channels} channels at full
resolution and {config.padding} padding ({model.parameter_count():,} parameters).

## Input

{config.in_channels} channel(s), axes (batch, channel, y, x), float32. Intensities are
{normalised}. Accepted sizes along y and x: {smallest} + k * {step} pixels.

## Output

Class probabilities (softmax of the network's scores) for the classes {classes}.
{geometry}

napari-unet-lab turns them into objects by thresholding the object probability
(1 - background) at 0.5, taking connected components, and splitting objects joined by a narrow
neck with a watershed.

## Training

{trained}

Data:
{data}

## Validation

{metrics}

Measure it on your own annotated images with
`napari-unet-lab evaluate MODEL IMAGES LABELS --report metrics.json`
(pixel IoU and object average precision at IoU 0.5 to 0.95).
"""
