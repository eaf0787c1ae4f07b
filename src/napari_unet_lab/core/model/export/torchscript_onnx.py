"""TorchScript and ONNX files of a network, each checked against it before it is written.

ONNX export needs the optional packages of the ``export`` extra
(``pip install "napari-unet-lab[export]"``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ...formats.atomic import write_atomically
from ..unet import UNet
from .network import (
    check_agreement,
    example_input,
    exportable_network,
    quiet_exporters,
    require,
    smallest_input_size,
)

ONNX_OPSET = 18  # the lowest opset torch's ONNX exporter writes without converting


def torchscript_bytes(model: UNet) -> bytes:
    """Return the network as a TorchScript file's content, checked against `model`.

    Raises
    ------
    ExportError
        If the TorchScript module's outputs differ from the network's.
    """
    network = exportable_network(model)
    with torch.no_grad(), quiet_exporters():
        # check_trace off: check_agreement checks at another batch and image size
        traced = torch.jit.trace(network, example_input(model), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")

    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(inputs)).numpy()

    check_agreement(model, run, "TorchScript")
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
    with torch.no_grad(), quiet_exporters():
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
    check_agreement(model, lambda x: session.run(None, {"input": x})[0], "ONNX")
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
