"""Levers of time-to-quality scenario (a), compared at an equal CPU time budget.

Each lever (a change of the training settings, the learning-rate schedule or the network)
trains from scratch on the 3 BBBC039 train images of scenario (a) for as many steps as
this project's 2-core CPU makes with that lever in the time it makes ``--base-steps`` of
the defaults (441: 3 minutes of `bench_time_to_quality`'s new arm), and is scored on
BBBC039 val with the benchmark's scoring (`bench_training_quality.evaluate`). Counting
steps, not seconds, lets the sweep run on a faster device (a lent GPU), several levers at
once, and still say what each lever reaches on the laptop; `bench_time_to_quality` then
checks the winner against the clock on the CPU itself.

Two commands::

    # 1. on the CPU: seconds per step of every lever (2 threads, the machine idle)
    .venv/bin/python -m benchmarks.sweep_levers --measure-cpu \
        --out benchmarks/results/sweep_levers-step-seconds-cpu.json
    # 2. anywhere: train and score every lever for several seeds, in parallel
    .venv/bin/python -m benchmarks.sweep_levers --step-seconds \
        benchmarks/results/sweep_levers-step-seconds-cpu.json --device cuda --workers 8 \
        --seeds 0 1 --val-images 20 --out benchmarks/results/sweep_levers-cuda.json

On a GPU the levers run in float32 (``mixed_precision=False``), as on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import describe_machine, write_report

# name -> settings overrides; "warmup" (share of the steps) and "network" (UNetConfig
# overrides) are not TrainingSettings and are applied here
LEVERS: dict[str, dict[str, Any]] = {
    "base": {},
    "lr 2e-3": {"learning_rate": 2e-3},
    "lr 3e-3": {"learning_rate": 3e-3},
    "lr 5e-3": {"learning_rate": 5e-3},
    "warm-up 5%, lr 3e-3": {"learning_rate": 3e-3, "warmup": 0.05},
    "warm-up 5%, lr 5e-3": {"learning_rate": 5e-3, "warmup": 0.05},
    "constant lr": {"cosine_decay": False},
    "object patches 100%": {"object_patch_share": 1.0},
    "object patches 50%": {"object_patch_share": 0.5},
    "batch 2": {"batch_size": 2},
    "batch 8": {"batch_size": 8},
    "batch 8, lr 2e-3": {"batch_size": 8, "learning_rate": 2e-3},
    "patch 188, batch 8": {"patch_size": 188, "batch_size": 8},
    "patch 348, batch 2": {"patch_size": 348, "batch_size": 2},
    "no elastic": {"augmentation": {"elastic": False}},
    "cross-entropy only": {"loss": "cross_entropy"},
    "16 base channels": {"network": {"base_channels": 16}},
    "16 base channels, lr 3e-3": {"network": {"base_channels": 16}, "learning_rate": 3e-3},
    "24 base channels": {"network": {"base_channels": 24}},
    "base, 2x the time": {"time": 2.0},
    "base, 4x the time": {"time": 4.0},
}
PLAIN = ("warmup", "network", "time")  # lever keys that are not TrainingSettings
COSTLY = ("batch_size", "patch_size", "network", "augmentation")  # keys that change a step's cost


def same_cost(name: str, measured: dict[str, float]) -> str:
    """Return the measured lever whose step costs what lever `name`'s costs."""
    cost = {key: LEVERS[name][key] for key in COSTLY if key in LEVERS[name]}
    for other in measured:
        if cost == {key: LEVERS[other][key] for key in COSTLY if key in LEVERS[other]}:
            return other
    raise KeyError(f"no step time measured for a step like {name!r}'s")


def lever_settings(lever: dict[str, Any], steps: int):
    """Return the TrainingSettings of a lever for `steps` steps."""
    from napari_unet_lab.core.config import AugmentationConfig
    from napari_unet_lab.core.train import TrainingSettings

    overrides = {k: v for k, v in lever.items() if k not in PLAIN}
    if "augmentation" in overrides:
        overrides["augmentation"] = AugmentationConfig(**overrides["augmentation"])
    return TrainingSettings(steps=steps, mixed_precision=False, **overrides)


