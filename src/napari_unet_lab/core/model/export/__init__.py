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

from .bioimageio import BioimageioPackage, check_license, export_bioimageio, validate_bioimageio
from .network import (
    EXTRA,
    TOLERANCE,
    ExportError,
    MissingPackageError,
    example_input,
    exportable_network,
    require,
    smallest_input_size,
)
from .torchscript_onnx import (
    ONNX_OPSET,
    export_onnx,
    export_torchscript,
    onnx_bytes,
    torchscript_bytes,
)

FORMATS = ("torchscript", "onnx", "bioimageio")  # what `napari-unet-lab export` writes

__all__ = [
    "EXTRA",
    "FORMATS",
    "ONNX_OPSET",
    "TOLERANCE",
    "BioimageioPackage",
    "ExportError",
    "MissingPackageError",
    "check_license",
    "example_input",
    "export_bioimageio",
    "export_onnx",
    "export_torchscript",
    "exportable_network",
    "onnx_bytes",
    "require",
    "smallest_input_size",
    "torchscript_bytes",
    "validate_bioimageio",
]
