"""The border weight map per object box against the literal definition, on 1024 x 1024 labels.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_border_weights   # → results/border_weights-cpu.json

`border_weight_map` computes each object's distance transform in its bounding
box grown by the reach of the separation term; `border_weight_map_naive` computes
one distance transform per object over the whole image, as eq. 2 of Ronneberger
et al. (2015) reads. Both run with their defaults (w0 = 10, sigma = 5, class
weights balanced over the image) on two label images of 1024 x 1024:

- ``bbbc039``: real nuclei. The centre 512 x 512 crops of the first four BBBC039
  train label images (by file name), tiled 2 x 2. Objects cut by a crop's edge are
  dropped, so every object is whole and no two objects touch across a seam; the
  ids are made unique.
- ``crowded``: about 300 synthetic cells that mostly touch, the hard case for the
  paper's weights. Seeds on a jittered 17 x 18 grid; each pixel belongs to its
  nearest seed if it lies within that seed's radius (28-40 px), else to the background.

An object "touches" another when one of its pixels has a pixel of another object
among its 8 neighbours (the rule of `semantic_target_from_instances`).

The naive map is slow (one 1024² distance transform per object), so it runs
twice per case, and the fast map runs three times before and three times after
each naive run: both meet the same background load. Medians are reported and
raw times kept. Both functions are NumPy/SciPy and single-threaded. The exit
status is 0 whatever the targets say: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi

from napari_unet_lab.core.train.targets import border_weight_map, border_weight_map_naive

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.machine import ROOT, describe_machine, write_report
except ImportError:
    from machine import ROOT, describe_machine, write_report

RESULTS = Path(__file__).resolve().parent / "results"
DATA = ROOT.parent / "shared" / "data" / "bbbc039"
SPEEDUP_TARGET = 50.0  # issue "Training": the fast map at least 50x the literal one
DIFFERENCE_TARGET = 1e-3  # and max |fast - naive| at most this
FAST_PER_SIDE = 3  # fast runs right before and right after each naive run


def touching_objects(labels: np.ndarray) -> int:
    """Count the objects that have a pixel of another object among their 8 neighbours."""
    empty = np.iinfo(labels.dtype).max
    largest = ndi.maximum_filter(labels, size=3, mode="constant", cval=0)
    smallest = ndi.minimum_filter(np.where(labels > 0, labels, empty), size=3, mode="nearest")
    other = (labels > 0) & ((largest > labels) | (smallest < labels))
    return int(np.unique(labels[other]).size)


def bbbc039_mosaic(data: Path, crop: int) -> tuple[np.ndarray, list[str]]:
    """Tile the centre crops of the first four train label images 2 x 2; ids made unique."""
    from skimage.segmentation import clear_border

    paths = sorted((data / "train" / "labels").glob("*.tif*"))[:4]
    if len(paths) < 4:
        raise FileNotFoundError(f"need 4 label images in {data / 'train' / 'labels'}")
    mosaic = np.zeros((2 * crop, 2 * crop), dtype=np.int32)
    next_id = 1
    for index, path in enumerate(paths):
        labels = tifffile.imread(path)
        top = (labels.shape[0] - crop) // 2
        left = (labels.shape[1] - crop) // 2
        window = clear_border(labels[top : top + crop, left : left + crop].astype(np.int32))
        ids, inverse = np.unique(window, return_inverse=True)  # ids[0] is 0, the background
        relabelled = np.where(window > 0, inverse.reshape(window.shape) + next_id - 1, 0)
        next_id += ids.size - 1
        row, col = divmod(index, 2)
        mosaic[row * crop : (row + 1) * crop, col * crop : (col + 1) * crop] = relabelled
    return mosaic, [path.name for path in paths]


def crowded_cells(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Return about `cells` touching cells: nearest seed within the seed's radius."""
    rows = max(int(round(np.sqrt(cells))), 1)
    cols = max(int(np.ceil(cells / rows)), 1)
    spacing = np.array([size / rows, size / cols])
    ys, xs = np.meshgrid(
        (np.arange(rows) + 0.5) * spacing[0], (np.arange(cols) + 0.5) * spacing[1], indexing="ij"
    )
    seeds = np.stack([ys.ravel(), xs.ravel()], axis=1)
    seeds += rng.uniform(-0.3, 0.3, seeds.shape) * spacing
    seeds = np.clip(np.round(seeds), 0, size - 1).astype(int)
    # 2 x radius > spacing: neighbours overlap, and the nearer seed wins the overlap
    radius = rng.uniform(0.48, 0.68, len(seeds)) * spacing.mean()
    marks = np.zeros((size, size), dtype=np.int32)
    marks[seeds[:, 0], seeds[:, 1]] = np.arange(1, len(seeds) + 1)
    distance, (near_y, near_x) = ndi.distance_transform_edt(marks == 0, return_indices=True)
    nearest = marks[near_y, near_x]
    return np.where(distance <= radius[nearest - 1], nearest, 0).astype(np.int32)