def prepared_run(name: str, steps: int, seed: int, device: str, items):
    """Return a prepared training run of lever `name` (a fresh network) and its model info."""
    from benchmarks.bench_training_quality import starting_model
    from napari_unet_lab.core.config import TargetConfig, UNetConfig
    from napari_unet_lab.core.progress import run_to_end
    from napari_unet_lab.core.train import prepare_training

    lever = LEVERS[name]
    network = UNetConfig(**lever.get("network", {}))
    model, info = starting_model("scratch", seed, torch.device(device), network)
    settings = lever_settings(lever, steps)
    run = run_to_end(prepare_training(model, items, (), settings, seed, TargetConfig()))
    warmup = lever.get("warmup", 0.0)
    if warmup:  # linear warm-up over the first share of the steps, then the cosine
        cosine = run.learning_rate

        def learning_rate(self, step: int | None = None) -> float:
            step = self.step if step is None else step
            return cosine(step) * min(1.0, (step + 1) / max(1.0, warmup * steps))

        run.learning_rate = types.MethodType(learning_rate, run)
    return run, info


def training_items():
    """Return the annotations of scenario (a)."""
    from benchmarks.time_to_quality_scenarios import scenario_a

    return scenario_a(0).items


def measure_cpu(names: list[str], threads: int, steps: int = 10) -> dict[str, float]:
    """Seconds per step of each lever on this machine (3 steps to warm up, then `steps`)."""
    torch.set_num_threads(threads)
    items = training_items()
    seconds = {}
    for name in names:
        if name != "base" and not any(key in LEVERS[name] for key in COSTLY):
            continue  # costs what the defaults cost
        run, _ = prepared_run(name, 1000, 0, "cpu", items)
        for _ in range(3):
            run.train_step()
        started = time.perf_counter()
        for _ in range(steps):
            run.train_step()
        seconds[name] = round((time.perf_counter() - started) / steps, 4)
        print(f"{name}: {seconds[name]} s per step", flush=True)
    return seconds


def train_and_score(name: str, steps: int, seed: int, device: str, val_images: int, threads: int):
    """Train one lever for `steps` steps from seed `seed`; return its scores (a worker)."""
    from benchmarks.bench_training_quality import DATA, evaluate, read_split

    torch.set_num_threads(threads)
    started = time.perf_counter()
    run, info = prepared_run(name, steps, seed, device, training_items())
    for _ in range(steps):
        run.train_step()
    trained = time.perf_counter() - started
    scores = evaluate(run.model, info, read_split(DATA / "val", val_images))
    return {"lever": name, "seed": seed, "steps": steps, "train_seconds": round(trained, 1),
            "final_loss": round(run.losses[-1], 4), **scores}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure the CPU's step times, or train and score every lever."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure-cpu", action="store_true")
    parser.add_argument("--step-seconds", type=Path, help="JSON written by --measure-cpu")
    parser.add_argument(
        "--base-steps", type=int, default=441, help="the budget, in steps of the defaults"
    )
    parser.add_argument("--levers", nargs="+", default=list(LEVERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--val-images", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="smoke runs: fewer steps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    record: dict[str, Any] = {
        "machine": describe_machine(torch.device(args.device)),
        "command": "python -m benchmarks.sweep_levers " + " ".join(given),
    }
    if args.measure_cpu:
        record["step_seconds"] = measure_cpu(args.levers, args.threads)
        write_report(record, args.out)
        return 0
    measured = json.loads(args.step_seconds.read_text())["step_seconds"]
    jobs = []
    for name in args.levers:
        lever = LEVERS[name]
        # levers that change no arithmetic cost what the defaults cost (timings differ by noise)
        ratio = measured["base"] / measured[same_cost(name, measured)]
        steps = args.base_steps * lever.get("time", 1.0) * ratio * args.steps_scale
        jobs += [(name, max(1, math.floor(steps)), seed) for seed in args.seeds]
    record.update(base_steps=args.base_steps, step_seconds=measured, results=[])
    # spawned, not forked: a forked child cannot use CUDA once the parent has
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(
                train_and_score, name, steps, seed, args.device, args.val_images, args.threads
            )  # fmt: skip
            for name, steps, seed in sorted(jobs, key=lambda job: -job[1])  # longest first
        ]
        for future in as_completed(futures):
            result = future.result()
            print(json.dumps(result), flush=True)
            record["results"].append(result)
            write_report(record, args.out)
    summary = {}
    for name in args.levers:
        mine = [r for r in record["results"] if r["lever"] == name]
        summary[name] = {key: round(sum(r[key] for r in mine) / len(mine), 4)
                         for key in ("ap50", "mean_ap", "pixel_iou")}  # fmt: skip
        summary[name]["steps"] = mine[0]["steps"]
    record["mean_over_seeds"] = summary
    write_report(record, args.out)
    for name, row in sorted(summary.items(), key=lambda item: -item[1]["ap50"]):
        print(f"{row['ap50']:.4f} {row['mean_ap']:.4f} {row['steps']:5d}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
