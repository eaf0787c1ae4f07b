r"""Write a compact copy of the built-in model's training data, to train it on a lent GPU.

A lent GPU machine takes at most 64 MiB of files per call, the repository included, and
BBBC039's 12-bit TIFFs do not compress, so the copy is made smaller where the training does
not look: each BBBC039 ``train`` image is mapped linearly from its minimum and maximum onto
8 bits (the training rescales every image by its own percentiles anyway, so only the
quantisation is lost: 12 units of 3,000 per level), each RGB DSB 2018 image becomes its 8-bit
luminance (what `core.images.grayscale` gives a grayscale model, rounded), and everything is
LZMA-compressed. Labels are copied exactly; val images are left out (models are scored here,
on the originals: ``train_base_model.py --validate-only``). The layout is the one
``train_base_model.py --data/--dsb-data`` reads. 100 + 494 images take 42 MB.

Usage::

    .venv/bin/python scripts/pack_training_data.py --out devdata2
    # then on the GPU machine:
    python3 scripts/train_base_model.py --data devdata2/bbbc039 \
        --dsb-data devdata2/dsb2018_train --skip-validation ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_unet_lab.core.images import grayscale

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def eight_bit(image: np.ndarray) -> np.ndarray:
    """Map an image linearly from its minimum and maximum onto 0..255."""
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    return np.round((image - low) / max(high - low, 1e-12) * 255).astype(np.uint8)


def write(path: Path, array: np.ndarray) -> None:
    """Write a TIFF, LZMA-compressed, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, compression="lzma")


def main(argv: list[str] | None = None) -> int:
    """Write the compact copy."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbbc039", type=Path, default=SHARED / "bbbc039")
    parser.add_argument("--dsb", type=Path, default=SHARED / "dsb2018_train")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for image_path in sorted((args.bbbc039 / "train" / "images").glob("*.tif")):
        labels_path = args.bbbc039 / "train" / "labels" / image_path.name
        write(args.out / "bbbc039" / "train" / "images" / image_path.name,
              eight_bit(tifffile.imread(image_path)))  # fmt: skip
        write(args.out / "bbbc039" / "train" / "labels" / image_path.name,
              tifffile.imread(labels_path))  # fmt: skip
    index = json.loads((args.dsb / "index.json").read_text(encoding="utf-8"))
    index = [entry for entry in index if entry["split"] == "train"]
    for entry in index:
        name = f"{entry['id']}.tif"
        image = tifffile.imread(args.dsb / "images" / name)
        if image.ndim == 3:
            image = np.clip(np.round(grayscale(image)), 0, 255).astype(np.uint8)
        write(args.out / "dsb2018_train" / "images" / name, image)
        write(
            args.out / "dsb2018_train" / "labels" / name,
            tifffile.imread(args.dsb / "labels" / name),
        )
    (args.out / "dsb2018_train" / "index.json").write_text(json.dumps(index), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
