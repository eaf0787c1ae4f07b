"""Training step time on the CPU: a lever on and off, side by side in one process.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_training_step                  # channels last
    .venv/bin/python -m benchmarks.bench_training_step --threads 2

Two runs of the Train widget's pipeline (`prepare_training`, 3 BBBC039 train
images, default settings, seed 0) differ only in the lever. Rounds alternate
their order so background load hits both alike; each round times a few steps
of each, and the median per-step time over the rounds (the first dropped:
warm-up) is compared. The result and the machine's load go to
``results/training_step-cpu.json``. A measurement, not a test: see README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from benchmarks.machine import describe_machine
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.unet import randomly_initialised
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import AnnotatedImage, TrainingSettings, prepare_training

DATA = Path("/work/shared/data/bbbc039/train")
RESULTS = Path(__file__).parent / "results"


def training_items(count: int = 3) -> list[AnnotatedImage]:
    """Return the first `count` BBBC039 train images with their instance labels."""
    names = sorted(path.stem for path in (DATA / "images").glob("*.tif"))[:count]
    return [
        AnnotatedImage(
            tifffile.imread(DATA / "images" / f"{name}.tif"),
            tifffile.imread(DATA / "labels" / f"{name}.tif"),
            "objects",
            name=name,
        )
        for name in names
    ]


def main(argv: list[str] | None = None) -> int:
    """Time training steps with channels last off and on; print and record the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "training_step-cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    items = training_items()
    runs = {}
    for lever in (False, True):
        settings = TrainingSettings(steps=10_000, channels_last=lever)
        model = randomly_initialised(UNetConfig(), 0)
        runs[lever] = run_to_end(prepare_training(model, items, (), settings, 0))
    load_before = os.getloadavg()
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for lever in (False, True) if round_ % 2 == 0 else (True, False):
            started = time.perf_counter()
            for _ in range(args.steps_per_round):
                runs[lever].train_step()
            seconds[lever].append((time.perf_counter() - started) / args.steps_per_round)
    off, on = (float(np.median(seconds[lever][1:])) for lever in (False, True))
    result = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_training_step "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "lever": "channels_last",
        "batch": "4 patches of 252 x 252, light U-Net, default augmentation",
        "step_seconds_off": round(off, 3),
        "step_seconds_on": round(on, 3),
        "speed_up": round(off / on, 2),
        "raw_seconds": {str(k): [round(s, 3) for s in v] for k, v in seconds.items()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"channels last: {off:.3f} s -> {on:.3f} s per step ({off / on:.2f}x), {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
