"""The three scenarios of the time-to-quality benchmark: what is trained on and how it is scored.

(a) from scratch on 3 BBBC039 train images, scored on BBBC039 val (`scenario_a`);
(b) the built-in model fine-tuned on 3 DSB 2018 train images of a kind it segments badly,
scored on the val images of that kind, its score before fine-tuning the baseline
(`scenario_b`, kinds in `DSB_KINDS`); (c) sparse scribbles drawn from the ground truth of one
BBBC039 train image by a fixed seeded rule (`scribbles_from_labels`), scored on BBBC039 val
(`scenario_c`). `bench_time_to_quality` runs each against the clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from scipy import ndimage
from skimage.morphology import disk, skeletonize

from benchmarks.bench_training_quality import DATA, evaluate, read_split, starting_model
from benchmarks.machine import ROOT
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import channels_first
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.builtin import DEFAULT_MODEL, builtin_models
from napari_unet_lab.core.model.files import ModelInfo, load_model, model_paths
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.train import AnnotatedImage, TrainingRun, trained_model_info
from napari_unet_lab.core.train.settings import FINE_TUNING_RATE

DSB = ROOT.parent / "shared" / "data" / "dsb2018_train"
# Kinds of DSB image, told apart by index.json alone (shape, grayscale, median_object_area);
# `bench_object_size.image_kind` (pixel statistics) puts each group in the kind named here.
DSB_KINDS: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "large": (
        "large fluorescent nuclei, 512 x 640 (median object area 870-1565 px)",
        lambda e: e["grayscale"] and e["shape"] == [512, 640],
    ),
    "brightfield": (
        "brightfield, dark nuclei on a bright background, 1024 x 1024",
        lambda e: e["grayscale"] and e["shape"] == [1024, 1024],
    ),
    "tissue": ("stained tissue in RGB, 256 x 320", lambda e: not e["grayscale"]),
    "large-360": (
        "large fluorescent nuclei, 360 x 360 (median object area at least 600 px)",
        lambda e: e["grayscale"] and e["shape"] == [360, 360] and e["median_object_area"] >= 600,
    ),
}
SCORE_DIAMETERS = {"auto": "auto", "as trained": None}  # object_diameter for `segment`


@dataclass
class Scenario:
    """What one scenario trains on, from which network, and how it scores a network."""

    description: str
    items: list[AnnotatedImage]  # the annotations, as the Train widget hands them to the core
    # seed, device, a new network's configuration -> the network to train (fine-tuning
    # scenarios start from their model and ignore the configuration)
    start: Callable[[int, torch.device, UNetConfig], tuple[UNet, ModelInfo]]
    score: Callable[[TrainingRun, ModelInfo], dict[str, Any]]  # the run's network, scored
    settings: dict[str, Any] = field(default_factory=dict)  # TrainingSettings the start needs
    record: dict[str, Any] = field(default_factory=dict)  # what else the report keeps


# ---------------------------------------------------------------- scribbles
def scribbles_from_labels(
    labels: np.ndarray,
    rng: int | np.random.Generator | None = 0,
    objects: int = 8,
    background: int = 8,
    width: int = 3,
    piece: int = 64,
) -> np.ndarray:
    """Draw sparse scribbles from instance labels, as a user would paint a few strokes.

    Parameters
    ----------
    labels : (Y, X) int array
        Instance labels, 0 background.
    rng : int or numpy.random.Generator, optional
        Which objects and background pieces are chosen.
    objects : int
        Objects to stroke: their skeleton (a line along the middle of the object),
        `width` px wide, kept off the object's outline.
    background : int
        Background strokes: pieces of the skeleton of the background (lines halfway
        between objects, at least 3 px from any object), cut into at most
        `piece` x `piece` px by a grid, `width` px wide.
    width : int
        Stroke width in pixels (odd; 1 draws the skeleton itself).
    piece : int
        Grid spacing that cuts the background skeleton into strokes.

    Returns
    -------
    (Y, X) uint8 array
        Scribbles as the Train widget takes them: 0 not annotated, 1 background,
        2 nucleus (`core.train.targets.training_target`, kind ``"scribbles"``).

    Notes
    -----
    Only objects that do not touch the image border are stroked (a user strokes whole
    objects). The same labels and seed always give the same scribbles.
    """
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    scribbles = np.zeros(labels.shape, np.uint8)
    brush = disk(width // 2) if width > 1 else None
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    ids = np.setdiff1d(np.unique(labels), np.append(border, 0))
    for label in np.sort(rng.choice(ids, min(objects, ids.size), replace=False)):
        inside = ndimage.binary_erosion(labels == label)  # off the outline
        line = skeletonize(inside)
        if brush is not None:
            line = ndimage.binary_dilation(line, brush) & inside
        scribbles[line] = 2
    far = ndimage.distance_transform_edt(labels == 0) >= 3  # away from every object
    lines = skeletonize(far)
    rows, cols = np.indices(labels.shape)
    cells = (rows // piece) * (-(-labels.shape[1] // piece)) + cols // piece
    pieces, count = ndimage.label(lines, np.ones((3, 3)))
    pieces = np.where(lines, pieces * (cells.max() + 1) + cells, 0)  # cut at the grid lines
    chosen = np.unique(pieces[pieces > 0])
    chosen = [p for p in chosen if np.count_nonzero(pieces == p) >= piece // 4]  # no specks
    if count and chosen:
        for value in rng.choice(chosen, min(background, len(chosen)), replace=False):
            stroke = pieces == value
            if brush is not None:
                stroke = ndimage.binary_dilation(stroke, brush) & (labels == 0)
            scribbles[stroke & (scribbles == 0)] = 1
    return scribbles


# ---------------------------------------------------------------- DSB kinds
def dsb_images(kind: str, split: str, limit: int | None = None, folder: Path = DSB) -> list:
    """Return (id, image, labels) of the DSB images of a kind in a split, sorted by id.

    With `limit`, that many spread evenly over the split rather than its first few.
    """
    _, chosen = DSB_KINDS[kind]
    index = json.loads((folder / "index.json").read_text())
    entries = sorted((e for e in index if e["split"] == split and chosen(e)), key=lambda e: e["id"])
    if limit is not None and limit < len(entries):
        entries = [entries[i] for i in np.linspace(0, len(entries) - 1, limit).round().astype(int)]
    return [
        (
            e["id"],
            tifffile.imread(folder / "images" / f"{e['id']}.tif"),
            tifffile.imread(folder / "labels" / f"{e['id']}.tif"),
        )
        for e in entries
    ]


def file_digests(model_path: Path) -> dict[str, str]:
    """Return the sha256 of a model's JSON and safetensors files: which model it really was."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in model_paths(model_path)
    }


