"""Choosing where the network runs: CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import contextlib

import torch


def select_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Return the device to compute on.

    Parameters
    ----------
    preference : str, torch.device or None
        ``"auto"`` (or None) picks CUDA, then Apple MPS, then the CPU. A named
        device (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``) is used as given.

    Raises
    ------
    ValueError
        If the named device is not available on this machine.
    """
    if preference is None or preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for, but no CUDA GPU is available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("Apple MPS was asked for, but it is not available here")
    return device


def available_devices() -> list[str]:
    """Return the device names a user can choose from on this machine."""
    names = ["auto"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return [*names, "cpu"]


def autocast(
    device: torch.device, enabled: bool | None = None
) -> contextlib.AbstractContextManager:
    """Return a mixed-precision context: on for CUDA by default, off elsewhere.

    bfloat16 where the GPU supports it (no overflow risk), float16 otherwise.
    """
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=autocast_dtype(device))


def autocast_dtype(device: torch.device) -> torch.dtype:
    """Return the reduced precision `autocast` uses on `device`.

    Training with float16 needs loss scaling (`torch.amp.GradScaler`);
    bfloat16 does not.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def is_out_of_memory(error: BaseException) -> bool:
    """Return True if `error` says the accelerator ran out of memory."""
    if isinstance(error, torch.cuda.OutOfMemoryError):  # also torch.OutOfMemoryError
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
