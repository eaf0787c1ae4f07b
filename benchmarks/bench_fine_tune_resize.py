"""Fine-tuning with the user's images resized to the starting model's object size, or not.

Fine-tunes the base model on 3 DSB 2018 `train` images of large nuclei (median object
area over 1000 px, about 40 px across, where the base model was trained on nuclei 28 px
across) for a fixed number of steps, with ``prepare_training(resize_to_diameter=...)``
set to the base model's object diameter or left off, for each seed. Scores on the `val`
images of the same kind (`core.metrics.segmentation_scores`: AP at IoU 0.5, mean AP over
0.5:0.95, pixel IoU), segmenting with ``object_diameter="auto"`` and with None (as the
image is), with the object diameter the fine-tuned model file records
(`trained_model_info`: the annotations' without resizing, the base model's with). The
base model before fine-tuning is scored too.

Run (one core: the other is busy)::

    .venv/bin/python -m benchmarks.bench_fine_tune_resize --base /tmp/s5/resample-base/nuclei.json
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
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import ModelInfo, load_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    TrainingSettings,
    prepare_training,
    trained_model_info,
)

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
LARGE = 1000  # median object area, px: large nuclei
SHAPES = ([512, 640], [520, 696])  # grayscale fluorescence groups of large nuclei


def large_nuclei(split: str, shapes: tuple[list[int], ...] = SHAPES) -> list[dict[str, Any]]:
    """Return the index entries of grayscale images of large nuclei in a split, by id."""
    index = json.loads((DATA / "index.json").read_text())
    chosen = [
        e
        for e in index
        if e["split"] == split
        and e["grayscale"]
        and e["median_object_area"] > LARGE
        and e["shape"] in shapes
    ]
    return sorted(chosen, key=lambda e: e["id"])


def read(entry: dict[str, Any]) -> tuple[str, np.ndarray, np.ndarray]:
    """Return (id, image, instance labels) of an index entry."""
    name = entry["id"]
    image = tifffile.imread(DATA / "images" / f"{name}.tif")
    return name, image, tifffile.imread(DATA / "labels" / f"{name}.tif")


def evaluate(model: UNet, info: ModelInfo, validation: list) -> dict[str, Any]:
    """Score a model on the val images, segmenting with object_diameter "auto" and None."""
    scores: dict[str, Any] = {}
    for diameter in ("auto", None):
        ap50, mean_ap, intersection, union, scales = [], [], 0, 0, []
        for _, image, labels in validation:
            result = segment(model, info, image, object_diameter=diameter, device="cpu")
            measured = segmentation_scores(result.objects, labels)
            ap50.append(measured["ap_50"])
            mean_ap.append(measured["mean_average_precision"])
            intersection += measured["pixel_intersection"]
            union += measured["pixel_union"]
            scales.append(round(result.scale, 3))
        scores[f"diameter_{diameter}"] = {
            "ap50": round(float(np.mean(ap50)), 4),
            "mean_ap": round(float(np.mean(mean_ap)), 4),
            "pixel_iou": round(intersection / union, 4),
            "scales": scales,
        }
    return scores


def main(argv: list[str] | None = None) -> int:
    """Train and score every condition, writing the report after each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=builtin_models()["nuclei"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or ROOT / "benchmarks" / "results" / "fine_tune_resize-cpu.json"
    training = [read(e) for e in large_nuclei("train", (SHAPES[0],))[: args.images]]
    validation = [read(e) for e in large_nuclei("val")]
    _, info = load_model(args.base)
    settings = TrainingSettings(steps=args.steps, batch_size=args.batch_size)
    record: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_fine_tune_resize " + " ".join(argv or sys.argv[1:]),
        "base_model": {"file": str(args.base), "object_diameter": info.object_diameter},
        "training_images": [name for name, _, _ in training],
        "validation_images": [name for name, _, _ in validation],
        "settings": settings.to_dict(),
        "runs": [],
    }
    started = time.perf_counter()
    base, info = load_model(args.base)
    record["base_model"]["scores"] = evaluate(base, info, validation)
    record["base_model"]["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    print("base", record["base_model"], flush=True)
    write_report(record, out)
    for seed in args.seeds:
        for resize in (False, True):
            model, info = load_model(args.base)
            items = [AnnotatedImage(image, labels, name=name) for name, image, labels in training]
            diameter = info.object_diameter if resize else None
            run = run_to_end(prepare_training(model, items, (), settings, seed, None, diameter))
            started = time.perf_counter()
            run_to_end(run.run())
            seconds = time.perf_counter() - started
            run.model.eval()
            # the object size the saved model records, as a user's fine-tuned model would
            tuned = trained_model_info(
                run, "tuned", seed=seed, images=[], base=info, annotations=items
            )
            entry = {
                "seed": seed,
                "resize_to_diameter": diameter,
                "factors": [round(f, 3) for f in getattr(run, "factors", [1.0] * len(items))],
                "train_seconds": round(seconds, 1),
                "loss_last_20": round(float(np.mean(run.losses[-20:])), 4),
                "recorded_object_diameter": tuned.object_diameter,
                "object_size": tuned.training.get("object_size"),
                "scores": evaluate(run.model, tuned, validation),
            }
            record["runs"].append(entry)
            print(entry, flush=True)
            write_report(record, out)
    print(json.dumps(record["runs"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
