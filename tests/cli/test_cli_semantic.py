"""A semantic task from the shell: train on class masks or scribbles, evaluate per class.

The promise: `train --annotations classes` is the Train widget's scribbles on every
pixel (class k is scribble k + 1), `--annotations scribbles` is the widget's scribbles
(0 not annotated), and `evaluate --labels-are classes` reports IoU and Dice per class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import napari_unet_lab.cli.common as cli
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.train import annotation_classes, class_balance_weights

FAST = ["--steps", "2", "--batch-size", "1", "--patch-size", "44", "--depth", "2",
        "--base-channels", "4", "--seed", "3", "-q", "--device", "cpu"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def membranes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An EM-like image: bright membranes (class 1) on a grid, dark vesicles (class 2)."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((64, 72), np.uint8)
    classes[:, 10 + seed :: 24] = 1
    classes[10 + seed :: 20, :] = 1
    classes[30:36, 40:46] = 2
    image = np.where(classes == 1, 200, 90) - 60 * (classes == 2) + rng.normal(0, 8, classes.shape)
    return image.astype(np.uint8), classes


@pytest.fixture(scope="module")
def em(tmp_path_factory) -> Path:
    """Two images with class masks (a_classes.tif) and scribbles (in a folder of their own)."""
    folder = tmp_path_factory.mktemp("em")
    (folder / "scribbles").mkdir()
    for index in (1, 2):
        image, classes = membranes(index)
        tifffile.imwrite(folder / f"em_{index}.tif", image)
        tifffile.imwrite(folder / f"em_{index}_labels.tif", classes)
        scribbles = np.zeros_like(classes)
        scribbles[5:12, :] = classes[5:12, :] + 1  # a band and a vesicle annotated, not the rest
        scribbles[30:36, 40:46] = 3
        tifffile.imwrite(folder / "scribbles" / f"em_{index}.tif", scribbles)
    return folder


def images_only(em: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in (1, 2):
        (folder / f"em_{index}.tif").write_bytes((em / f"em_{index}.tif").read_bytes())
    return folder


def test_class_masks_train_as_scribbles_on_every_pixel(em, tmp_path) -> None:
    scribbles = tmp_path / "as_scribbles"
    scribbles.mkdir()
    for index in (1, 2):
        classes = tifffile.imread(em / f"em_{index}_labels.tif")
        tifffile.imwrite(scribbles / f"em_{index}.tif", classes + 1)
    images = images_only(em, tmp_path)

    from_classes = main(["train", str(em), str(em), "-o", str(tmp_path / "c"), "--annotations",
                         "classes", *FAST])  # fmt: skip
    from_scribbles = main(["train", str(images), str(scribbles), "-o", str(tmp_path / "s"),
                           "--annotations", "scribbles", *FAST])  # fmt: skip

    assert from_classes == from_scribbles == cli.EXIT_OK
    model, info = load_model(tmp_path / "c.json")
    same, _ = load_model(tmp_path / "s.json")
    assert info.class_names == ["background", "class 1", "class 2"]
    assert model.config.n_classes == 3
    for (name, weights), (_, other) in zip(
        model.state_dict().items(), same.state_dict().items(), strict=True
    ):
        assert torch.equal(weights, other), name


def test_scribbles_train_on_the_annotated_pixels_only(em, tmp_path) -> None:
    images = images_only(em, tmp_path)

    status = main(["train", str(images), str(em / "scribbles"), "-o", str(tmp_path / "m"),
                   "--annotations", "scribbles", *FAST])  # fmt: skip

    assert status == cli.EXIT_OK
    _, info = load_model(tmp_path / "m.json")
    class_maps = [
        annotation_classes(tifffile.imread(em / "scribbles" / f"em_{i}.tif"), "scribbles")[0]
        for i in (1, 2)
    ]
    shared = class_balance_weights([c[c >= 0] for c in class_maps], 3)
    assert info.training["class_weights"] == np.round(shared, 6).tolist()
    assert info.class_names == ["background", "class 1", "class 2"]


def test_a_class_mask_with_too_many_classes_is_refused_in_words(em, tmp_path, capsys) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for index in (1, 2):
        tifffile.imwrite(masks / f"em_{index}.tif", np.full((64, 72), 300, np.uint16))

    status = main(["train", str(images_only(em, tmp_path)), str(masks), "-o",
                   str(tmp_path / "m"), "--annotations", "classes", *FAST])  # fmt: skip

    assert status == cli.EXIT_BAD_INPUT
    assert "em_1.tif holds class 300, but a network learns at most" in capsys.readouterr().err


def test_evaluate_scores_every_class_of_a_class_mask(em, tmp_path, capsys) -> None:
    main(["train", str(em), str(em), "-o", str(tmp_path / "m"), "--annotations", "classes",
          *FAST])  # fmt: skip
    report_path = tmp_path / "scores.json"
    capsys.readouterr()  # training's own output

    status = main(["evaluate", str(tmp_path / "m.json"), str(em), str(em), "--labels-are",
                   "classes", "--report", str(report_path), "-q", "--device", "cpu"])  # fmt: skip

    assert status == cli.EXIT_OK
    report = json.loads(report_path.read_text())
    model, info = load_model(tmp_path / "m.json")
    pooled = {name: [0, 0, 0] for name in info.class_names}  # intersection, union, sizes
    for row, index in zip(report["images"], (1, 2), strict=True):
        predicted = segment(model, info, tifffile.imread(em / f"em_{index}.tif"), device="cpu")
        truth = tifffile.imread(em / f"em_{index}_labels.tif")
        for number, name in enumerate(info.class_names):
            p, t = predicted.classes == number, truth == number
            inter, union = np.count_nonzero(p & t), np.count_nonzero(p | t)
            sizes = np.count_nonzero(p) + np.count_nonzero(t)
            assert row["classes"][name]["iou"] == (inter / union if union else 1.0)
            assert row["classes"][name]["dice"] == (2 * inter / sizes if sizes else 1.0)
            pooled[name] = [a + b for a, b in zip(pooled[name], (inter, union, sizes), strict=True)]
    for name, (inter, union, sizes) in pooled.items():
        assert report["overall"]["classes"][name]["iou"] == pytest.approx(inter / union)
        assert report["overall"]["classes"][name]["dice"] == pytest.approx(2 * inter / sizes)
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["image", "IoU", "class", "1", "Dice", "class", "1",
                                             "IoU", "class", "2", "Dice", "class", "2"]  # fmt: skip
    assert "overall (2)" in table


def test_evaluate_refuses_a_class_the_model_does_not_know(em, tmp_path, capsys) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for index in (1, 2):
        tifffile.imwrite(masks / f"em_{index}.tif", np.full((64, 72), 3, np.uint8))

    status = main(["evaluate", "nuclei", str(images_only(em, tmp_path)), str(masks),
                   "--labels-are", "classes", "-q", "--device", "cpu"])  # fmt: skip

    assert status == cli.EXIT_BAD_INPUT
    assert (
        "em_1.tif holds class 3, but the model knows 2 classes: 0 = background, 1 = nucleus"
        in capsys.readouterr().err
    )
