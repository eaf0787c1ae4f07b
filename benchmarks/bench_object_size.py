"""Object size and broad data: does "auto" find the size, and how far does a model carry.

Two parts (issue #12, items 3 and 6), each chosen by a flag (both when neither is given):

``--scales``
    BBBC039 val images resized by 0.5, 1, 2 and 3 (image: linear, anti-aliased when
    shrinking; labels: nearest neighbour). The true object size of a resized image is the
    median equivalent diameter of its resized labels. Each model segments every image as
    trained (``object_diameter=None``) and with ``object_diameter="auto"``; reported are the
    share of images whose estimate (`Segmentation.object_diameter`) is within 15 % of the
    true median, and AP@0.5 per scale with its difference to 1×. The estimate of other
    estimators on the same objects is recorded alongside (see `size_estimates`).
    Targets: ≥ 90 % within 15 %; AP@0.5 within 0.03 of 1× at every scale.
``--dsb``
    The ``val`` split of the DSB 2018 stage-1 training set (123 images of many kinds), as
    trained and with "auto": AP@0.5, mean AP 0.5:0.95 and pixel IoU, means over images, in
    all and per kind of image (`image_kind`). RGB images are given with ``rgb=True``; a
    model that refuses them (ValueError) scores AP 0 there and the image is counted as
    refused.

Run::

    .venv/bin/python -m benchmarks.bench_object_size --model /tmp/s5/today-model/nuclei.json
    .venv/bin/python -m benchmarks.bench_object_size --scales --val-images 10 --out /tmp/a.json

``--model`` is a model file or the name of a built-in model (default ``nuclei``), and can
be repeated; ``--rgb-model`` segments the RGB images of part B that look like stained
tissue instead (``nuclei_tissue``: the model the Predict widget offers for them). Torch runs
on ``--threads`` threads (1 by default: the other core may be busy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from skimage.transform import resize

from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.builtin import builtin_models, mostly_light
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.scale import object_diameters
from napari_unet_lab.core.predict.segment import segment

DATA = ROOT.parent / "shared" / "data"
SCALES = (0.5, 1.0, 2.0, 3.0)
WITHIN = 0.15  # an estimate counts as right within 15 % of the true median diameter
SETTINGS = {"as trained": None, "auto": "auto"}
# Grayscale DSB images by median object area (px): the val split has a gap between 551
# and 880 px, and 150 px (a disk of 14 px) splits the rest into halves of about equal size.
SIZE_GROUPS = ((0, 150, "small"), (150, 600, "medium"), (600, np.inf, "large"))


def resampled(image: np.ndarray, labels: np.ndarray, factor: float):
    """Return an image and its labels resized by `factor`, as a microscope at another zoom."""
    shape = tuple(round(size * factor) for size in labels.shape)
    if factor == 1:
        return image, labels
    image = resize(
        image.astype(np.float32), shape, order=1, anti_aliasing=factor < 1, preserve_range=True
    ).astype(np.float32)
    resized_labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True)
    return image, resized_labels.astype(labels.dtype)


def size_estimates(objects: np.ndarray) -> dict[str, float | None]:
    """Estimates of the typical object diameter from the objects a pass found, in pixels.

    ``median``: median equivalent diameter (what "auto" uses). ``inner median``: the same
    without objects that touch the image border (cut ones look small). ``area-weighted
    median``: the diameter of the object holding the median foreground pixel, which
    fragments and debris barely move.
    """
    diameters = object_diameters(objects)
    if diameters.size == 0:
        return {"median": None, "inner median": None, "area-weighted median": None}
    border = np.unique(np.concatenate([objects[0], objects[-1], objects[:, 0], objects[:, -1]]))
    ids = np.flatnonzero(np.bincount(objects.ravel().astype(np.int64))[1:]) + 1
    inner = diameters[~np.isin(ids, border)]
    order = np.argsort(diameters)
    cumulative = np.cumsum(diameters[order] ** 2)
    weighted = diameters[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
    return {
        "median": float(np.median(diameters)),
        "inner median": float(np.median(inner)) if inner.size else None,
        "area-weighted median": float(weighted),
    }


def scored(model, info, image, labels, object_diameter, rgb=False) -> dict[str, Any]:
    """Segment one image and score it; a refused image scores 0 and says why."""
    start = time.perf_counter()
    try:
        result = segment(model, info, image, object_diameter=object_diameter, rgb=rgb)
    except ValueError as error:
        return {
            "refused": str(error),
            "ap_50": 0.0,
            "mean_ap": 0.0,
            "pixel_iou": 0.0,
            "seconds": round(time.perf_counter() - start, 2),
        }
    scores = segmentation_scores(result.objects, labels)
    return {
        "ap_50": round(scores["ap_50"], 4),
        "mean_ap": round(scores["mean_average_precision"], 4),
        "pixel_iou": round(scores["pixel_iou"], 4),
        "objects_found": scores["objects_found"],
        "objects_true": scores["objects_true"],
        "estimate": result.object_diameter,
        "scale": round(result.scale, 4),
        "estimates": size_estimates(result.objects),
        "seconds": round(time.perf_counter() - start, 2),
        # e.g. an RGB image given to a grayscale model as its luminance
        "image_note": getattr(result, "image_note", ""),
    }


def spread(items: list, count: int | None) -> list:
    """Return `count` items spread evenly over a list (all of them for None).

    Examples
    --------
    >>> spread(list(range(10)), 4)
    [0, 3, 6, 9]
    """
    if count is None or count >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def within(estimate: float | None, truth: float) -> bool:
    """Whether an estimate is within `WITHIN` of the true diameter (none found: no)."""
    return estimate is not None and abs(estimate - truth) <= WITHIN * truth


def run_scales(model, info, count: int | None) -> dict[str, Any]:
    """Part A: every val image at every scale, as trained and "auto"."""
    folder = DATA / "bbbc039" / "val"
    images = []
    for path in spread(sorted((folder / "images").glob("*.tif")), count):
        image, labels = tifffile.imread(path), tifffile.imread(folder / "labels" / path.name)
        for factor in SCALES:
            resized, resized_labels = resampled(image, labels, factor)
            row = {"image": path.stem, "scale": factor}
            row["true_diameter"] = float(np.median(object_diameters(resized_labels)))
            for name, setting in SETTINGS.items():
                row[name] = scored(model, info, resized, resized_labels, setting)
            images.append(row)
            print(
                f"  {path.stem} ×{factor}: true {row['true_diameter']:.1f}, auto "
                f"{row['auto']['estimate'] or 0:.1f}, AP@0.5 {row['as trained']['ap_50']:.3f} "
                f"/ {row['auto']['ap_50']:.3f} ({row['auto']['seconds']:.0f} s)",
                flush=True,
            )
    return {"images": images, "summary": summarise_scales(images)}


def summarise_scales(images: list[dict]) -> dict[str, Any]:
    """Per scale and setting: mean AP@0.5 (and its difference to 1×), share within 15 %."""
    summary: dict[str, Any] = {}
    for factor in SCALES:
        rows = [row for row in images if row["scale"] == factor]
        entry: dict[str, Any] = {"images": len(rows)}
        for name in SETTINGS:
            entry[name] = {
                "ap_50": round(float(np.mean([row[name]["ap_50"] for row in rows])), 4),
                "mean_ap": round(float(np.mean([row[name]["mean_ap"] for row in rows])), 4),
            }
        entry["auto"]["within_15"] = round(
            float(np.mean([within(row["auto"]["estimate"], row["true_diameter"]) for row in rows])),
            4,
        )
        # Other estimators on the objects of the as-trained pass (one pass at the image's
        # own size) and of auto's last pass.
        entry["estimators_within_15"] = {
            f"{estimator}, {name} objects": round(
                float(
                    np.mean(
                        [
                            within(row[name]["estimates"][estimator], row["true_diameter"])
                            for row in rows
                        ]
                    )
                ),
                4,
            )
            for name in SETTINGS
            for estimator in rows[0][name]["estimates"]
        }
        summary[str(factor)] = entry
    for name in SETTINGS:
        base = summary["1.0"][name]["ap_50"]
        for factor in SCALES:
            entry = summary[str(factor)][name]
            entry["ap_50_minus_1x"] = round(entry["ap_50"] - base, 4)
    return summary


def image_kind(entry: dict, image: np.ndarray, labels: np.ndarray) -> str:
    """Return the kind of a DSB image: RGB, brightfield, or grayscale by its objects' size.

    A grayscale image is brightfield-like when its objects are darker than its background:
    the mean intensity inside the labelled objects is below that of the pixels outside.
    """
    if image.ndim == 3:
        return "RGB"
    inside = labels > 0
    if inside.any() and (~inside).any() and image[inside].mean() < image[~inside].mean():
        return "brightfield"
    area = entry["median_object_area"]
    size = next(name for low, high, name in SIZE_GROUPS if low <= area < high)
    return f"grayscale {size}"


def run_dsb(model, info, limit: int | None, rgb_model=None) -> dict[str, Any]:
    """Part B: the DSB val split, as trained and "auto", in all and per kind of image.

    `rgb_model`, a (model, info) pair, segments the RGB images that look like stained tissue
    where it is given, as the Predict widget offers a model that takes colours for them.
    """
    folder = DATA / "dsb2018_train"
    entries = [e for e in json.loads((folder / "index.json").read_text()) if e["split"] == "val"]
    images = []
    for entry in spread(entries, limit):
        image = tifffile.imread(folder / "images" / f"{entry['id']}.tif")
        labels = tifffile.imread(folder / "labels" / f"{entry['id']}.tif")
        row = {
            "image": entry["id"],
            "kind": image_kind(entry, image, labels),
            "shape": list(image.shape),
            "median_object_area": entry["median_object_area"],
            "true_diameter": float(np.median(object_diameters(labels))),
        }
        # the Predict widget's offer: stained tissue (RGB, mostly light) to the colour model
        tissue = image.ndim == 3 and rgb_model is not None and mostly_light(image)
        segmenting = rgb_model if tissue else (model, info)
        for name, setting in SETTINGS.items():
            row[name] = scored(*segmenting, image, labels, setting, rgb=image.ndim == 3)
        images.append(row)
        print(
            f"  {entry['id'][:10]} {row['kind']:<18} AP@0.5 {row['as trained']['ap_50']:.3f} / "
            f"{row['auto']['ap_50']:.3f}{' refused' if 'refused' in row['auto'] else ''}",
            flush=True,
        )
    return {"images": images, "summary": summarise_kinds(images)}


def summarise_kinds(rows: list[dict]) -> dict[str, Any]:
    """`summarise_dsb` over all images and over each kind of image."""
    summary = {"all": summarise_dsb(rows)}
    for kind in sorted({row["kind"] for row in rows}):
        summary[kind] = summarise_dsb([row for row in rows if row["kind"] == kind])
    return summary


def summarise_dsb(rows: list[dict]) -> dict[str, Any]:
    """Means over images of AP@0.5, mean AP and pixel IoU, per setting; refusals counted."""
    entry: dict[str, Any] = {"images": len(rows)}
    for name in SETTINGS:
        entry[name] = {
            key: round(float(np.mean([row[name][key] for row in rows])), 4)
            for key in ("ap_50", "mean_ap", "pixel_iou")
        }
        entry[name]["refused"] = sum("refused" in row[name] for row in rows)
        entry[name]["estimate_within_15"] = round(
            float(
                np.mean([within(row[name].get("estimate"), row["true_diameter"]) for row in rows])
            ),
            4,
        )
    scored_rows = [row for row in rows if "estimates" in row["auto"]]  # refused: none
    entry["estimators_within_15"] = {
        f"{estimator}, {name} objects": round(
            float(
                np.mean(
                    [
                        within(row[name]["estimates"][estimator], row["true_diameter"])
                        for row in scored_rows
                    ]
                )
            ),
            4,
        )
        for name in SETTINGS
        for estimator in (scored_rows[0][name]["estimates"] if scored_rows else ())
    }
    return entry


def print_tables(name: str, report: dict[str, Any]) -> None:
    """Print the compact tables of one model."""
    if "scales" in report:
        count = report["scales"]["summary"]["1.0"]["images"]
        print(f"\n{name}: BBBC039 val at 4 scales ({count} images)")
        print("scale | as trained AP@0.5 (Δ 1×) | auto AP@0.5 (Δ 1×) | auto estimate within 15 %")
        for factor, entry in report["scales"]["summary"].items():
            trained, auto = entry["as trained"], entry["auto"]
            print(
                f"{factor:>5} | {trained['ap_50']:.3f} ({trained['ap_50_minus_1x']:+.3f})"
                f"          | {auto['ap_50']:.3f} ({auto['ap_50_minus_1x']:+.3f})"
                f"    | {auto['within_15']:.0%}"
            )
        print("estimators, share within 15 % per scale:")
        first = report["scales"]["summary"]["1.0"]["estimators_within_15"]
        for estimator in first:
            shares = [
                entry["estimators_within_15"][estimator]
                for entry in report["scales"]["summary"].values()
            ]
            print(f"  {estimator:<40} " + " ".join(f"{share:>5.0%}" for share in shares))
    if "dsb" in report:
        print(f"\n{name}: DSB 2018 val, means over images (AP@0.5 / mean AP / pixel IoU)")
        print(
            "kind               | images | as trained            | auto                  | refused"
        )
        for kind, entry in report["dsb"]["summary"].items():
            cells = [
                f"{entry[s]['ap_50']:.3f} / {entry[s]['mean_ap']:.3f} / {entry[s]['pixel_iou']:.3f}"
                for s in SETTINGS
            ]
            print(
                f"{kind:<18} | {entry['images']:>6} | {cells[0]} | {cells[1]} "
                f"| {entry['auto']['refused']}"
            )


def print_recorded(path: Path) -> int:
    """Summarise a recorded result again from its images (the summaries may have grown)."""
    record = json.loads(path.read_text())
    for name, report in record["models"].items():
        if "scales" in report:
            report["scales"]["summary"] = summarise_scales(report["scales"]["images"])
        if "dsb" in report:
            report["dsb"]["summary"] = summarise_kinds(report["dsb"]["images"])
        print_tables(name, report)
    write_report(record, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts for every model and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", action="store_true", help="part A: BBBC039 val at 4 scales")
    parser.add_argument("--dsb", action="store_true", help="part B: the DSB 2018 val split")
    parser.add_argument(
        "--model", action="append", help="model file or built-in name (default nuclei)"
    )
    parser.add_argument(
        "--val-images", type=int, default=None, help="BBBC039, spread evenly; default all 50"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="DSB images, spread evenly; default all 123"
    )
    parser.add_argument(
        "--rgb-model", default=None, help="model file or built-in name for stained tissue (RGB)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--tables", type=Path, default=None, help="summarise a recorded result again, print it"
    )
    args = parser.parse_args(argv)
    if args.tables:
        return print_recorded(args.tables)
    parts = [p for p in ("scales", "dsb") if getattr(args, p)] or ["scales", "dsb"]
    torch.set_num_threads(args.threads)
    out = args.out or ROOT / "benchmarks" / "results" / f"object_size-cpu-{'-'.join(parts)}.json"
    record: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_object_size " + " ".join(argv or sys.argv[1:]),
        "models": {},
    }
    rgb_model = None
    if args.rgb_model is not None:
        rgb_model = load_model(builtin_models().get(args.rgb_model, Path(args.rgb_model)))
        record["rgb_model"] = args.rgb_model
    for given in args.model or ["nuclei"]:
        path = builtin_models().get(given, Path(given))
        model, info = load_model(path)
        report: dict[str, Any] = {"path": str(path), "trained_diameter": info.object_diameter}
        record["models"][given] = report
        for part in parts:
            print(f"{given}: {part}", flush=True)
            start = time.perf_counter()
            if part == "scales":
                report[part] = run_scales(model, info, args.val_images)
            else:
                report[part] = run_dsb(model, info, args.limit, rgb_model)
            report[part]["minutes"] = round((time.perf_counter() - start) / 60, 1)
            write_report(record, out)  # a stopped run keeps the parts it finished
        print_tables(given, report)
    record["machine"]["load_average_end"] = list(os.getloadavg())
    write_report(record, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
