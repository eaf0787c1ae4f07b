"""Where and on what a benchmark ran, and where its results go: shared by every benchmark."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def describe_machine(device: torch.device, **versions: str) -> dict[str, Any]:
    """Describe the machine, the software and the commit the numbers were measured on.

    Parameters
    ----------
    device : torch.device
        The device the benchmark ran on.
    **versions : str
        Versions of further packages the benchmark compares against (e.g. ``monai``).
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        **versions,
        "load_average_start": list(os.getloadavg()),
    }
    try:
        commit, changes = (
            subprocess.run(
                ["git", *command], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            for command in (["rev-parse", "HEAD"], ["status", "--porcelain"])
        )
        info["git_commit"] = commit + (" (with uncommitted changes)" if changes else "")
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def write_report(report: dict[str, Any], out: Path | None) -> None:
    """Write a benchmark's results as JSON, if it has somewhere to write them."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Results written to {out}")
