"""Whether a boundary class separates touching nuclei better than the 1-pixel gap.

Ronneberger et al. (2015) separate touching objects with a background gap and border
weights, which is what the plugin trains. A common alternative (Caicedo et al. 2019 on
this very data set) gives each object a boundary class of its own: three classes,
background / interior / boundary, objects grown from the interiors. This benchmark trains
both from scratch on the same first 3 BBBC039 train images with the same settings and
scores them on the val split, so the choice rests on a measurement.

Run::

    .venv/bin/python -m benchmarks.bench_boundary_class --widths 1 2 --steps 450 \
        --evaluate-at 150 300 --val-images 10 --threads 1

The two-class result for the same images and steps is that of
``bench_training_quality --runs scratch:3``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.segmentation import watershed

from benchmarks.bench_training_quality import DATA, THRESHOLDS, read_split
from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.metrics import average_precision
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import randomly_initialised
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.train import (
    TrainingRun,
    TrainingSettings,
    TrainingTarget,
    border_weight_map,
    class_balance_weights,
)

INTERIOR, BOUNDARY = 1, 2


def boundary_target(labels: np.ndarray, width: int) -> TrainingTarget:
    """Return background / interior / boundary classes and their loss weights.

    Boundary pixels are object pixels within `width` pixels of anything else; the weights
    are class-balanced plus the paper's separation term.
    """
    size = 2 * width + 1
    low = ndi.minimum_filter(labels, size=size, mode="nearest")
    high = ndi.maximum_filter(labels, size=size, mode="nearest")
    inside = labels > 0
    interior = inside & (low == labels) & (high == labels)
    classes = np.where(interior, INTERIOR, np.where(inside, BOUNDARY, 0)).astype(np.int64)
    balance = class_balance_weights([classes], 3)
    separation = border_weight_map(labels, 10.0, 5.0, class_weights=(0.0, 0.0))
    return TrainingTarget(classes, (balance[classes] + separation).astype(np.float32), 3)


def boundary_objects(
    probabilities: np.ndarray, seed_threshold: float, foreground_threshold: float
) -> np.ndarray:
    """Objects grown from interiors over the foreground; seedless blobs kept as objects."""
    foreground, interior = 1.0 - probabilities[0], probabilities[INTERIOR]
    seeds = connected_components(interior > seed_threshold)
    seeds = np.where(np.bincount(seeds.ravel())[seeds] < 4, 0, seeds)
    mask = foreground > foreground_threshold
    labels = watershed(-interior, seeds, mask=mask)
    unseeded = connected_components(mask & (labels == 0))
    labels = np.where(unseeded > 0, unseeded + labels.max(), labels)
    return np.where(np.bincount(labels.ravel())[labels] < 15, 0, labels)


def main(argv: list[str] | None = None) -> int:
    """Train one three-class network per boundary width and score it at the checkpoints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--evaluate-at", type=int, nargs="*", default=[150, 300])
    parser.add_argument("--val-images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or ROOT / "benchmarks" / "results" / "boundary_class-cpu.json"
    chosen = read_split(DATA / "train", args.images)
    validation = read_split(DATA / "val", args.val_images)
    record: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_boundary_class " + " ".join(argv or sys.argv[1:]),
        "training_images": [name for name, _, _ in chosen],
        "validation_images": len(validation),
        "runs": [],
    }
    config = UNetConfig(n_classes=3)
    info = ModelInfo(config, ["background", "interior", "boundary"])
    for width in args.widths:
        model = randomly_initialised(config, args.seed)
        settings = TrainingSettings(steps=args.steps, learning_rate=1e-3)
        targets = [boundary_target(labels, width) for _, _, labels in chosen]
        run = TrainingRun(model, [image for _, image, _ in chosen], targets, None, settings, 0)
        entry: dict[str, Any] = {"boundary_width": width, "points": []}
        record["runs"].append(entry)
        for progress in run.run():
            if progress.step not in set(args.evaluate_at) | {args.steps}:
                continue
            started = time.perf_counter()
            probabilities = [
                segment(model, info, image).probabilities for _, image, _ in validation
            ]
            for seed_threshold, foreground_threshold in itertools.product((0.5, 0.7), (0.5,)):
                scores = [
                    average_precision(
                        boundary_objects(p, seed_threshold, foreground_threshold),
                        labels,
                        THRESHOLDS,
                    )
                    for p, (_, _, labels) in zip(probabilities, validation, strict=True)
                ]
                entry["points"].append(
                    {
                        "step": progress.step,
                        "train_seconds": round(progress.seconds, 1),
                        "seed_threshold": seed_threshold,
                        "foreground_threshold": foreground_threshold,
                        "ap50": round(float(np.mean([s[0.5] for s in scores])), 4),
                        "mean_ap": round(
                            float(np.mean([np.mean(list(s.values())) for s in scores])), 4
                        ),
                        "evaluation_seconds": round(time.perf_counter() - started, 1),
                    }
                )
                print(f"width {width} {entry['points'][-1]}", flush=True)
            write_report(record, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