def scores_on(model: UNet, info: ModelInfo, images: list, object_diameter) -> dict[str, float]:
    """Means over images of AP@0.5 and mean AP 0.5:0.95, and the pooled pixel IoU."""
    ap50, mean_ap, intersection, union = [], [], 0, 0
    device = str(next(model.parameters()).device)
    for _, image, labels in images:
        result = segment_for_score(model, info, image, object_diameter, device)
        scores = segmentation_scores(result.objects, labels)
        ap50.append(scores["ap_50"])
        mean_ap.append(scores["mean_average_precision"])
        intersection += scores["pixel_intersection"]
        union += scores["pixel_union"]
    return {
        "ap50": round(float(np.mean(ap50)), 4),
        "mean_ap": round(float(np.mean(mean_ap)), 4),
        "pixel_iou": round(intersection / max(union, 1), 4),
    }


def segment_for_score(model, info, image, object_diameter, device):
    """Segment as the Predict widget does: an RGB image as RGB (a grayscale model: luminance)."""
    return segment(
        model, info, image, rgb=image.ndim == 3, object_diameter=object_diameter, device=device
    )


def scores_by_diameter(model: UNet, info: ModelInfo, images: list) -> dict[str, Any]:
    """`scores_on` with the object diameter "auto" and as trained, side by side."""
    return {name: scores_on(model, info, images, d) for name, d in SCORE_DIAMETERS.items()}


# ---------------------------------------------------------------- scenarios
def scenario_a(val_images: int | None) -> Scenario:
    """Return scenario (a): from scratch on the first 3 BBBC039 train images, BBBC039 val."""
    train = read_split(DATA / "train", 3)
    validation = read_split(DATA / "val", val_images)
    return Scenario(
        description="a: from scratch on 3 BBBC039 train images, scored on the val split",
        items=[AnnotatedImage(image, labels, "objects", name=n) for n, image, labels in train],
        start=lambda seed, device, network: _moved(
            starting_model("scratch", seed, device, network)
        ),
        score=lambda run, info: evaluate(run.model, info, validation),
        record={"training_images": [n for n, _, _ in train], "validation_images": len(validation)},
    )