def timed(run: Callable[[], Any], times: list[float]) -> Any:
    """Run once, append the wall-clock time, return the result."""
    start = time.perf_counter()
    result = run()
    times.append(time.perf_counter() - start)
    return result


def measure_case(labels: np.ndarray, naive_repeats: int) -> dict[str, Any]:
    """Time both maps on one label image and compare their values."""
    fast_times: list[float] = []
    naive_times: list[float] = []
    fast_map = border_weight_map(labels)  # warm-up, untimed
    naive_map = None
    for _ in range(naive_repeats):
        for _ in range(FAST_PER_SIDE):
            timed(lambda: border_weight_map(labels), fast_times)
        naive_map = timed(lambda: border_weight_map_naive(labels), naive_times)
        for _ in range(FAST_PER_SIDE):
            timed(lambda: border_weight_map(labels), fast_times)
    difference = np.abs(fast_map.astype(np.float64) - naive_map.astype(np.float64))
    fast, naive = statistics.median(fast_times), statistics.median(naive_times)
    return {
        "objects": int(np.unique(labels[labels > 0]).size),
        "touching_objects": touching_objects(labels),
        "object_pixels": int(np.count_nonzero(labels)),
        "median_seconds": {"fast": fast, "naive": naive},
        "best_seconds": {"fast": min(fast_times), "naive": min(naive_times)},
        "speedup_median": naive / fast,
        "speedup_best": min(naive_times) / min(fast_times),
        "max_abs_difference": float(difference.max()),
        "pixels_differing_over_1e-6": int(np.count_nonzero(difference > 1e-6)),
        "weight_range": [float(naive_map.min()), float(naive_map.max())],
        "raw_seconds": {"fast": fast_times, "naive": naive_times},
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="BBBC039 folder")
    parser.add_argument("--size", type=int, default=1024, help="label image edge")
    parser.add_argument("--cells", type=int, default=300, help="cells in the crowded case")
    parser.add_argument("--naive-repeats", type=int, default=2, help="timed naive runs per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "border_weights-cpu.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build both label images, time both maps on each, print a table, write the JSON."""
    arguments = parse_arguments(argv)
    info = describe_machine(torch.device("cpu"), scipy=__import__("scipy").__version__)
    mosaic, names = bbbc039_mosaic(arguments.data, arguments.size // 2)
    cases = {
        "bbbc039": mosaic,
        "crowded": crowded_cells(
            arguments.size, arguments.cells, np.random.default_rng(arguments.seed)
        ),
    }
    results = {}
    for name, labels in cases.items():
        results[name] = measure_case(labels, arguments.naive_repeats)
    info["load_average_end"] = list(os.getloadavg())

    verdicts = {}
    print(f"border weight map, {arguments.size} x {arguments.size}, w0 = 10, sigma = 5")
    header = "case       objects touching   fast s  naive s  speed-up (best)   max|d|"
    print(header)
    for name, r in results.items():
        passed = r["speedup_median"] >= SPEEDUP_TARGET and r["max_abs_difference"] <= (
            DIFFERENCE_TARGET
        )
        verdicts[name] = "PASS" if passed else "FAIL"
        print(
            f"{name:10s} {r['objects']:7d} {r['touching_objects']:8d} "
            f"{r['median_seconds']['fast']:8.3f} {r['median_seconds']['naive']:8.2f} "
            f"{r['speedup_median']:8.1f}x ({r['speedup_best']:5.1f}x) "
            f"{r['max_abs_difference']:8.1e}  {verdicts[name]}"
        )
    report = {
        "benchmark": "border_weights",
        "command": "python -m benchmarks.bench_border_weights " + " ".join(argv or sys.argv[1:]),
        "machine": info,
        "settings": {
            "size": arguments.size,
            "w0": 10.0,
            "sigma": 5.0,
            "class_weights": "balanced over the image (the default)",
            "bbbc039": f"centre {arguments.size // 2}² crops of {names}, objects cut by a crop "
            "edge dropped, tiled 2 x 2, ids made unique",
            "crowded": f"{arguments.cells} seeds on a jittered grid (seed {arguments.seed}), "
            "nearest seed within 0.48-0.68 x the grid spacing",
            "touching": "an object pixel with a pixel of another object among its 8 neighbours",
            "protocol": f"1 untimed fast run, then per naive run {FAST_PER_SIDE} fast runs "
            f"before and after it; {arguments.naive_repeats} naive runs per case",
        },
        "cases": results,
        "targets": {
            "speedup": SPEEDUP_TARGET,
            "max_abs_difference": DIFFERENCE_TARGET,
            "verdict": verdicts,
        },
    }
    write_report(report, arguments.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
