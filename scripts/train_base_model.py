r"""Train the built-in nuclei model on BBBC039 and save it into the package.

The light U-Net (``UNetConfig()``) is trained on the 100 images of the ``train``
split with a fixed seed, validated on the ``val`` split, and written to
``src/napari_unet_lab/models/nuclei.{json,safetensors}`` with its training record
``nuclei.training.json``. Checkpoints go to a scratch folder so a killed run can
go on with ``--resume``.

Usage (from the repository root; one thread and low priority leave the machine free)::

    nohup .venv/bin/python scripts/train_base_model.py --threads 1 --steps 2400 \
        --batch-size 4 --learning-rate 1e-3 --seed 0 --max-minutes 110 > /tmp/train_base.log 2>&1 &

The shipped model took 62 minutes of training (1.5 s per step on one CPU thread, the
other core busy) and 1 minute of validation (pixel IoU, AP@0.5 and mean AP on the 50
val images). If it is killed, add ``--resume`` to the same command to go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet_lab.core.config import TargetConfig, UNetConfig
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.files import ModelInfo, save_model
from napari_unet_lab.core.model.unet import randomly_initialised
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    TrainingSettings,
    prepare_training,
    trained_model_info,
)

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data/bbbc039")
MODELS = REPO / "src" / "napari_unet_lab" / "models"
CLASS_NAMES = ["background", "nucleus"]
PROVENANCE = {
    "dataset": "BBBC039 version 1 (Broad Bioimage Benchmark Collection)",
    "content": "Hoechst-stained U2OS nuclei, widefield fluorescence, 520 x 696 px, 12-bit",
    "licence": "CC0 1.0",
    "citation": (
        "Caicedo et al., Evaluation of Deep Learning Strategies for Nucleus Segmentation "
        "in Fluorescence Images, Cytometry Part A 95:952-965, 2019; "
        "Ljosa et al., Nature Methods 9:637, 2012"
    ),
    "split": "train",
    "split_note": "a seeded random split of BBBC039, not the official one",
    "validation": "val split, 50 images",
}
DESCRIPTION = (
    "Nuclei in widefield fluorescence images (Hoechst/DAPI-like stains). Light U-Net "
    "trained on BBBC039 U2OS nuclei; predicts background and nucleus, with a thin "
    "background gap between touching nuclei."
)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="BBBC039 folder")
    parser.add_argument("--output", type=Path, default=MODELS, help="where the model goes")
    parser.add_argument("--name", default="nuclei", help="model file name")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/napari-unet-lab-base-model"))
    parser.add_argument("--resume", action="store_true", help="go on from the last checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop training after this much training time (summed over resumes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=252)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--w0", type=float, default=10.0, help="border weight height")
    parser.add_argument("--sigma", type=float, default=5.0, help="border weight width (px)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    parser.add_argument("--limit-images", type=int, default=None, help="for quick trials")
    return parser.parse_args(argv)


def read_split(folder: Path, limit: int | None = None) -> tuple[list[str], list, list]:
    """Return names, images and instance labels of one split."""
    names = sorted(path.stem for path in (folder / "images").glob("*.tif"))[:limit]
    images = [tifffile.imread(folder / "images" / f"{name}.tif") for name in names]
    labels = [tifffile.imread(folder / "labels" / f"{name}.tif") for name in names]
    return names, images, labels


def log(message: str) -> None:
    """Print a line with the time, at once."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Train, validate and save the built-in model."""
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    wall_started = time.perf_counter()
    args.scratch.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.scratch / "checkpoint.pt"

    names, images, labels = read_split(args.data / "train", args.limit_images)
    config = UNetConfig()
    device = torch.device(args.device)
    model = randomly_initialised(config, args.seed).to(device)
    settings = TrainingSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
    )
    targets = TargetConfig(w0=args.w0, sigma=args.sigma)
    items = [
        AnnotatedImage(image, label, "objects", name=name)
        for name, image, label in zip(names, images, labels, strict=True)
    ]
    started = time.perf_counter()
    # the one pipeline of napari and the command line: the same targets and class weights
    run = run_to_end(prepare_training(model, items, (), settings, args.seed, targets))
    preparation_seconds = time.perf_counter() - started
    log(
        f"{len(images)} training images, targets and weights in {preparation_seconds:.1f} s; "
        f"class weights {np.round(run.class_weights, 3).tolist()}"
    )
    step_seconds: list[float] = []  # cumulative training time after each step
    sessions = 1
    if args.resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=True)
        run.load_state_dict(state)
        step_seconds = list(state["step_seconds"])
        sessions = int(state["sessions"]) + 1
        log(f"resumed at step {run.step} from {checkpoint_path}")
    elif checkpoint_path.is_file():
        log(f"starting afresh; {checkpoint_path} will be replaced (use --resume to go on)")

    def save_checkpoint() -> None:
        state = run.state_dict()
        state.update(step_seconds=step_seconds, sessions=sessions)
        temporary = checkpoint_path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(checkpoint_path)

    log(
        f"training {settings.steps} steps of {settings.batch_size} patches "
        f"({run.patch_size} px in, {run.output_size} px out), {args.threads} thread(s)"
    )
    stopped_early = False
    progress_iterator = run.run()
    for progress in progress_iterator:
        step_seconds.append(progress.seconds)
        if progress.step % 10 == 0 or progress.step == 1:
            recent = np.mean(run.losses[-10:])
            log(
                f"step {progress.step}/{progress.total_steps} loss {recent:.4f} "
                f"lr {progress.learning_rate:.2e} {progress.seconds / 60:.1f} min"
            )
        if progress.step % args.checkpoint_every == 0:
            save_checkpoint()
        if args.max_minutes is not None and progress.seconds > 60 * args.max_minutes:
            if progress.step < progress.total_steps:
                stopped_early = True
                log(f"stopping at step {progress.step}: --max-minutes {args.max_minutes} reached")
            break
    progress_iterator.close()
    save_checkpoint()
    training_seconds = run.seconds

    log("validating on the val split")
    started = time.perf_counter()
    val_names, val_images, val_labels = read_split(args.data / "val", args.limit_images)
    intersection = union = 0
    per_image, ap50, mean_ap = {}, {}, {}
    scored = ModelInfo(config, CLASS_NAMES, normalization=dict(settings.normalization))
    for name, image, label in zip(val_names, val_images, val_labels, strict=True):
        scores = segmentation_scores(
            segment(model, scored, image, device=args.device).objects, label
        )
        per_image[name] = round(scores["pixel_iou"], 4)
        intersection += scores["pixel_intersection"]
        union += scores["pixel_union"]
        ap50[name] = round(scores["ap_50"], 4)
        mean_ap[name] = round(scores["mean_average_precision"], 4)
    val_iou = intersection / union
    validation_seconds = time.perf_counter() - started
    log(
        f"val pixel IoU {val_iou:.4f}, AP@0.5 {np.mean(list(ap50.values())):.4f}, mean AP "
        f"{np.mean(list(mean_ap.values())):.4f} (per-image means) in {validation_seconds:.0f} s"
    )

    wall_seconds = time.perf_counter() - wall_started
    step_times = np.diff([0.0, *step_seconds])
    info = trained_model_info(
        run,
        args.name,
        seed=args.seed,
        images=names,
        validation_images=val_names,
        targets=targets,
        class_names=CLASS_NAMES,
        description=DESCRIPTION,
        annotations=items,  # the object size, measured on the instance labels
        training={
            "stopped_by_time_limit": stopped_early,
            "loss": f"{settings.loss}; cross-entropy weighted by the border weight map (eq. 2 "
            "of Ronneberger et al. 2015)",
            "targets_meaning": "background/nucleus; 1 px background gap between touching nuclei",
            "optimizer": "Adam",
            "mean_step_seconds": round(float(np.mean(step_times)), 3),
            "last_session_wall_seconds": round(wall_seconds, 1),
            "sessions": sessions,
            "numpy_version": np.__version__,
            "threads": args.threads,
            "command": "python scripts/train_base_model.py " + " ".join(sys.argv[1:]),
            "record": f"{args.name}.training.json",
        },
        provenance=PROVENANCE,
        metrics={
            "val_pixel_iou": round(val_iou, 4),
            "val_pixel_iou_mean_per_image": round(float(np.mean(list(per_image.values()))), 4),
            "val_images": len(val_names),
            "val_ap50": round(float(np.mean(list(ap50.values()))), 4),
            "val_mean_ap": round(float(np.mean(list(mean_ap.values()))), 4),
            "definition": "pixel IoU: objects found against labels > 0, pooled over the val "
            "images; AP = TP / (TP + FP + FN) of the objects at IoU 0.5 (and averaged over "
            "0.5:0.95), mean over the val images",
        },
    )
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = save_model(args.output / args.name, model, info, overwrite=True)
    record = {
        "model": json_path.name,
        "training": info.training,
        "timings_seconds": {
            "targets_and_weights": round(preparation_seconds, 1),
            "training": round(training_seconds, 1),
            "validation": round(validation_seconds, 1),
            "last_session_wall": round(wall_seconds, 1),
        },
        "train_images": names,
        "loss_per_step": [float(f"{loss:.5g}") for loss in run.losses],
        "training_seconds_after_step": [round(s, 1) for s in step_seconds],
        "val_pixel_iou": round(val_iou, 4),
        "val_pixel_iou_per_image": per_image,
        "val_ap50_per_image": ap50,
        "val_mean_ap_per_image": mean_ap,
    }
    record_path = args.output / f"{args.name}.training.json"
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    log(f"saved {json_path}, {record_path}; wall time {wall_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
