"""What every export needs: a plain copy of the network, example inputs, and a check.

Exported networks compute what `UNet.forward` computes, the class scores
(logits), for a batch ``(B, C, Y, X)`` of normalised images. Every export is
compared with the PyTorch network (`check_agreement`) before it is written.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

import numpy as np
import torch
from torch import nn

from ..unet import Conv1x1, Conv3x3, UNet

EXTRA = "export"  # the pip extra with the packages that ONNX and bioimage.io export need

# Exported outputs must match the network's within this, relative to the largest score.
TOLERANCE = 1e-5


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


def check_agreement(
    model: UNet, run_exported: Callable[[np.ndarray], np.ndarray], what: str
) -> float:
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
def quiet_exporters() -> Iterator[None]:
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
