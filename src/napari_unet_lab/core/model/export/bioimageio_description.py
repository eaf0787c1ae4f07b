"""What a bioimage.io package says about a model: its description (rdf.yaml) and README.

The description states what other tools need to use the network on raw images:
the sizes it accepts, the intensity normalisation (preprocessing), a softmax to
class probabilities (postprocessing), citations, and this plugin's own model
description under ``config: napari-unet-lab``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ...images import intensity_range_for
from ..files import ModelInfo
from ..unet import UNet
from .network import require, smallest_input_size
from .torchscript_onnx import ONNX_OPSET

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


def normalised_like_bioimageio(test_input: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
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


def package_description(
    model: UNet,
    info: ModelInfo,
    files: dict[str, Path],
    weights: list[str],
    *,
    authors: Sequence[str],
    license: str,
    tags: Sequence[str],
) -> Any:
    """Return the bioimage.io model description (``rdf.yaml``) of a package.

    Parameters
    ----------
    model, info : UNet, ModelInfo
        The network and its description.
    files : dict of str to Path
        The package's files: ``test_input``, ``test_output``, ``sample_input``,
        ``sample_output``, ``cover``, ``documentation`` and one per weight format.
    weights : list of {"torchscript", "onnx"}
        Weight formats; the first is the original, the others name it as their parent.
    authors, license, tags
        As given to `export_bioimageio`.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr
        The description, not yet validated with its files.
    """
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


def package_readme(model: UNet, info: ModelInfo) -> str:
    """Return the package's README: what the model takes, gives, and how it was trained."""
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
