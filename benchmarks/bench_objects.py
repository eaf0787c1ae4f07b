"""Objects from probabilities: which threshold and split depth separate touching nuclei best.

The built-in model predicts each BBBC039 val image once; `core.instances.object_labels`
then turns its foreground probability into objects under each setting. The settings are
chosen on the first 25 val images and checked on the other 25, with instance AP at IoU 0.5
and mean AP over 0.5:0.95 (`core.metrics.average_precision`).

Run::

    .venv/bin/python -m benchmarks.bench_objects [--cache DIR]

``--cache`` keeps the probabilities (one .npy per image) so a second run skips prediction.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from benchmarks.bench_training_quality import DATA, THRESHOLDS
from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.metrics import average_precision
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.objects import OBJECT_THRESHOLD, SPLIT_DEPTH, object_labels
from napari_unet_lab.core.predict.segment import segment


def foreground_probabilities(cache: Path | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Return (name, foreground probability, true labels) of every val image."""
    model, info = load_model(builtin_models()["nuclei"])
    folder = DATA / "val"
    result = []
    for path in sorted((folder / "images").glob("*.tif")):
        stored = cache / f"{path.stem}.npy" if cache else None
        if stored is not None and stored.is_file():
            foreground = np.load(stored)
        else:
            foreground = segment(model, info, tifffile.imread(path)).foreground
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                np.save(stored, foreground)
        result.append((path.stem, foreground, tifffile.imread(folder / "labels" / path.name)))
    return result


def scores(images: list, **settings: Any) -> dict[str, float]:
    """Mean AP@0.5 and mean AP@0.5:0.95 over some images, objects made with `settings`."""
    ap50, mean_ap = [], []
    for _, foreground, truth in images:
        found = average_precision(object_labels(foreground, **settings), truth, THRESHOLDS)
        ap50.append(found[0.5])
        mean_ap.append(np.mean(list(found.values())))
    return {"ap50": round(float(np.mean(ap50)), 4), "mean_ap": round(float(np.mean(mean_ap)), 4)}


def main(argv: list[str] | None = None) -> int:
    """Score the settings grid on the tuning half, the chosen ones on the check half."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/objects-cpu.json")
    args = parser.parse_args(argv)
    images = foreground_probabilities(args.cache)
    tuning, checking = images[:25], images[25:]
    report: dict[str, Any] = {"machine": describe_machine(torch.device("cpu")), "grid": []}
    for threshold, depth in itertools.product((0.5, 0.6, 0.7, 0.8, 0.9), (1.5, 2.0)):
        row = {"threshold": threshold, "split_depth": depth}
        row.update(scores(tuning, threshold=threshold, split_depth=depth))
        report["grid"].append(row)
        print(row, flush=True)
    report["check"] = {
        "before (threshold 0.5, depth 2)": scores(checking, threshold=0.5, split_depth=2.0),
        f"defaults (threshold {OBJECT_THRESHOLD}, depth {SPLIT_DEPTH})": scores(checking),
    }
    print(report["check"])
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
