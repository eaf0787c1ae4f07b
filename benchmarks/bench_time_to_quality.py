"""Time to quality: scores on held-out images against wall-clock time, old and new defaults.

Scenario (a), from scratch: a new U-Net trained on 3 annotated BBBC039 train images (the
first three, as `bench_training_quality` chooses them), scored on the val split with that
benchmark's scoring (`bench_training_quality.evaluate`: AP@0.5, mean AP over IoU 0.5:0.95,
pooled pixel IoU, after the objects step of prediction) when 30 s, 1, 2, 3, 5 and 10 min of
wall time have passed since the user pressed Start (preparation included). Scoring stops the
clock. Two arms run side by side in one command, on the same machine, for several seeds:

- ``today``: the Train widget's defaults before time budgets, 400 steps of 4 patches of
  252 px with a cosine over the steps (cut at the last checkpoint, as a user would stop it);
- ``new``: the defaults now, a time budget (``--budget-minutes``, default the last
  checkpoint) with the cosine over the share of it spent.

``--today KEY=VALUE`` and ``--new KEY=VALUE`` change either arm's `TrainingSettings` (values
as JSON: ``--new patch_size=124 batch_size=8``), so each lever can be measured the same way.
The machine's load average is recorded before and after every run, and the time-left
estimate at the first tenth of each run against the time that was really left.

Run (the full curve takes about 2 arms x 3 seeds x 10 min, plus scoring)::

    .venv/bin/python -m benchmarks.bench_time_to_quality
    .venv/bin/python -m benchmarks.bench_time_to_quality --quick --out /tmp/ttq.json  # smoke

TODO: scenario (b), fine-tuning the built-in model on 3 images of a kind it segments badly
from ``../shared/data/dsb2018_train`` (train split; scored on the val images of the same
kind, the untouched model as the baseline), and scenario (c), sparse scribbles drawn from
ground truth by a fixed seeded rule (skeleton segments of some objects and of the
background) on one image. Both fit `run_arm` with another starting model and other items.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_training_quality import DATA, evaluate, read_split, starting_model
from benchmarks.machine import ROOT, describe_machine, write_report
from napari_unet_lab.core.config import TargetConfig
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import AnnotatedImage, TrainingSettings, prepare_training

CHECKPOINT_MINUTES = (0.5, 1, 2, 3, 5, 10)
TRAINING_IMAGES = 3
# the Train widget's defaults before time budgets (gui/train/options.py at 872ea61)
TODAY = {"steps": 400, "batch_size": 4, "patch_size": 252, "learning_rate": 1e-3}
# --quick: a smoke run of seconds, not a measurement
QUICK = {"batch_size": 1, "patch_size": 92}


def settings_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items (values as JSON, else text) into settings overrides."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run_arm(
    settings: TrainingSettings,
    seed: int,
    checkpoints: list[float],
    train_split: list,
    validation: list,
    device: torch.device,
    entries: list,
    save,
) -> None:
    """Train one arm from scratch, scoring at the checkpoints (seconds), into `entries`."""
    entry: dict[str, Any] = {"seed": seed, "settings": settings.to_dict(), "points": []}
    entries.append(entry)
    entry["load_average_before"] = list(os.getloadavg())
    model, info = starting_model("scratch", seed, device)
    items = [AnnotatedImage(image, labels, "objects", name=n) for n, image, labels in train_split]
    started = time.perf_counter()  # the user presses Start
    run = run_to_end(prepare_training(model, items, (), settings, seed, TargetConfig()))
    preparation = time.perf_counter() - started
    entry["preparation_seconds"] = round(preparation, 2)
    waiting = list(checkpoints)
    tenth, finished = None, True

    def score(at: float, wall: float, step: int) -> None:
        scoring = time.perf_counter()
        scores = evaluate(run.model, info, validation)
        entry["points"].append(
            {"checkpoint_seconds": at, "wall_seconds": round(wall, 2), "step": step, **scores,
             "scoring_seconds": round(time.perf_counter() - scoring, 1)}
        )  # fmt: skip
        print(f"seed {seed} {entry['points'][-1]}", flush=True)
        save()

    steps = run.run()
    for progress in steps:  # the run's clock stands still while we score between steps
        wall = preparation + run.timing.spent
        if tenth is None and progress.fraction >= 0.1:
            tenth = {"step": progress.step, "spent_seconds": round(run.timing.spent, 2),
                     "estimated_left": round(progress.eta_seconds, 2)}  # fmt: skip
        while waiting and wall >= waiting[0]:
            score(waiting.pop(0), wall, progress.step)
        if not waiting:
            steps.close()  # past the last checkpoint: stopped, as a user would
            finished = progress.fraction >= 1 or progress.stopped_early  # or its last step
            break
    entry["finished"] = finished  # ended on its own: budget spent, steps done, or no gain
    if tenth is not None and finished:
        tenth["really_left"] = round(run.timing.spent - tenth["spent_seconds"], 2)
    entry["time_left_at_a_tenth"] = tenth
    entry["steps"], entry["training_seconds"] = run.step, round(run.timing.spent, 2)
    for at in waiting:  # the run ended before: later checkpoints have its final network
        score(at, preparation + run.timing.spent, run.step)
        entry["points"][-1]["after_the_end"] = True
    entry["load_average_after"] = list(os.getloadavg())
    save()


def main(argv: list[str] | None = None) -> int:
    """Run both arms for every seed and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--checkpoints", type=float, nargs="+", default=list(CHECKPOINT_MINUTES),
        help="minutes of wall time at which to score (default: 0.5 1 2 3 5 10)",
    )  # fmt: skip
    parser.add_argument("--budget-minutes", type=float, help="new arm (default: last checkpoint)")
    parser.add_argument("--val-images", type=int, default=None, help="default: all 50")
    parser.add_argument("--today", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--new", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--arms", nargs="+", default=["today", "new"], choices=["today", "new"])
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:  # tiny: one seed, one val image, 3 and 6 s, small patches
        args.seeds, args.checkpoints = args.seeds[:1], [0.05, 0.1]
        args.val_images = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    default_out = ROOT / "benchmarks" / "results" / f"time_to_quality-{device.type}.json"
    out = args.out or (None if args.quick else default_out)
    checkpoints = sorted(60.0 * minutes for minutes in args.checkpoints)
    budget = args.budget_minutes or checkpoints[-1] / 60
    quick = QUICK if args.quick else {}
    arms = {
        "today": TrainingSettings(**{**TODAY, **quick, **settings_overrides(args.today)}),
        "new": TrainingSettings(**{"minutes": budget, **quick, **settings_overrides(args.new)}),
    }
    train_split = read_split(DATA / "train", TRAINING_IMAGES)
    validation = read_split(DATA / "val", args.val_images)
    record: dict[str, Any] = {
        "machine": describe_machine(device),
        "scenario": "a: from scratch on 3 BBBC039 train images, scored on the val split",
        "training_images": [name for name, _, _ in train_split],
        "validation_images": len(validation),
        "checkpoint_seconds": checkpoints,
        "command": "python -m benchmarks.bench_time_to_quality " + " ".join(argv or sys.argv[1:]),
        "arms": {name: [] for name in args.arms},
    }

    def save() -> None:
        write_report(record, out)

    for seed in args.seeds:  # arms alternate, so both see the same machine load
        for name in args.arms:
            print(f"--- {name}, seed {seed}", flush=True)
            run_arm(arms[name], seed, checkpoints, train_split, validation, device,
                    record["arms"][name], save)  # fmt: skip
    summary = {
        name: {
            f"{at / 60:g} min": [point["ap50"] for e in entries for point in e["points"]
                                 if point["checkpoint_seconds"] == at]
            for at in checkpoints
        }
        for name, entries in record["arms"].items()
    }  # fmt: skip
    record["ap50_by_checkpoint"] = summary
    save()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
