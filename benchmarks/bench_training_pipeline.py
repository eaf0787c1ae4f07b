"""What the training data pipeline adds to a training step of the light U-Net.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_training_pipeline                # CPU figures
    .venv/bin/python -m benchmarks.bench_training_pipeline --device cuda  # GPU figures

They go to ``results/training_pipeline-cpu.json`` (or ``-cuda.json``).

A `TrainingRun` with the light U-Net (``UNetConfig()``) and the default
`TrainingSettings` (4 patches of 252 per step, cross-entropy with border weights
plus Dice, Adam; mixed precision and channels-last only on CUDA) trains on the
first three BBBC039 train images (by file name), their targets and border
weights made once by ``training_target(labels, "objects")``. Interleaved, it times

- ``bare``: one step on a fixed batch made beforehand by `TrainingRun.batch`:
  forward, loss, backward and optimiser step, exactly as `TrainingRun.train_step`
  does them (same model, optimiser, scaler, autocast, loss);
- ``full``: `TrainingRun.train_step`: the pipeline and the same step;
- ``pipeline``: `TrainingRun.batch`: patch sampling, stacking, the copy to the
  device and `augment_batch` (flips and turns, elastic deformation, intensity);
- ``sampling`` and ``augmentation``: the pipeline's two halves, for where its
  time goes: the patches sampled, stacked and copied to the device; and
  `augment_batch` on a fixed batch of raw patches.

The overhead is (full - bare) / bare, from the medians and also as the median
of the per-round ratios (each round runs every variant once, the order reversed
on odd rounds). Target: at most 10 %. Making targets and weights
(`training_target`) is timed apart: it runs once per image per training run.
The exit status is 0 whatever the target says: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.device import autocast
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.train import (
    TrainingRun,
    TrainingSettings,
    augment_batch,
    training_loss,
    training_target,
)

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.machine import ROOT, describe_machine, write_report
except ImportError:
    from machine import ROOT, describe_machine, write_report

RESULTS = Path(__file__).resolve().parent / "results"
DATA = ROOT.parent / "shared" / "data" / "bbbc039"
OVERHEAD_TARGET = 0.10  # issue "Training": the pipeline adds at most 10 % to a step


@dataclass
class Variant:
    """One thing timed as a whole call."""

    key: str  # name in the JSON file
    label: str  # row in the printed table
    run: Callable[[], Any]
    times: list[float] = field(default_factory=list)  # wall clock, seconds


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_images(data: Path, count: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Return the first `count` train images and label images, by file name."""
    paths = sorted((data / "train" / "images").glob("*.tif*"))[:count]
    if len(paths) < count:
        raise FileNotFoundError(f"need {count} images in {data / 'train' / 'images'}")
    images = [tifffile.imread(path) for path in paths]
    labels = [tifffile.imread(data / "train" / "labels" / path.name) for path in paths]
    return images, labels, [path.name for path in paths]


def time_targets(labels: list[np.ndarray], repeats: int) -> tuple[list[Any], list[list[float]]]:
    """Make each image's target `repeats` times; return the targets and the times per image."""
    targets, times = [], []
    for label in labels:
        image_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            target = training_target(label, "objects")
            image_times.append(time.perf_counter() - start)
        targets.append(target)
        times.append(image_times)
    return targets, times


