"""Quality against training time: fine-tuning from the base model and training from scratch.

Trains on 1, 3 or 10 annotated images of the BBBC039 train split and measures on its val
split: pixel IoU of the nuclei, instance average precision at IoU 0.5 and mean AP over
IoU 0.5:0.95 (`core.metrics.average_precision`), after the objects step of prediction, at
several points of training, against wall time. Also scores the shipped base model as it
is (``--runs base:0``).

Run (one condition per ``--runs`` item, ``start:images[:loss[:class_balance]]``, the
class balance ``all_images`` or ``per_image`` as in `TargetConfig`)::

    .venv/bin/python -m benchmarks.bench_training_quality --runs scratch:3 base:3 --steps 400
    .venv/bin/python -m benchmarks.bench_training_quality \
        --runs scratch:3::all_images scratch:3::per_image --steps 300

Results are written after every evaluation, so a stopped run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.config import TargetConfig, UNetConfig
from napari_unet_lab.core.metrics import average_precision, pixel_iou
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import ModelInfo, load_model
from napari_unet_lab.core.model.unet import UNet, randomly_initialised
from napari_unet_lab.core.predict.objects import OBJECT_THRESHOLD
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import AnnotatedImage, TrainingSettings, prepare_training

DATA = ROOT.parent / "shared" / "data" / "bbbc039"
THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def read_split(folder: Path, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Return (name, image, instance labels) of the first `limit` images of a split."""
    names = sorted(path.stem for path in (folder / "images").glob("*.tif"))[:limit]
    return [
        (
            name,
            tifffile.imread(folder / "images" / f"{name}.tif"),
            tifffile.imread(folder / "labels" / f"{name}.tif"),
        )
        for name in names
    ]


def evaluate(
    model: UNet, info: ModelInfo, validation: list, threshold: float = OBJECT_THRESHOLD
) -> dict[str, float]:
    """Score a model on the val images: pooled pixel IoU, mean AP@0.5 and mean AP@0.5:0.95."""
    intersection = union = 0
    ap50, mean_ap = [], []
    device = str(next(model.parameters()).device)
    for _, image, labels in validation:
        result = segment(model, info, image, device=device, threshold=threshold)
        predicted, truth = result.objects > 0, labels > 0
        intersection += np.count_nonzero(predicted & truth)
        union += np.count_nonzero(predicted | truth)
        scores = average_precision(result.objects, labels, THRESHOLDS)
        ap50.append(scores[0.5])
        mean_ap.append(float(np.mean(list(scores.values()))))
    return {
        "pixel_iou": round(intersection / union, 4),
        "ap50": round(float(np.mean(ap50)), 4),
        "mean_ap": round(float(np.mean(mean_ap)), 4),
        "first_image_iou": round(pixel_iou(predicted, truth), 4),
    }


def starting_model(
    start: str, seed: int, device: torch.device, network: UNetConfig | None = None
) -> tuple[UNet, ModelInfo]:
    """Return the network to train: the shipped base model, or a fresh `network`.

    A fresh network is the light U-Net (``UNetConfig()``) unless `network` says otherwise.
    """
    if start == "base":
        model, info = load_model(builtin_models()["nuclei"])
        return model.to(device), info
    network = network or UNetConfig()
    model = randomly_initialised(network, seed)
    return model.to(device), ModelInfo(network, ["background", "nucleus"])


def run_condition(
    start: str,
    n_images: int,
    loss: str,
    targets: TargetConfig,
    args: argparse.Namespace,
    train_split: list,
    validation: list,
    device: torch.device,
    record: dict[str, Any],
    save,
) -> None:
    """Train one condition, evaluating at the checkpoints, and record everything."""
    model, info = starting_model(start, args.seed, device)
    entry: dict[str, Any] = {
        "start": start,
        "images": n_images,
        "loss": loss,
        "targets": targets.to_dict(),
        "training_images": [name for name, _, _ in train_split[:n_images]],
        "points": [],
    }
    record["runs"].append(entry)
    if n_images == 0:
        started = time.perf_counter()
        entry["points"].append(
            {"step": 0, "train_seconds": 0.0, **evaluate(model, info, validation, args.threshold)}
        )
        entry["points"][-1]["evaluation_seconds"] = round(time.perf_counter() - started, 1)
        save()
        return
    chosen = train_split[:n_images]
    settings = TrainingSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate if start == "scratch" else args.learning_rate / 2,
        loss=loss,
    )
    entry["settings"] = settings.to_dict()
    items = [AnnotatedImage(image, labels, "objects", name=name) for name, image, labels in chosen]
    started = time.perf_counter()
    run = run_to_end(prepare_training(model, items, (), settings, args.seed, targets))
    entry["target_seconds"] = round(time.perf_counter() - started, 2)
    checkpoints = set(args.evaluate_at) | {args.steps}
    for progress in run.run():
        if progress.step in checkpoints:
            started = time.perf_counter()
            scores = evaluate(run.model, info, validation, args.threshold)
            entry["points"].append(
                {
                    "step": progress.step,
                    "train_seconds": round(progress.seconds, 1),
                    "patches_per_second": round(
                        progress.step * settings.batch_size / progress.seconds, 2
                    ),
                    "loss_last_20": round(float(np.mean(run.losses[-20:])), 4),
                    **scores,
                    "evaluation_seconds": round(time.perf_counter() - started, 1),
                }
            )
            condition = f"{start}:{n_images}:{loss}:{targets.class_balance}"
            print(f"{condition} {entry['points'][-1]}", flush=True)
            save()


def main(argv: list[str] | None = None) -> int:
    """Run the conditions named on the command line and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["base:0", "scratch:3", "base:3"],
        help="conditions start:images[:loss[:class_balance]], start 'base' or 'scratch'",
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--evaluate-at", type=int, nargs="*", default=[100, 200])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=252)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--loss", default=TrainingSettings().loss)
    parser.add_argument(
        "--threshold", type=float, default=OBJECT_THRESHOLD, help="object probability"
    )
    parser.add_argument("--val-images", type=int, default=None, help="default: all 50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out or ROOT / "benchmarks" / "results" / f"training_quality-{device.type}.json"
    train_split = read_split(DATA / "train")
    validation = read_split(DATA / "val", args.val_images)
    record: dict[str, Any] = {
        "machine": describe_machine(device),
        "validation_images": len(validation),
        "command": "python -m benchmarks.bench_training_quality " + " ".join(argv or sys.argv[1:]),
        "runs": [],
    }

    def save() -> None:
        write_report(record, out)

    for item in args.runs:
        start, images, *rest = item.split(":")
        if start not in ("base", "scratch"):
            parser.error(f"start must be 'base' or 'scratch', got {start!r}")
        loss = rest[0] if rest and rest[0] else args.loss
        targets = TargetConfig(class_balance=rest[1]) if len(rest) > 1 else TargetConfig()
        run_condition(
            start, int(images), loss, targets, args, train_split, validation, device, record, save
        )
    print(json.dumps(record["runs"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
