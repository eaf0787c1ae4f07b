"""Time to quality, scenarios (b) and (c): the scribble rule, the DSB kinds, the summary."""

import json

import numpy as np
import pytest
import tifffile
import torch
from benchmarks.bench_time_to_quality import ap50_by_checkpoint
from benchmarks.bench_training_quality import DATA
from benchmarks.time_to_quality_scenarios import (
    DSB,
    DSB_KINDS,
    dsb_images,
    rgb_first,
    scenario_c,
    scribbles_from_labels,
)
from scipy import ndimage

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.builtin import DEFAULT_MODEL
from napari_unet_lab.core.train import training_target


def nuclei(shape=(200, 240), seed=0):
    """Return instance labels of well-separated disks (radius 9), some cut by the border."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for label, (y, x) in enumerate(
        ((y, x) for y in range(5, shape[0], 30) for x in range(5, shape[1], 30)), start=1
    ):
        y, x = y + rng.integers(-3, 4), x + rng.integers(-3, 4)
        labels[np.hypot(yy - y, xx - x) <= 9] = label
    return labels


def test_scribbles_are_strokes_inside_objects_and_on_background_only():
    labels = nuclei()
    scribbles = scribbles_from_labels(labels, rng=0, objects=5, background=6)
    assert scribbles.dtype == np.uint8 and set(np.unique(scribbles)) == {0, 1, 2}
    assert np.all(labels[scribbles == 2] > 0)  # nucleus strokes never leave their nucleus
    assert np.all(labels[scribbles == 1] == 0)  # background strokes never touch one
    stroked = np.unique(labels[scribbles == 2])
    assert stroked.size == 5  # one stroke in each of 5 objects
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    assert not np.isin(stroked, border).any()  # only whole objects are stroked
    # strokes stay off every outline: eroded objects, background 3 px from objects
    outline = ndimage.binary_dilation(labels > 0) & ~ndimage.binary_erosion(labels > 0)
    assert not np.any(outline & (scribbles > 0))
    distance = ndimage.distance_transform_edt(labels == 0)
    assert distance[scribbles == 1].min() >= 2  # 3 px lines, widened by 1 px at most
    # sparse: a few strokes, not a painted image
    assert 0 < np.count_nonzero(scribbles) < 0.1 * scribbles.size
    assert 1 <= ndimage.label(scribbles == 1, np.ones((3, 3)))[1] <= 12
    # the Train widget takes them as scribbles: background class 0, nucleus class 1
    target = training_target(scribbles, "scribbles")
    assert target.n_classes == 2
    np.testing.assert_array_equal(target.classes[scribbles == 2], 1)


def test_the_same_seed_draws_the_same_scribbles_and_another_seed_others():
    labels = nuclei()
    first = scribbles_from_labels(labels, rng=3)
    np.testing.assert_array_equal(first, scribbles_from_labels(labels, rng=3))
    assert not np.array_equal(first, scribbles_from_labels(labels, rng=4))


def test_one_pixel_strokes_are_skeletons():
    labels = nuclei()
    scribbles = scribbles_from_labels(labels, rng=0, objects=3, background=3, width=1)
    # a skeleton has no 2 x 2 block of pixels
    blocks = (scribbles[:-1, :-1] > 0) & (scribbles[1:, :-1] > 0)
    blocks &= (scribbles[:-1, 1:] > 0) & (scribbles[1:, 1:] > 0)
    assert not blocks.any()


def write_dsb(folder, entries):
    """Write a miniature DSB folder: index.json, images and labels."""
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    for entry in entries:
        shape = entry["shape"] + ([] if entry["grayscale"] else [3])
        tifffile.imwrite(folder / "images" / f"{entry['id']}.tif", np.zeros(shape, np.uint8))
        labels = np.zeros(entry["shape"], np.uint16)
        labels[10:20, 10:20] = 1
        tifffile.imwrite(folder / "labels" / f"{entry['id']}.tif", labels)
    (folder / "index.json").write_text(json.dumps(entries))


def test_dsb_kinds_are_chosen_by_the_index_and_spread_over_the_split(tmp_path):
    def entry(name, shape, grayscale=True, split="val", area=1000):
        return {"id": name, "shape": shape, "grayscale": grayscale, "split": split,
                "median_object_area": area}  # fmt: skip

    entries = [entry(f"large{i}", [512, 640]) for i in (3, 1, 4, 0, 2)]
    entries += [entry("large-train", [512, 640], split="train"), entry("bf", [1024, 1024])]
    entries += [entry("rgb", [256, 320], grayscale=False), entry("small360", [360, 360], area=300)]
    entries += [entry("big360", [360, 360])]
    write_dsb(tmp_path, entries)
    names = [name for name, _, _ in dsb_images("large", "val", folder=tmp_path)]
    assert names == ["large0", "large1", "large2", "large3", "large4"]  # sorted by id
    spread = [name for name, _, _ in dsb_images("large", "val", 3, folder=tmp_path)]
    assert spread == ["large0", "large2", "large4"]  # first, middle, last
    assert [n for n, _, _ in dsb_images("large", "train", folder=tmp_path)] == ["large-train"]
    assert [n for n, _, _ in dsb_images("brightfield", "val", folder=tmp_path)] == ["bf"]
    assert [n for n, _, _ in dsb_images("large-360", "val", folder=tmp_path)] == ["big360"]
    [(name, image, labels)] = dsb_images("tissue", "val", folder=tmp_path)
    assert name == "rgb" and image.shape == (256, 320, 3) and labels.shape == (256, 320)
    assert rgb_first(image).shape == (3, 256, 320)
    assert rgb_first(labels) is labels
    assert set(DSB_KINDS) == {"large", "brightfield", "tissue", "large-360"}


def test_summary_gives_ap_per_checkpoint_and_the_gain_over_the_built_in_model():
    def point(at, auto, trained):
        return {"checkpoint_seconds": at, "auto": {"ap50": auto},
                "as trained": {"ap50": trained}}  # fmt: skip

    arms = {"new": [{"points": [point(30, 0.5, 0.4), point(60, 0.7, 0.6)]},
                    {"points": [point(30, 0.55, 0.45), point(60, 0.8, 0.65)]}]}  # fmt: skip
    baseline = {"auto": {"ap50": 0.3}, "as trained": {"ap50": 0.2}}
    summary = ap50_by_checkpoint(arms, [30.0, 60.0], baseline)
    assert summary["new, auto"] == {"0.5 min": [0.5, 0.55], "1 min": [0.7, 0.8]}
    assert summary["new, as trained"]["1 min"] == [0.6, 0.65]
    gains = summary["new, auto, gain over the built-in model"]
    assert gains == {"0.5 min": [0.2, 0.25], "1 min": [0.4, 0.5]}
    plain = {"new": [{"points": [{"checkpoint_seconds": 30, "ap50": 0.8}]}]}
    assert ap50_by_checkpoint(plain, [30.0]) == {"new": {"0.5 min": [0.8]}}


@pytest.mark.skipif(not (DSB / "index.json").exists(), reason="no shared DSB 2018 data here")
def test_scenario_b_smoke_run_writes_the_baseline_and_the_curve(tmp_path):
    from benchmarks.bench_time_to_quality import main

    out = tmp_path / "b.json"
    # RGB tissue: small images, and the luminance path for a grayscale model
    threads = torch.get_num_threads()
    try:
        main(
            ["--scenario", "b", "--kind", "tissue", "--quick", "--threads", "1", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert record["kind"] == "tissue" and len(record["training_images"]) == 3
    assert len(record["validation_images"]) == 1
    digests = record["built_in_model"]["sha256"]
    assert set(digests) == {f"{DEFAULT_MODEL}.json", f"{DEFAULT_MODEL}.safetensors"}
    assert all(len(digest) == 64 for digest in digests.values())
    assert set(record["baseline"]) == {"auto", "as trained"}
    [run] = record["arms"]["new"]
    assert [p["checkpoint_seconds"] for p in run["points"]] == [3.0, 6.0]
    assert run["settings"]["learning_rate"] == 5e-4
    assert set(record["ap50_by_checkpoint"]) == {
        "new, auto", "new, as trained", "new, auto, gain over the built-in model",
        "new, as trained, gain over the built-in model",
    }  # fmt: skip


@pytest.mark.skipif(not (DATA / "train").is_dir(), reason="no shared BBBC039 data here")
def test_scenario_c_trains_on_scribbles_of_one_image():
    scenario = scenario_c(val_images=1, rng=0)
    [item] = scenario.items
    assert item.kind == "scribbles" and item.name == scenario.record["training_images"][0]
    assert set(np.unique(item.annotation)) == {0, 1, 2}
    rule = scenario.record["scribbles"]
    assert rule["nucleus_pixels"] == np.count_nonzero(item.annotation == 2)
    assert rule["annotated_share"] < 0.02  # a few strokes on a 520 x 696 image
    assert scenario.settings == {}  # a new network: the new-network rate, default mapping
    model, info = scenario.start(0, torch.device("cpu"), UNetConfig.new_network())
    assert model.config == UNetConfig.new_network()
    assert info.class_names == ["background", "nucleus"]