def scenario_b(kind: str, val_images: int | None, train_images: int = 3) -> Scenario:
    """Return scenario (b): the built-in model fine-tuned on DSB images of `kind`.

    Trained on the first `train_images` train images of the kind (by id), scored on
    its val images (`val_images` of them, spread evenly; default all).

    The built-in model is read when the scenario is made (it may be replaced during a
    session), and its files' sha256 recorded; its scores before fine-tuning, with the
    object diameter "auto" and as trained, are the baseline.
    """
    path = builtin_models()[DEFAULT_MODEL]
    base, base_info = load_model(path)
    train = dsb_images(kind, "train")[:train_images]
    validation = dsb_images(kind, "val", val_images)
    items = [  # an RGB image channels first, as the Train widget hands it over
        AnnotatedImage(rgb_first(image), labels, "objects", name=name[:10], rgb=image.ndim == 3)
        for name, image, labels in train
    ]

    def score(run: TrainingRun, info: ModelInfo) -> dict[str, Any]:
        # as the user would save it: the object size of the new annotations recorded
        tuned = trained_model_info(
            run, "fine-tuned", seed=None, images=[i.name for i in items], base=info,
            annotations=items,
        )  # fmt: skip
        return {"object_diameter": tuned.object_diameter,
                **scores_by_diameter(run.model, tuned, validation)}  # fmt: skip

    return Scenario(
        description=f"b: the built-in model fine-tuned on {len(train)} DSB 2018 train images "
        f"of one kind ({kind}: {DSB_KINDS[kind][0]}), scored on the val images of that kind",
        items=items,
        start=lambda seed, device, network: _moved(load_model(path), device),
        score=score,
        settings={"learning_rate": FINE_TUNING_RATE, "normalization": base_info.normalization},
        record={
            "kind": kind,
            "training_images": [n for n, _, _ in train],
            "validation_images": [n for n, _, _ in validation],
            "built_in_model": {
                "path": str(path),
                "sha256": file_digests(path),
                "object_diameter": base_info.object_diameter,
            },
            "baseline": scores_by_diameter(base, base_info, validation),
        },
    )


def scenario_c(
    val_images: int | None, start: str = "new", image: int = 0, rng: int = 0, **rule: int
) -> Scenario:
    """Return scenario (c): scribbles from one BBBC039 train image's truth, BBBC039 val.

    `rule` goes to `scribbles_from_labels` (objects, background, width, piece);
    `start` is ``"new"`` (a new network, random weights) or ``"builtin"``.
    """
    name, pixels, labels = read_split(DATA / "train", image + 1)[image]
    scribbles = scribbles_from_labels(labels, rng, **rule)
    validation = read_split(DATA / "val", val_images)
    path = builtin_models()[DEFAULT_MODEL]
    settings = {}
    if start == "builtin":
        settings = {"learning_rate": FINE_TUNING_RATE,
                    "normalization": load_model(path)[1].normalization}  # fmt: skip

    def starting(seed: int, device: torch.device, network: UNetConfig) -> tuple[UNet, ModelInfo]:
        if start == "builtin":
            return _moved(load_model(path), device)
        return _moved(starting_model("scratch", seed, device, network))

    return Scenario(
        description=f"c: scribbles drawn from the ground truth of one BBBC039 train image "
        f"(seed {rng}), from {'the built-in model' if start == 'builtin' else 'a new network'}, "
        "scored on the val split",
        items=[AnnotatedImage(pixels, scribbles, "scribbles", name=name)],
        start=starting,
        score=lambda run, info: evaluate(run.model, info, validation),
        settings=settings,
        record={
            "training_images": [name],
            "validation_images": len(validation),
            "scribbles": {
                "seed": rng,
                "rule": rule,
                "background_pixels": int(np.count_nonzero(scribbles == 1)),
                "nucleus_pixels": int(np.count_nonzero(scribbles == 2)),
                "annotated_share": round(float(np.count_nonzero(scribbles) / scribbles.size), 4),
            },
            "start": start,
            **({"built_in_model": {"sha256": file_digests(path)}} if start == "builtin" else {}),
        },
    )


def rgb_first(image: np.ndarray) -> np.ndarray:
    """Return an RGB image (Y, X, 3) channels first, as training takes it; others as they are."""
    return channels_first(image, -1) if image.ndim == 3 else image


def _moved(
    loaded: tuple[UNet, ModelInfo], device: torch.device | None = None
) -> tuple[UNet, ModelInfo]:
    model, info = loaded
    return (model if device is None else model.to(device)), info
