r"""Train the built-in nuclei model on BBBC039 and DSB 2018 and save it into the package.

The light U-Net (``UNetConfig()``) is trained on the 100 images of the BBBC039
``train`` split and, with ``--datasets bbbc039 dsb2018``, the 494 images of the
``train`` split of DSB 2018 (fluorescence at many sizes, brightfield, stained
tissue), with a fixed seed. Every image is first resized so that its nuclei are
``--object-diameter`` pixels across (their median equivalent diameter), as the
prediction's automatic object diameter resizes a user's image; RGB images become
grayscale by luminance (`core.images.grayscale`), as a grayscale model sees them
in napari. Zoom and inverted-contrast augmentation cover what the resizing and
the conversion leave. ``--start-from`` goes on from an earlier model file. It is
validated on the ``val`` splits, and written to
``src/napari_unet_lab/models/nuclei.{json,safetensors}`` with its training record
``nuclei.training.json``. Checkpoints go to a scratch folder so a killed run can
go on with ``--resume``.

Usage (from the repository root; one thread and low priority leave the machine free)::

    nohup .venv/bin/python scripts/train_base_model.py --threads 1 --steps 2400 \
        --batch-size 4 --learning-rate 1e-3 --seed 0 --max-minutes 110 > /tmp/train_base.log 2>&1 &

The broader model ``nuclei_broad`` (``nuclei_broad.training.json`` records its exact
command; it was written as ``nuclei`` to a scratch folder and renamed) goes on from the
BBBC039 model::

    nohup .venv/bin/python scripts/train_base_model.py --datasets bbbc039 dsb2018 \
        --start-from src/napari_unet_lab/models/nuclei.json --object-diameter 28.2 \
        --zoom 0.25 --invert-contrast 0.3 --threads 1 --minutes 95 --name nuclei_broad \
        --scratch /work/train-scratch/broad > /tmp/train_broad.log 2>&1 &

The three-channel ``nuclei_tissue`` (``--colour``) widens ``nuclei_broad`` to take R, G and B
(it starts as ``nuclei_broad`` on the luminance) and goes on from it on the RGB images of
DSB 2018 alone, scored on the RGB images of the val split::

    nohup .venv/bin/python scripts/train_base_model.py --colour --datasets dsb2018 \
        --start-from src/napari_unet_lab/models/nuclei_broad.json --object-diameter 28.2 \
        --zoom 0.25 --low-resolution 0.3 --learning-rate 3e-4 --minutes 50 --threads 2 \
        --name nuclei_tissue --scratch /work/train-scratch/tissue > /tmp/train_tissue.log 2>&1 &

The BBBC039-only model took 62 minutes of training (1.5 s per step on one CPU thread, the
other core busy) and 1 minute of validation (pixel IoU, AP@0.5 and mean AP on the 50
val images). If it is killed, add ``--resume`` to the same command to go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from base_model_data import (
    DATA,
    DSB_DATA,
    DSB_PROVENANCE,
    PROVENANCE,
    at_object_diameter,
    read_dsb_split,
    read_split,
)

from napari_unet_lab.core.config import AugmentationConfig, TargetConfig, UNetConfig
from napari_unet_lab.core.images import LUMINANCE_WEIGHTS
from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import UNet, randomly_initialised
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    TrainingSettings,
    prepare_training,
    trained_model_info,
)

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "src" / "napari_unet_lab" / "models"
CLASS_NAMES = ["background", "nucleus"]
BROAD_DESCRIPTION = (
    "Nuclei in fluorescence, brightfield and stained-tissue images. Light U-Net trained on "
    "BBBC039 and the DSB 2018 training set, every image resized so nuclei are about "
    "{diameter:.0f} px across; predicts background and nucleus, with a thin background gap "
    "between touching nuclei. Use an automatic object diameter for other sizes; RGB images "
    "are converted to grayscale."
)
TISSUE_DESCRIPTION = (
    "Nuclei in stained tissue (RGB, e.g. H&E). Light U-Net taking the three colours, widened "
    "from nuclei_broad and trained on the RGB images of the DSB 2018 training set, each resized "
    "so nuclei are about 28 px across; predicts background and nucleus."
)
DESCRIPTION = (
    "Nuclei in widefield fluorescence images (Hoechst/DAPI-like stains). Light U-Net "
    "trained on BBBC039 U2OS nuclei; predicts background and nucleus, with a thin "
    "background gap between touching nuclei."
)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="BBBC039 folder")
    parser.add_argument("--dsb-data", type=Path, default=DSB_DATA, help="DSB 2018 folder")
    parser.add_argument(
        "--datasets", nargs="+", choices=("bbbc039", "dsb2018"), default=["bbbc039"]
    )
    parser.add_argument(
        "--object-diameter",
        type=float,
        default=None,
        help="resize every training image so its nuclei are this many pixels across",
    )
    parser.add_argument("--zoom", type=float, default=0.0, help="zoom augmentation range")
    parser.add_argument("--invert-contrast", type=float, default=0, help="share inverted")
    parser.add_argument("--low-resolution", type=float, default=0, help="share made coarser")
    parser.add_argument(
        "--shown-larger",
        type=float,
        default=None,
        help="record that the model outlines best seeing objects this much larger than "
        "trained (measured by benchmarks/bench_scale_choice.py on the val splits)",
    )
    parser.add_argument("--start-from", type=Path, default=None, help="a model file to go on from")
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
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="train for this much time instead of --steps (the learning rate follows it)",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=252)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--w0", type=float, default=10.0, help="border weight height")
    parser.add_argument("--sigma", type=float, default=5.0, help="border weight width (px)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    parser.add_argument("--limit-images", type=int, default=None, help="for quick trials")
    parser.add_argument(
        "--bbbc039-copies",
        type=int,
        default=1,
        help="draw BBBC039 patches this many times as often",
    )
    parser.add_argument(
        "--dark-copies",
        type=int,
        default=1,
        help="draw DSB 2018 images whose nuclei are darker than their background (stained "
        "tissue, brightfield) this many times as often",
    )
    parser.add_argument(
        "--colour",
        action="store_true",
        help="train a three-channel model on the DSB 2018 RGB images (stained tissue) alone; "
        "a grayscale --start-from model is widened to take each colour by its luminance weight",
    )
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="score the model of --start-from on the val splits and save it with its scores",
    )
    parser.add_argument(
        "--skip-validation",
        action="store_true",
        help="save without scoring the val splits (scored later, e.g. where the data is)",
    )
    return parser.parse_args(argv)


def score_split(
    model: torch.nn.Module,
    info: ModelInfo,
    names: list[str],
    images: list[np.ndarray],
    labels: list[np.ndarray],
    device: str,
    object_diameter: str | None,
) -> dict:
    """Segment every image and score it: pooled pixel IoU, mean AP@0.5 and mean AP."""
    intersection = union = 0
    per_image_iou, per_image_ap50, per_image_mean_ap = {}, {}, {}
    for name, image, label in zip(names, images, labels, strict=True):
        found = segment(model, info, image, device=device, object_diameter=object_diameter)
        scores = segmentation_scores(found.objects, label)
        per_image_iou[name] = round(scores["pixel_iou"], 4)
        intersection += scores["pixel_intersection"]
        union += scores["pixel_union"]
        per_image_ap50[name] = round(scores["ap_50"], 4)
        per_image_mean_ap[name] = round(scores["mean_average_precision"], 4)
    return {
        "pixel_iou": intersection / max(union, 1),
        "ap50": float(np.mean(list(per_image_ap50.values()))),
        "mean_ap": float(np.mean(list(per_image_mean_ap.values()))),
        "per_image_iou": per_image_iou,
        "per_image_ap50": per_image_ap50,
        "per_image_mean_ap": per_image_mean_ap,
    }


def validated(
    model: torch.nn.Module, info: ModelInfo, args: argparse.Namespace, broad: bool
) -> tuple[dict, float]:
    """Score the val splits and record the scores in `info.metrics`.

    Scored as a user gets it: with the automatic object diameter where the model records
    one. Returns the scores by split (per image too) and the seconds they took.
    """
    diameter = "auto" if info.object_diameter else None
    started = time.perf_counter()
    splits = {}
    if args.colour and not args.skip_validation:
        log(f"validating on the RGB images of the DSB 2018 val split (object diameter {diameter})")
        dsb = read_dsb_split(args.dsb_data, "val", args.limit_images, colour=True)
        splits["dsb2018_val_rgb"] = score_split(model, info, *dsb, args.device, diameter)
    elif not args.skip_validation:
        log(f"validating on the BBBC039 val split (object diameter {diameter})")
        val = read_split(args.data / "val", args.limit_images)
        splits["bbbc039_val"] = score_split(model, info, *val, args.device, diameter)
        info.provenance["validation_images"] = val[0]
    if broad and not (args.colour or args.skip_validation):
        log("validating on the DSB 2018 val split")
        dsb = read_dsb_split(args.dsb_data, "val", args.limit_images)
        splits["dsb2018_val"] = score_split(model, info, *dsb, args.device, diameter)
    for split, scored in splits.items():
        log(
            f"{split}: pixel IoU {scored['pixel_iou']:.4f}, AP@0.5 {scored['ap50']:.4f}, "
            f"mean AP {scored['mean_ap']:.4f} (per-image means)"
        )
    bbbc = splits.get("bbbc039_val")
    if bbbc is not None:
        info.metrics.update(
            {
                "val_pixel_iou": round(bbbc["pixel_iou"], 4),
                "val_pixel_iou_mean_per_image": round(
                    float(np.mean(list(bbbc["per_image_iou"].values()))), 4
                ),
                "val_images": len(bbbc["per_image_iou"]),
                "val_ap50": round(bbbc["ap50"], 4),
                "val_mean_ap": round(bbbc["mean_ap"], 4),
            }
        )
    info.metrics.update(
        {
            "object_diameter_when_scored": diameter,
            **{
                f"{split}_{key}": round(scored[key], 4)
                for split, scored in splits.items()
                if split != "bbbc039_val"
                for key in ("pixel_iou", "ap50", "mean_ap")
            },
            "definition": "pixel IoU: objects found against labels > 0, pooled over the val "
            "images; AP = TP / (TP + FP + FN) of the objects at IoU 0.5 (and averaged over "
            "0.5:0.95), mean over the val images",
        }
    )
    return splits, time.perf_counter() - started


def per_image(splits: dict) -> dict:
    """Return the per-image scores of every split, as the training record keeps them."""
    return {
        f"{split}_{what}_per_image": scored[f"per_image_{what}"]
        for split, scored in splits.items()
        for what in ("iou", "ap50", "mean_ap")
    }


def validate_only(args: argparse.Namespace) -> int:
    """Score the model of ``--start-from`` on the val splits; save it with the scores.

    For a model trained where the val data was not (``--skip-validation``, e.g. on a lent
    GPU): its metrics and its training record (beside it, if there) get the scores.
    """
    model, info = load_model(args.start_from)
    broad = "dsb2018" in info.training.get("datasets", args.datasets)
    shown_larger(info, args)
    splits, seconds = validated(model, info, args, broad)
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = save_model(args.output / args.name, model, info, overwrite=True)
    record_path = args.start_from.with_name(f"{args.start_from.stem}.training.json")
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    record["model"] = json_path.name
    record.setdefault("timings_seconds", {})["validation"] = round(seconds, 1)
    record["validated_by"] = "python scripts/train_base_model.py " + " ".join(sys.argv[1:])
    record.update(per_image(splits))
    out = args.output / f"{args.name}.training.json"
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    log(f"saved {json_path}, {out}")
    return 0


def shown_larger(info: ModelInfo, args: argparse.Namespace) -> None:
    """Record ``--shown-larger`` in the model, with where it was measured."""
    if args.shown_larger is not None:
        info.shown_larger = args.shown_larger
        section = (
            "A three-channel model for stained tissue"
            if args.colour
            else "Objects a little larger than trained"
        )
        info.metrics["shown_larger_measured"] = (
            "benchmarks/bench_scale_choice.py on the val splits "
            f"(benchmarks/README.md, '{section}')"
        )


def widened_to_colour(model: UNet) -> UNet:
    """Return a three-channel copy of a grayscale U-Net that computes what it did.

    The first layer takes each colour with the grayscale weights times that colour's
    luminance weight, so an RGB image gives what its luminance gave (up to the
    intensity normalisation, which now spans all three colours).
    """
    colour = randomly_initialised(replace(model.config, in_channels=3))
    state = model.state_dict()
    first = "encoders.0.0.weight"
    weights = torch.as_tensor(LUMINANCE_WEIGHTS, dtype=state[first].dtype)
    state[first] = state[first] * weights.view(1, 3, 1, 1)
    colour.load_state_dict(state)
    return colour


def log(message: str) -> None:
    """Print a line with the time, at once."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Train, validate and save the built-in model."""
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    if args.validate_only:
        return validate_only(args)
    wall_started = time.perf_counter()
    args.scratch.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.scratch / "checkpoint.pt"

    names, images, labels = [], [], []
    if args.colour:
        args.datasets = ["dsb2018"]
        names, images, labels = read_dsb_split(args.dsb_data, "train", args.limit_images, 1, True)
    elif "bbbc039" in args.datasets:
        names, images, labels = read_split(args.data / "train", args.limit_images)
        # patches are drawn from the images evenly: copies weigh BBBC039 against DSB 2018
        copies = range(args.bbbc039_copies)
        names = [f"{n} (copy {c + 1})" if c else n for c in copies for n in names]
        images, labels = images * args.bbbc039_copies, labels * args.bbbc039_copies
    if "dsb2018" in args.datasets and not args.colour:
        more = read_dsb_split(args.dsb_data, "train", args.limit_images, args.dark_copies)
        names, images, labels = names + more[0], images + more[1], labels + more[2]
    factors = {}
    if args.object_diameter is not None:
        for i, name in enumerate(names):
            images[i], labels[i], factors[name] = at_object_diameter(
                images[i], labels[i], args.object_diameter
            )
        log(
            f"resized {sum(f != 1.0 for f in factors.values())} of {len(names)} images to "
            f"nuclei of {args.object_diameter} px ({sum(i.size for i in images) / 1e6:.0f} Mpx)"
        )
    config = UNetConfig(in_channels=3 if args.colour else 1)
    device = torch.device(args.device)
    base = None
    if args.start_from is not None:
        model, base = load_model(args.start_from)
        if args.colour and model.config.in_channels == 1:
            model = widened_to_colour(model)
        if model.config != config:
            raise SystemExit(f"{args.start_from} is not a light U-Net ({model.config})")
        model = model.to(device)
    else:
        model = randomly_initialised(config, args.seed).to(device)
    settings = TrainingSettings(
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
        augmentation=AugmentationConfig(
            zoom=args.zoom, invert=args.invert_contrast, low_resolution=args.low_resolution
        ),
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

    wall_seconds = time.perf_counter() - wall_started
    step_times = np.diff([0.0, *step_seconds])
    broad = "dsb2018" in args.datasets
    started_from = None if base is None else f"{args.start_from.name} ({base.name})"
    info = trained_model_info(
        run,
        args.name,
        seed=args.seed,
        images=names,
        targets=targets,
        class_names=CLASS_NAMES,
        base=base,
        started_from=started_from,
        description=(
            TISSUE_DESCRIPTION
            if args.colour
            else BROAD_DESCRIPTION.format(diameter=args.object_diameter or 28)
            if broad
            else DESCRIPTION
        ),
        annotations=items,  # the object size, measured on the instance labels
        training={
            "stopped_by_time_limit": stopped_early,
            "loss": f"{settings.loss}; cross-entropy weighted by the border weight map (eq. 2 "
            "of Ronneberger et al. 2015)",
            "targets_meaning": "background/nucleus; 1 px background gap between touching nuclei",
            "optimizer": "Adam",
            "datasets": list(args.datasets),
            "resized_to_object_diameter": args.object_diameter,
            "rgb_conversion": "none: three channels, R, G, B"
            if args.colour
            else "luminance (core.images.grayscale)",
            "mean_step_seconds": round(float(np.mean(step_times)), 3),
            "last_session_wall_seconds": round(wall_seconds, 1),
            "sessions": sessions,
            "numpy_version": np.__version__,
            "threads": args.threads,
            "command": "python scripts/train_base_model.py " + " ".join(sys.argv[1:]),
            "record": f"{args.name}.training.json",
        },
        provenance=(
            {**DSB_PROVENANCE, "content": "the RGB images (stained tissue), as R, G, B"}
            if args.colour
            else {**PROVENANCE, **({"more_data": DSB_PROVENANCE} if broad else {})}
        ),
    )

    shown_larger(info, args)
    splits, validation_seconds = validated(model, info, args, broad)
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
        "resize_factors": {name: round(f, 4) for name, f in factors.items()},
        **per_image(splits),
    }
    record_path = args.output / f"{args.name}.training.json"
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    log(f"saved {json_path}, {record_path}; wall time {wall_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
