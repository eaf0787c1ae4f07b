"""Choosing where the network runs: CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import contextlib
import errno
import os
import re

import torch

# What torch, NumPy and the C library say when memory runs out (CPU, CUDA, MPS).
OUT_OF_MEMORY_TEXT = re.compile(
    r"out of memory|can't allocate memory|cannot allocate memory|unable to allocate"
    r"|not enough memory",
    re.IGNORECASE,
)


class NotEnoughMemory(MemoryError):
    """Work that does not fit in memory; the message says what to ask for instead."""


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
    """Tell whether `error` says that memory ran out, on the CPU or an accelerator.

    torch reports an allocation that failed as a ``RuntimeError`` (on the CPU,
    "DefaultCPUAllocator: can't allocate memory"; on a GPU, ``OutOfMemoryError``,
    a ``RuntimeError`` too), NumPy and Python as ``MemoryError``, often with no
    text at all, and the C library as ``OSError`` with ``errno.ENOMEM``.

    Parameters
    ----------
    error : BaseException
        The error raised by the computation.

    Returns
    -------
    bool
        True if it is one of the above.

    Examples
    --------
    >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: ..."))
    True
    >>> is_out_of_memory(MemoryError())
    True
    >>> is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    False
    """
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    return isinstance(error, (RuntimeError, OSError)) and bool(
        OUT_OF_MEMORY_TEXT.search(str(error))
    )


def available_memory(device: torch.device) -> int | None:
    """Return the bytes `device` can still hand out now, or None where that is unknown.

    The CPU: the kernel's estimate of memory available without swapping
    (``MemAvailable`` in ``/proc/meminfo``), else the free pages; CUDA: the free
    memory of the GPU; MPS: the recommended working set less what is allocated.
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        if not hasattr(torch.mps, "recommended_max_memory"):
            return None
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:  # Linux
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # given in kB
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unix: free pages only, so an underestimate
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows)
        return None
