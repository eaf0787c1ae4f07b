"""``napari-unet-lab evaluate``: segment images and score them against true labels.

True instance labels get pixel IoU and object average precision; true class masks
(``--labels-are classes``) get pixel IoU and Dice per class.
"""

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
from .predict import add_object_diameter_option, size_said
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
            f"by name (a.tif with a.tif or a{LABEL_SUFFIXES[0]}.tif; the same folder works). "
            "With --labels-are classes, LABELS are class masks (0 background, 1, 2, … the "
            "model's classes) and each class gets its pixel IoU and Dice instead."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file or built-in model name")
    parser.add_argument("images", metavar="IMAGES", type=Path, help="image or folder")
    parser.add_argument("labels", metavar="LABELS", type=Path, help="label image or folder")
    parser.add_argument(
        "--labels-are",
        choices=("objects", "classes"),
        default="objects",
        help="objects: instance labels, scored by pixel IoU and average precision; classes: "
        "class masks, scored by pixel IoU and Dice per class (default: objects)",
    )
    parser.add_argument("--report", type=Path, help="write the scores to this JSON file")
    add_object_diameter_option(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Segment images, score them against true labels, print a table, write a report."""
    args.device = selected_device(args.device)
    model, info, _ = load_named_model(args.model)
    pairs = paired_files(args.images, args.labels)
    if args.report is not None:
        refuse_existing([args.report], args.overwrite)
    if args.labels_are == "classes":
        return _run_on_classes(args, model, info, pairs)
    rows = []
    for index, (image_path, labels_path) in enumerate(pairs, start=1):
        truth = read_labels(labels_path)
        label = f"[{index}/{len(pairs)}] {image_path.name}"
        result = segment_file(model, info, image_path, args, label)
        objects = result.objects
        if result.object_diameter is not None or result.size_note:
            print(f"{image_path.name}:{size_said(result)}")
        if objects.shape != truth.shape:
            raise InputError(
                f"{labels_path.name} has shape {truth.shape}, but {image_path.name} gives "
                f"objects of shape {objects.shape}"
            )
        scores = segmentation_scores(objects, truth, AP_THRESHOLDS)
        size = {"object_diameter": result.object_diameter, "scale": result.scale}
        rows.append({"image": str(image_path), "labels": str(labels_path), **scores, **size})
    report = {
        "model": {"name": info.name, "source": args.model},
        "settings": {
            "threshold": args.threshold,
            "min_size": args.min_size,
            "split_touching": args.split_touching,
            "tile_size": args.tile_size,
            "object_diameter": args.object_diameter,
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
    return _table(header, lines)


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Align `lines` under `header`; the last line (the overall one) below a rule."""
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def row(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([row(header), *map(row, lines[:-1]), "-" * len(row(header)), row(lines[-1])])


# ------------------------------------------------------------------ class masks
def _run_on_classes(args: argparse.Namespace, model, info, pairs) -> int:
    """Segment images, score each class against true class masks, print, report."""
    class_names = list(info.class_names)
    rows = []
    for index, (image_path, labels_path) in enumerate(pairs, start=1):
        truth = read_labels(labels_path)
        if int(truth.max(initial=0)) >= len(class_names):
            raise InputError(
                f"{labels_path.name} holds class {int(truth.max())}, but the model knows "
                f"{len(class_names)} classes: 0 = {', '.join(_numbered(class_names))}"
            )
        label = f"[{index}/{len(pairs)}] {image_path.name}"
        classes = segment_file(model, info, image_path, args, label).classes
        if classes.shape != truth.shape:
            raise InputError(
                f"{labels_path.name} has shape {truth.shape}, but {image_path.name} gives "
                f"classes of shape {classes.shape}"
            )
        scores = class_scores(classes, truth, class_names)
        rows.append({"image": str(image_path), "labels": str(labels_path), "classes": scores})
    report = {
        "model": {"name": info.name, "source": args.model},
        "labels_are": "classes",
        "settings": {"tile_size": args.tile_size},
        "overall": {"images": len(rows), "classes": pooled_class_scores(rows, class_names)},
        "images": rows,
    }
    print(class_score_table(report, class_names))
    if args.report is not None:
        write_json(args.report, report, args.overwrite)
        print(f"report: {args.report}")
    return EXIT_OK


def class_scores(
    predicted: np.ndarray, truth: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Return pixel IoU and Dice of every class of a class map against the true one.

    Parameters
    ----------
    predicted, truth : ndarray of int
        Class per pixel, 0 the background; the same shape.
    class_names : sequence of str
        Name of class 0, 1, …; the keys of the result.

    Returns
    -------
    dict
        Per class name: ``iou``, ``dice`` and the pixel counts they come from
        (``intersection``, ``union``, ``predicted``, ``true``). A class absent from
        both scores 1, as in `core.metrics.pixel_iou`.

    Examples
    --------
    >>> scores = class_scores(np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1]), ["bg", "m"])
    >>> scores["m"]["iou"], scores["m"]["dice"]
    (0.3333333333333333, 0.5)
    """
    scores = {}
    for index, name in enumerate(class_names):
        is_predicted, is_true = predicted == index, truth == index
        scores[name] = _scores_from_counts(
            intersection=int(np.count_nonzero(is_predicted & is_true)),
            union=int(np.count_nonzero(is_predicted | is_true)),
            predicted=int(np.count_nonzero(is_predicted)),
            true=int(np.count_nonzero(is_true)),
        )
    return scores


def pooled_class_scores(
    rows: Sequence[dict[str, Any]], class_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Combine per-image class scores over all pixels of all images."""
    counts = ("intersection", "union", "predicted", "true")
    return {
        name: _scores_from_counts(
            **{count: sum(row["classes"][name][count] for row in rows) for count in counts}
        )
        for name in class_names
    }


def _scores_from_counts(intersection: int, union: int, predicted: int, true: int) -> dict:
    return {
        "iou": intersection / union if union else 1.0,
        "dice": 2 * intersection / (predicted + true) if predicted + true else 1.0,
        "intersection": intersection,
        "union": union,
        "predicted": predicted,
        "true": true,
    }


def class_score_table(report: dict[str, Any], class_names: Sequence[str]) -> str:
    """Return the per-class evaluation as a small plain-text table (classes besides 0)."""
    shown = list(class_names[1:])
    header = ("image", *(f"{kind} {name}" for name in shown for kind in ("IoU", "Dice")))

    def cells(first: str, scores: dict[str, dict[str, Any]]) -> tuple[str, ...]:
        values = (scores[name][kind] for name in shown for kind in ("iou", "dice"))
        return (first, *(f"{value:.3f}" for value in values))

    lines = [cells(Path(row["image"]).name, row["classes"]) for row in report["images"]]
    overall = report["overall"]
    lines.append(cells(f"overall ({overall['images']})", overall["classes"]))
    return _table(header, lines)


def _numbered(class_names: Sequence[str]) -> list[str]:
    return [name if index == 0 else f"{index} = {name}" for index, name in enumerate(class_names)]
