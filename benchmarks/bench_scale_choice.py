"""At which size should the network see the objects? Candidates around the first estimate.

Issue #12, item 3 leaves open how "auto" chooses the scale. This benchmark segments every
image once as it is (the first pass; `scale.found_object_diameter` of its objects is the
first estimate E), then again at seven sizes: the image resized so the network sees
objects ``2 ** (j / 4)`` times its training diameter, for j = -3 … 3 (``--shown``), as E says. For
every pass it records AP@0.5, mean AP, and cues a rule could choose by without the truth:
the mean entropy of the class probabilities (all pixels, and object pixels), the share of
uncertain pixels (foreground probability 0.05–0.95) per object pixel, and the estimate at
that pass. Rules are then compared offline (`summarise`): always one candidate, the most
confident candidate, the one whose objects look closest to the training size, and the best
candidate (chosen with the truth: the ceiling of any rule).

Images: the DSB 2018 val split (``--dsb``, 123; its 21 RGB images alone for a model that
takes colours) and BBBC039 val resized by 0.5, 1, 2, 3 (``--scales``, ``--val-images``
spread evenly), as `bench_object_size` reads them.

Run::

    .venv/bin/python -m benchmarks.bench_scale_choice --dsb --threads 2
    .venv/bin/python -m benchmarks.bench_scale_choice --scales --val-images 10 --threads 2
    .venv/bin/python -m benchmarks.bench_scale_choice --tables benchmarks/results/…json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from benchmarks.bench_object_size import DATA, SCALES, image_kind, resampled, spread
from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.scale import found_object_diameter, object_diameters
from napari_unet_lab.core.predict.segment import segment

SHOWN = tuple(range(-3, 4))  # the network sees objects 2 ** (j / 4) times its training size


def cues(result) -> dict[str, Any]:
    """Return what a pass tells without the truth: how sure the network is, how large objects."""
    probabilities = result.probabilities
    foreground = 1.0 - probabilities[0]
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-7, 1))).sum(0)
    entropy /= math.log(probabilities.shape[0])
    inside = foreground > 0.5
    diameters = object_diameters(result.objects)
    return {
        "entropy": float(entropy.mean()),
        "entropy_objects": float(entropy[inside].mean()) if inside.any() else None,
        "uncertain_share": float(((foreground > 0.05) & (foreground < 0.95)).sum())
        / max(int(inside.sum()), 1),
        "estimate": found_object_diameter(result.objects),
        "objects": int(diameters.size),
    }


def candidates(model, info, image, labels, rgb: bool, shown=SHOWN) -> dict[str, Any]:
    """Return the first pass and the candidate passes (`shown`: their j) of one image."""
    row: dict[str, Any] = {"true_diameter": float(np.median(object_diameters(labels)))}
    first = segment(model, info, image, rgb=rgb, object_diameter=None)
    estimate = found_object_diameter(first.objects)
    row["first_estimate"], row["passes"] = estimate, []
    if estimate is None:
        return row
    for j in shown:
        # a given diameter D resizes by shown_larger * trained / D: this D shows the
        # objects at 2 ** (j / 4) times the training diameter, whatever the model records
        diameter = estimate * info.shown_larger / 2 ** (j / 4)
        try:
            result = segment(model, info, image, rgb=rgb, object_diameter=diameter)
        except ValueError:  # beyond what the network or the memory takes
            continue
        scores = segmentation_scores(result.objects, labels)
        entry = {"shown": j, "scale": result.scale, **cues(result)}
        entry["ap_50"] = round(scores["ap_50"], 4)
        entry["mean_ap"] = round(scores["mean_average_precision"], 4)
        row["passes"].append(entry)
    return row


def rules(trained: float, shown=SHOWN) -> dict[str, Any]:
    """Ways to choose a pass; each takes an image's row and returns one of its passes."""

    def always(j):
        return lambda row: next(
            (p for p in row["passes"] if p["shown"] == j), row["passes"][len(row["passes"]) // 2]
        )

    def least(key, allowed=shown):
        def choose(row):
            passes = [p for p in row["passes"] if p["shown"] in allowed] or row["passes"]
            return min(passes, key=lambda p: math.inf if p[key] is None else p[key])

        return choose

    def closest(row):  # objects as the network saw them nearest its training diameter
        return min(
            row["passes"],
            key=lambda p: (
                abs(math.log(p["estimate"] * p["scale"] / trained)) if p["estimate"] else math.inf
            ),
        )

    chosen = {f"always {2 ** (j / 4):.2f}× as trained": always(j) for j in shown}
    chosen.update(
        {
            "closest to the training size": closest,
            "least entropy": least("entropy"),
            "least entropy, 1–1.68×": least("entropy", (0, 1, 2, 3)),
            "least entropy of objects": least("entropy_objects"),
            "fewest uncertain pixels": least("uncertain_share"),
            "best (knows the truth)": lambda row: max(row["passes"], key=lambda p: p["ap_50"]),
        }
    )
    return chosen


def summarise(images: dict[str, dict], trained: float) -> dict[str, Any]:
    """Mean AP@0.5 and mean AP per rule, over all images and per kind of image."""
    rows = {name: row for name, row in images.items() if row["passes"]}
    kinds = ["all", *sorted({row["kind"] for row in rows.values()})]
    shown = sorted({p["shown"] for row in rows.values() for p in row["passes"]})
    summary: dict[str, Any] = {}
    for rule, choose in rules(trained, tuple(shown)).items():
        summary[rule] = {}
        for kind in kinds:
            chosen = [choose(r) for r in rows.values() if kind in ("all", r["kind"])]
            summary[rule][kind] = [
                round(float(np.mean([p["ap_50"] for p in chosen])), 3),
                round(float(np.mean([p["mean_ap"] for p in chosen])), 3),
            ]
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Print one row per rule: AP@0.5 / mean AP per kind of image."""
    kinds = list(next(iter(summary.values())))
    print("rule".ljust(30) + "".join(f"{kind[:16]:>18}" for kind in kinds))
    for rule, cells in summary.items():
        print(rule.ljust(30) + "".join(f"{a:>11.3f} / {m:.3f}" for a, m in cells.values()))


def main(argv: list[str] | None = None) -> int:
    """Segment every image at every candidate size and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsb", action="store_true", help="the DSB 2018 val split")
    parser.add_argument("--scales", action="store_true", help="BBBC039 val at 4 scales")
    parser.add_argument("--val-images", type=int, default=10, help="BBBC039 images")
    parser.add_argument("--model", default="nuclei_broad", help="model file or built-in name")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tables", type=Path, help="summarise a recorded result again")
    parser.add_argument(
        "--shown", type=int, nargs="+", default=list(SHOWN), help="candidates j: 2^(j/4)×"
    )
    args = parser.parse_args(argv)
    if args.tables:
        record = json.loads(args.tables.read_text())
        record["summary"] = summarise(record["images"], record["trained_diameter"])
        print_summary(record["summary"])
        write_report(record, args.tables)
        return 0
    torch.set_num_threads(args.threads)
    model, info = load_model(builtin_models().get(args.model, Path(args.model)))
    part = "dsb" if args.dsb else "scales"
    out = args.out or ROOT / "benchmarks" / "results" / f"scale_choice-cpu-{part}.json"
    record: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_scale_choice " + " ".join(argv or sys.argv[1:]),
        "model": args.model,
        "trained_diameter": info.object_diameter,
        "images": {},
    }
    if args.dsb:
        folder = DATA / "dsb2018_train"
        index = json.loads((folder / "index.json").read_text())
        for entry in [e for e in index if e["split"] == "val"]:
            image = tifffile.imread(folder / "images" / f"{entry['id']}.tif")
            if info.config.in_channels == 3 and image.ndim != 3:
                continue  # a model that takes colours is measured on the RGB images
            labels = tifffile.imread(folder / "labels" / f"{entry['id']}.tif")
            row = candidates(model, info, image, labels, image.ndim == 3, args.shown)
            row["kind"] = image_kind(entry, image, labels)
            record["images"][entry["id"]] = row
            print(entry["id"][:10], row["kind"], flush=True)
    else:
        folder = DATA / "bbbc039" / "val"
        for path in spread(sorted((folder / "images").glob("*.tif")), args.val_images):
            image, labels = tifffile.imread(path), tifffile.imread(folder / "labels" / path.name)
            for factor in SCALES:
                resized, resized_labels = resampled(image, labels, factor)
                row = candidates(model, info, resized, resized_labels, False, args.shown)
                row["kind"] = f"×{factor}"
                record["images"][f"{path.stem} ×{factor}"] = row
                print(path.stem[:20], factor, flush=True)
    record["summary"] = summarise(record["images"], info.object_diameter)
    print_summary(record["summary"])
    record["machine"]["load_average_end"] = list(os.getloadavg())
    write_report(record, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