def variants(run: TrainingRun) -> list[Variant]:
    """Return the five things timed, all on the same run."""
    device = run.device
    settings = run.settings
    fixed = run.batch()  # the batch every bare step trains on
    raw = [run.sample_patch() for _ in range(settings.batch_size)]
    raw_images = torch.from_numpy(np.stack([p[0] for p in raw])).to(device)  # (B, C, P, P)
    raw_classes = torch.from_numpy(np.stack([p[1] for p in raw])).to(device)
    raw_weights = torch.from_numpy(np.stack([p[2] for p in raw])).to(device)
    output = (run.output_size, run.output_size)

    def bare() -> float:
        # `TrainingRun.train_step` without `self.batch()`, on the fixed batch
        images, classes, weights = fixed
        for group in run.optimizer.param_groups:
            group["lr"] = run.learning_rate(run.step)
        run.model.train()
        with autocast(device, run.mixed_precision):
            logits = run.model(images)
        loss = training_loss(logits, classes, weights, settings.loss)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        return float(loss.detach())

    def sampling() -> Any:
        # the CPU half of `TrainingRun.batch`: patches, stacked, on the device
        patches = [run.sample_patch() for _ in range(settings.batch_size)]
        return [torch.from_numpy(np.stack([p[i] for p in patches])).to(device) for i in range(3)]

    def augmentation() -> Any:
        return augment_batch(
            raw_images, raw_classes, raw_weights, settings.augmentation, run.generator, output
        )

    def synchronized(function: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            result = function()
            synchronize(device)
            return result

        return call

    shape = f"{settings.batch_size} x {run.patch_size}² → {run.output_size}²"
    return [
        Variant("bare", f"bare step on a fixed batch ({shape})", synchronized(bare)),
        Variant("full", "TrainingRun.train_step (pipeline + step)", synchronized(run.train_step)),
        Variant("pipeline", "TrainingRun.batch (pipeline alone)", synchronized(run.batch)),
        Variant("sampling", "  patch sampling + stack + to device", synchronized(sampling)),
        Variant("augmentation", "  augment_batch on raw patches", synchronized(augmentation)),
    ]


def measure(timed: list[Variant], warmup: int, repeats: int) -> None:
    """Warm every variant up, then time them in rounds, the order reversed on odd rounds."""
    for variant in timed:
        for _ in range(warmup):
            variant.run()
    for repeat in range(repeats):
        for variant in timed if repeat % 2 == 0 else timed[::-1]:
            start = time.perf_counter()
            variant.run()
            variant.times.append(time.perf_counter() - start)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="BBBC039 folder")
    parser.add_argument("--images", type=int, default=3, help="training images")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved timed rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per variant")
    parser.add_argument("--target-repeats", type=int, default=3, help="timed targets per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time the pipeline against the bare step, print a table, write the JSON."""
    arguments = parse_arguments(argv)
    device = torch.device(arguments.device)
    torch.set_num_threads(arguments.threads)
    info = describe_machine(device)

    images, labels, names = load_images(arguments.data, arguments.images)
    targets, target_times = time_targets(labels, arguments.target_repeats)
    with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
        torch.manual_seed(arguments.seed)
        model = UNet(UNetConfig()).to(device)
    settings = TrainingSettings()
    run = TrainingRun(model, images, targets, settings=settings, rng=arguments.seed)
    timed = variants(run)
    measure(timed, arguments.warmup, arguments.repeats)
    info["load_average_end"] = list(os.getloadavg())

    times = {v.key: v.times for v in timed}
    median = {key: statistics.median(values) for key, values in times.items()}
    overhead = (median["full"] - median["bare"]) / median["bare"]
    overhead_paired = statistics.median(
        f / b - 1 for f, b in zip(times["full"], times["bare"], strict=True)
    )
    pipeline_share = median["pipeline"] / median["bare"]
    verdict = "PASS" if overhead <= OVERHEAD_TARGET else "FAIL"
    per_image = [statistics.median(t) for t in target_times]
    objects = [int(np.unique(label[label > 0]).size) for label in labels]

    print(f"training pipeline, {arguments.device}, {torch.get_num_threads()} torch threads")
    for v in timed:
        print(
            f"  {v.label:46s} {median[v.key] * 1e3:8.1f} ms  ({median[v.key] / median['bare']:.3f})"
        )
    print(
        f"  overhead (full - bare) / bare: {overhead:.1%} (per-round median {overhead_paired:.1%})"
    )
    print(f"  pipeline / bare: {pipeline_share:.1%}; target <= 10 %: {verdict}")
    for name, seconds, count in zip(names, per_image, objects, strict=True):
        steps = seconds / median["full"]
        print(
            f"  training_target {name[:14]} ({count} objects): {seconds:.3f} s = {steps:.2f} steps"
        )

    report = {
        "benchmark": "training_pipeline",
        "command": "python -m benchmarks.bench_training_pipeline " + " ".join(argv or sys.argv[1:]),
        "machine": info,
        "settings": {
            "images": names,
            "image_shape": list(images[0].shape),
            "objects": objects,
            "unet": UNetConfig().to_dict(),
            "training": settings.to_dict(),
            "patch_size": run.patch_size,
            "output_size": run.output_size,
            "mixed_precision": run.mixed_precision,
            "channels_last": run.channels_last,
            "repeats": arguments.repeats,
            "warmup": arguments.warmup,
            "protocol": "warm-up runs per variant, then rounds running every variant once, "
            "order reversed on odd rounds; medians reported",
        },
        "median_seconds": median,
        "relative_to_bare": {key: value / median["bare"] for key, value in median.items()},
        "overhead": overhead,
        "overhead_per_round_median": overhead_paired,
        "pipeline_over_bare": pipeline_share,
        "training_target_seconds_per_image": per_image,
        "training_target_in_steps": [seconds / median["full"] for seconds in per_image],
        "targets": {"overhead": {"wanted": OVERHEAD_TARGET, "verdict": verdict}},
        "raw_seconds": times,
        "raw_training_target_seconds": target_times,
    }
    write_report(report, arguments.out or RESULTS / f"training_pipeline-{device.type}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
