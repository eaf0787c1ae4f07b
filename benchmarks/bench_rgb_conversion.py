"""How should a grayscale model see stained tissue? RGB conversions on the DSB 2018 val split.

Issue #12, item 5: RGB input is handled "the way you measure best". The built-in models
are grayscale; `core.images.grayscale` (luminance, ITU-R BT.709) is the one conversion of
prediction, training and look-inside. This benchmark segments every RGB image of the DSB
2018 val split (21 stained-tissue images) with the automatic object diameter after each
candidate conversion and scores AP@0.5 and mean AP against the ground truth:

- luminance: ``0.2125 R + 0.7154 G + 0.0721 B`` (what the plugin does);
- hematoxylin: the first channel of `skimage.color.rgb2hed` (colour deconvolution);
- darkest channel: the per-pixel minimum of R, G and B;
- saturation: the per-pixel maximum minus the minimum.

Run::

    .venv/bin/python -m benchmarks.bench_rgb_conversion --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from skimage.color import rgb2hed

from benchmarks.bench_object_size import DATA
from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.images import grayscale
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.segment import segment

CONVERSIONS = {
    "luminance": grayscale,
    "hematoxylin": lambda rgb: rgb2hed(rgb[..., :3]).astype(np.float32)[..., 0],
    "darkest channel": lambda rgb: rgb[..., :3].min(-1).astype(np.float32),
    "saturation": lambda rgb: np.ptp(rgb[..., :3].astype(np.float32), axis=-1),
}


def scored(model, info, rgb: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """AP@0.5 and mean AP of one RGB image after each conversion."""
    row = {}
    for name, convert in CONVERSIONS.items():
        found = segment(model, info, convert(rgb), object_diameter="auto")
        scores = segmentation_scores(found.objects, labels)
        row[name] = [round(scores["ap_50"], 4), round(scores["mean_average_precision"], 4)]
    return row


def summarise(images: dict[str, dict]) -> dict[str, list[float]]:
    """Mean AP@0.5 and mean AP per conversion."""
    return {
        name: [round(float(np.mean([row[name][k] for row in images.values()])), 3) for k in (0, 1)]
        for name in CONVERSIONS
    }


def main(argv: list[str] | None = None) -> int:
    """Segment the RGB val images after each conversion and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nuclei_broad", help="model file or built-in name")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, info = load_model(builtin_models().get(args.model, Path(args.model)))
    folder = DATA / "dsb2018_train"
    record: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_rgb_conversion " + " ".join(argv or sys.argv[1:]),
        "model": args.model,
        "images": {},
    }
    for entry in json.loads((folder / "index.json").read_text()):
        if entry["split"] != "val":
            continue
        image = tifffile.imread(folder / "images" / f"{entry['id']}.tif")
        if image.ndim == 3:
            labels = tifffile.imread(folder / "labels" / f"{entry['id']}.tif")
            record["images"][entry["id"]] = scored(model, info, image, labels)
            print(entry["id"][:10], record["images"][entry["id"]], flush=True)
    record["summary"] = summarise(record["images"])
    for name, (ap50, mean_ap) in record["summary"].items():
        print(f"{name:16s} AP@0.5 {ap50:.3f}  mean AP {mean_ap:.3f}")
    record["machine"]["load_average_end"] = list(os.getloadavg())
    out = args.out or ROOT / "benchmarks" / "results" / "rgb_conversion-cpu-dsb.json"
    write_report(record, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
