"""Time to quality: scores on held-out images against wall-clock time, old and new defaults.

Scenario (a), from scratch: a new U-Net trained on 3 annotated BBBC039 train images (the
first three, as `bench_training_quality` chooses them), scored on the val split with that
benchmark's scoring (`bench_training_quality.evaluate`: AP@0.5, mean AP over IoU 0.5:0.95,
pooled pixel IoU, after the objects step of prediction) when 30 s, 1, 2, 3, 5 and 10 min of
wall time have passed since the user pressed Start (preparation included). Scoring stops the
clock. Two arms run side by side in one command, on the same machine, for several seeds:

- ``today``: the Train widget's defaults before time budgets, 400 steps of 4 patches of
  252 px with a cosine over the steps (cut at the last checkpoint, as a user would stop it),
  a new network of 32 base channels at a learning rate of 1e-3;
- ``new``: the defaults now, a time budget (``--budget-minutes``, default the last
  checkpoint) with the cosine over the share of it spent, a new network of
  `UNetConfig.new_network` (16 base channels) at `NEW_NETWORK_RATE` (3e-3).

``--today KEY=VALUE`` and ``--new KEY=VALUE`` change either arm's `TrainingSettings` (values
as JSON: ``--new patch_size=124 batch_size=8``), so each lever can be measured the same way.
The machine's load average is recorded before and after every run, and the time-left
estimate at the first tenth of each run against the time that was really left.

``--scenario b``: the built-in model (read at run time, its sha256 recorded) fine-tuned on
the first 3 DSB 2018 train images of one ``--kind`` (`time_to_quality_scenarios.DSB_KINDS`),
scored on the val images of that kind with the object diameter "auto" and as trained; the
built-in model's scores before fine-tuning are the baseline. ``--scenario c``: scribbles
drawn from the ground truth of one BBBC039 train image by a seeded rule
(`time_to_quality_scenarios.scribbles_from_labels`), from a new network (``--start``),
scored on BBBC039 val. Both run the ``new`` arm only unless ``--arms`` says otherwise.
Every score also records the 1-minute load average at that moment.

Run (the full curve takes about 2 arms x 3 seeds x 10 min, plus scoring)::

    .venv/bin/python -m benchmarks.bench_time_to_quality
    .venv/bin/python -m benchmarks.bench_time_to_quality --quick --out /tmp/ttq.json  # smoke
    .venv/bin/python -m benchmarks.bench_time_to_quality --scenario b --kind tissue
    .venv/bin/python -m benchmarks.bench_time_to_quality --scenario c
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

from benchmarks.machine import ROOT, describe_machine, write_report
from benchmarks.time_to_quality_scenarios import (
    DSB_KINDS,
    Scenario,
    scenario_a,
    scenario_b,
    scenario_c,
)
from napari_unet_lab.core.config import TargetConfig, UNetConfig
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import TrainingSettings, prepare_training
from napari_unet_lab.core.train.settings import NEW_NETWORK_RATE

CHECKPOINT_MINUTES = (0.5, 1, 2, 3, 5, 10)
# the Train widget's defaults before time budgets (gui/train/options.py at 872ea61)
TODAY = {"steps": 400, "batch_size": 4, "patch_size": 252, "learning_rate": 1e-3}
# a new network of each arm (fine-tuning scenarios start from their model instead)
NETWORKS = {"today": UNetConfig(), "new": UNetConfig.new_network()}
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
    network: UNetConfig,
    seed: int,
    checkpoints: list[float],
    scenario: Scenario,
    device: torch.device,
    entries: list,
    save,
) -> None:
    """Train one arm of a scenario, scoring at the checkpoints (seconds), into `entries`."""
    entry: dict[str, Any] = {"seed": seed, "settings": settings.to_dict(), "points": []}
    entries.append(entry)
    entry["load_average_before"] = list(os.getloadavg())
    model, info = scenario.start(seed, device, network)
    entry["network"] = model.config.to_dict()
    started = time.perf_counter()  # the user presses Start
    preparing = prepare_training(model, scenario.items, (), settings, seed, TargetConfig())
    run = run_to_end(preparing)
    preparation = time.perf_counter() - started
    entry["preparation_seconds"] = round(preparation, 2)
    waiting = list(checkpoints)
    tenth, finished = None, True

    def score(at: float, wall: float, step: int) -> None:
        scoring = time.perf_counter()
        load = os.getloadavg()[0]  # before scoring adds to it
        scores = scenario.score(run, info)
        entry["points"].append(
            {"checkpoint_seconds": at, "wall_seconds": round(wall, 2), "step": step, **scores,
             "scoring_seconds": round(time.perf_counter() - scoring, 1), "load_average": load}
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
        last = entry["points"][-1] if entry["points"] else None
        if last is not None and last["step"] == run.step:  # the same network: same scores
            entry["points"].append({**last, "checkpoint_seconds": at, "scoring_seconds": 0.0})
        else:
            score(at, preparation + run.timing.spent, run.step)
        entry["points"][-1]["after_the_end"] = True
    entry["load_average_after"] = list(os.getloadavg())
    save()


def ap50_by_checkpoint(
    arms: dict[str, list], checkpoints: list[float], baseline: dict | None = None
) -> dict[str, Any]:
    """AP@0.5 per arm and checkpoint, one value per seed; scenario b: per object diameter.

    With a `baseline` (scenario b: the built-in model before fine-tuning), also the
    gain over it per seed, in the same object-diameter setting.
    """
    summary: dict[str, Any] = {}
    for name, entries in arms.items():
        for at in checkpoints:
            points = [p for e in entries for p in e["points"] if p["checkpoint_seconds"] == at]
            key = f"{at / 60:g} min"
            if baseline is None:
                summary.setdefault(name, {})[key] = [p["ap50"] for p in points]
                continue
            for setting, before in baseline.items():
                values = [p[setting]["ap50"] for p in points]
                arm = summary.setdefault(f"{name}, {setting}", {})
                arm[key] = values
                gains = summary.setdefault(f"{name}, {setting}, gain over the built-in model", {})
                gains[key] = [round(v - before["ap50"], 4) for v in values]
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run both arms for every seed and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--checkpoints", type=float, nargs="+", default=list(CHECKPOINT_MINUTES),
        help="minutes of wall time at which to score (default: 0.5 1 2 3 5 10)",
    )  # fmt: skip
    parser.add_argument("--budget-minutes", type=float, help="new arm (default: last checkpoint)")
    parser.add_argument(
        "--val-images", type=int, default=None, help="default: all (BBBC039: 50; b: the kind's)"
    )
    parser.add_argument("--today", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--new", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--arms", nargs="+", choices=["today", "new"], help="default: both for a, new for b and c"
    )
    parser.add_argument("--scenario", choices=["a", "b", "c"], default="a")
    parser.add_argument("--kind", choices=list(DSB_KINDS), default="large", help="scenario b")
    parser.add_argument(
        "--start", choices=["new", "builtin"], default="new", help="scenario c: where from"
    )
    parser.add_argument("--scribble-seed", type=int, default=0, help="scenario c: the strokes")
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
    name = {"a": "", "b": f"-b-{args.kind}", "c": f"-c-{args.start}"}[args.scenario]
    default_out = ROOT / "benchmarks" / "results" / f"time_to_quality{name}-{device.type}.json"
    out = args.out or (None if args.quick else default_out)
    checkpoints = sorted(60.0 * minutes for minutes in args.checkpoints)
    budget = args.budget_minutes or checkpoints[-1] / 60
    quick = QUICK if args.quick else {}
    if args.scenario == "a":
        scenario = scenario_a(args.val_images)
    elif args.scenario == "b":
        scenario = scenario_b(args.kind, args.val_images)
    else:
        scenario = scenario_c(args.val_images, args.start, rng=args.scribble_seed)
    args.arms = args.arms or (["today", "new"] if args.scenario == "a" else ["new"])
    start = scenario.settings  # a fine-tuning start's rate and intensity mapping
    today, new = settings_overrides(args.today), settings_overrides(args.new)
    arms = {
        "today": TrainingSettings(**{**TODAY, **start, **quick, **today}),
        "new": TrainingSettings(
            **{"minutes": budget, "learning_rate": NEW_NETWORK_RATE, **start, **quick, **new}
        ),
    }
    record: dict[str, Any] = {
        "machine": describe_machine(device),
        "scenario": scenario.description,
        **scenario.record,
        "checkpoint_seconds": checkpoints,
        "command": "python -m benchmarks.bench_time_to_quality " + " ".join(argv or sys.argv[1:]),
        "arms": {name: [] for name in args.arms},
    }

    def save() -> None:
        write_report(record, out)

    for seed in args.seeds:  # arms alternate, so both see the same machine load
        for name in args.arms:
            print(f"--- {name}, seed {seed}", flush=True)
            run_arm(
                arms[name], NETWORKS[name], seed, checkpoints, scenario, device,
                record["arms"][name], save,
            )  # fmt: skip
    summary = ap50_by_checkpoint(record["arms"], checkpoints, record.get("baseline"))
    record["ap50_by_checkpoint"] = summary
    save()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
