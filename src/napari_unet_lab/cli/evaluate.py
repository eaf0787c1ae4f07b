"""``napari-unet-lab evaluate``: segment images and score them against true labels."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import AP_THRESHOLDS, segmentation_scores
from .common import (
    EXIT_OK,
    LABEL_SUFFIXES,
    InputError,
    load_named_model,
    output_options,
    paired_files,
    read_labels,
    refuse_existing,
    selected_device,
    write_json,
)
from .segmenting import segment_file, segmenting_options


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        "evaluate",
        parents=[output_options(), segmenting_options()],
        help="measure pixel IoU and object average precision against true labels",
        description=(
            "Segment images and compare with true instance labels: pixel IoU of the objects "
            "and object average precision at IoU 0.5 and averaged over 0.5:0.95, per image "
            "and overall. IMAGES and LABELS are two files, or two folders whose files pair up "
            f"by name (a.tif with a.tif or a{LABEL_SUFFIXES[0]}.tif; the same folder works)."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    parser.add_argument("images", metavar="IMAGES", type=Path, help="image or folder")
    parser.add_argument("labels", metavar="LABELS", type=Path, help="label image or folder")
    parser.add_argument("--report", type=Path, help="write the scores to this JSON file")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Segment images, score them against true labels, print a table, write a report."""
    args.device = selected_device(args.device)
    model, info, _ = load_named_model(args.model)
    pairs = paired_files(args.images, args.labels)
    if args.report is not None:
        refuse_existing([args.report], args.overwrite)
    rows = []
    for index, (image_path, labels_path) in enumerate(pairs, start=1):
        truth = read_labels(labels_path)
        label = f"[{index}/{len(pairs)}] {image_path.name}"
        objects = segment_file(model, info, image_path, args, label).objects
        if objects.shape != truth.shape:
            raise InputError(
                f"{labels_path.name} has shape {truth.shape}, but {image_path.name} gives "
                f"objects of shape {objects.shape}"
            )
        scores = segmentation_scores(objects, truth, AP_THRESHOLDS)
        rows.append({"image": str(image_path), "labels": str(labels_path), **scores})
    report = {
        "model": {"name": info.name, "source": args.model},
        "settings": {
            "threshold": args.threshold,
            "min_size": args.min_size,
            "split_touching": args.split_touching,
            "tile_size": args.tile_size,
        },
        "thresholds": list(AP_THRESHOLDS),
        "overall": overall_scores(rows),
        "images": rows,
    }
    print(score_table(report))
    if args.report is not None:
        write_json(args.report, report, args.overwrite)
        print(f"report: {args.report}")
    return EXIT_OK


def overall_scores(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-image scores: pixel IoU pooled over all pixels, AP averaged over images.

    Mean AP over images is the measure of the 2018 Data Science Bowl; the pooled
    pixel IoU weighs every pixel alike (the mean over images is given too).
    """
    union = sum(row["pixel_union"] for row in rows)
    thresholds = list(rows[0]["average_precision"]) if rows else []
    return {
        "images": len(rows),
        "pixel_iou": sum(row["pixel_intersection"] for row in rows) / union if union else 1.0,
        "pixel_iou_mean_per_image": float(np.mean([row["pixel_iou"] for row in rows])),
        "average_precision": {
            threshold: float(np.mean([row["average_precision"][threshold] for row in rows]))
            for threshold in thresholds
        },
        "ap_50": float(np.mean([row["ap_50"] for row in rows])),
        "mean_average_precision": float(np.mean([row["mean_average_precision"] for row in rows])),
        "objects_found": sum(row["objects_found"] for row in rows),
        "objects_true": sum(row["objects_true"] for row in rows),
    }


def score_table(report: dict[str, Any]) -> str:
    """Return the evaluation as a small plain-text table."""
    header = ("image", "objects", "true", "pixel IoU", "AP@0.5", "AP@0.5:0.95")
    lines = [
        (
            Path(row["image"]).name,
            str(row["objects_found"]),
            str(row["objects_true"]),
            f"{row['pixel_iou']:.3f}",
            f"{row['ap_50']:.3f}",
            f"{row['mean_average_precision']:.3f}",
        )
        for row in report["images"]
    ]
    overall = report["overall"]
    lines.append(
        (
            f"overall ({overall['images']})",
            str(overall["objects_found"]),
            str(overall["objects_true"]),
            f"{overall['pixel_iou']:.3f}",
            f"{overall['ap_50']:.3f}",
            f"{overall['mean_average_precision']:.3f}",
        )
    )
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def row(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([row(header), *map(row, lines[:-1]), "-" * len(row(header)), row(lines[-1])])
