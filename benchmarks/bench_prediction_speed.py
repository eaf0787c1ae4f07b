"""CPU prediction throughput of the built-in model: today's code path against the new one.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_prediction_speed

"Today" is the tiling engine and U-Net exactly as they were at `BASELINE_COMMIT`,
read with ``git show`` and run in this process beside the current code, on the
same weights, images and thread settings. Each round runs every variant once,
odd rounds in reverse order, so background load hits them alike; the ratio of a
round is today's time over the new time within that round, and the median of
those ratios is reported (raw times kept in the JSON).

Images: the 520 x 696 BBBC039 sample shipped with the plugin (``nuclei_1``) and
a 2048 x 2048 mosaic of BBBC039 nuclei (`bench_tiling.nuclei_mosaic`). Both are
predicted as `segment` predicts them: intensity range from the model's
normalisation, ``tile_size="auto"``, probabilities out.

Also checked, for the new path: tiled equals the whole-image pass (array_equal),
and its probabilities, classes and objects against today's. The exit status is 0
whatever the ratios: this is a measurement, not a test. See README.md.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from napari_unet_lab.core.images import intensity_range_for
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.objects import class_labels, object_labels
from napari_unet_lab.core.predict.tiling import predict_tiled, run_network
from napari_unet_lab.samples import load_sample

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.bench_tiling import nuclei_mosaic
    from benchmarks.machine import ROOT, describe_machine, write_report
except ImportError:
    from bench_tiling import nuclei_mosaic
    from machine import ROOT, describe_machine, write_report

RESULTS = Path(__file__).resolve().parent / "results"
# The code before this work: tiling and U-Net as every release up to then ran them.
BASELINE_COMMIT = "bf8f045"
BASELINE_FILES = {
    "unet": "src/napari_unet_lab/core/model/unet.py",
    "tiling": "src/napari_unet_lab/core/predict/tiling.py",
}
TARGET = 1.5  # issue #11 item 5: at least 1.5x today's CPU throughput
PROBABILITY_TOLERANCE = 1e-4  # new vs today: float rounding only


def code_at(commit: str) -> dict[str, ModuleType]:
    """Import the U-Net and tiling modules as they were at `commit`, beside today's.

    They are loaded under new names inside the same packages, so their relative
    imports (config, tile plan, device) resolve to the current modules, which
    this work does not change.
    """
    modules = {}
    for name, path in BASELINE_FILES.items():
        source = subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True
        )
        if source.returncode:
            sys.exit(f"cannot read {path} at {commit}: {source.stderr.strip()}")
        package = "napari_unet_lab.core." + ("model" if name == "unet" else "predict")
        full_name = f"{package}.{name}_at_{commit}"
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(full_name, None))
        module.__package__ = package
        sys.modules[full_name] = module
        exec(compile(source.stdout, f"{commit}:{path}", "exec"), module.__dict__)
        modules[name] = module
    return modules


def set_glibc_allocator(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds for this process (what MALLOC_*_ env vars do)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    return bool(
        libc.mallopt(m_mmap_threshold, mmap_threshold)
        and libc.mallopt(m_trim_threshold, trim_threshold)
    )


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Return wall-clock seconds, this process's CPU seconds, and the result of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def variants_for(
    model: UNet, today: dict[str, ModuleType], levers: bool
) -> dict[str, Callable[[np.ndarray, Any], np.ndarray]]:
    """Return the ways of predicting an image: today's path, the new one, and single levers."""
    old_model = today["unet"].UNet(model.config)
    old_model.load_state_dict(model.state_dict())
    old_model.eval()
    settings = dict(device="cpu", tile_size="auto")
    variants = {
        "today": lambda image, r: today["tiling"].predict_tiled(
            old_model, image, intensity_range=r, **settings
        ),
        "new": lambda image, r: predict_tiled(model, image, intensity_range=r, **settings),
    }
    if not levers:
        return variants
    # the new path less one lever, or plus one that was tried
    unfolded = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    cpu = torch.device("cpu")

    def not_folded(inputs: np.ndarray) -> np.ndarray:
        return run_network(unfolded, inputs, cpu, None)

    variants.update(
        {
            "new, batch norm not folded": lambda image, r: predict_tiled(
                model, image, intensity_range=r, runner=not_folded, **settings
            ),
            "new, tiles up to 1024 px": lambda image, r: predict_tiled(
                model, image, intensity_range=r, device="cpu", tile_size=1024
            ),
            "new, 2 tiles per batch": lambda image, r: predict_tiled(
                model, image, intensity_range=r, batch_size=2, **settings
            ),
            "new, bfloat16 autocast": lambda image, r: predict_tiled(
                model, image, intensity_range=r, mixed_precision=True, **settings
            ),
        }
    )
    return variants


def compare(new: np.ndarray, old: np.ndarray) -> dict[str, Any]:
    """How far the new probabilities are from today's, and whether classes and objects agree."""
    new_objects = object_labels(1.0 - new[0])
    old_objects = object_labels(1.0 - old[0])
    return {
        "max_abs_probability_difference": float(np.abs(new - old).max()),
        "classes_identical": bool(np.array_equal(class_labels(new), class_labels(old))),
        "pixels_of_another_class": int((class_labels(new) != class_labels(old)).sum()),
        "objects_identical": bool(np.array_equal(new_objects, old_objects)),
        "objects": int(new_objects.max()),
    }


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="torch thread counts, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--size", type=int, default=2048, help="edge of the large image")
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="commit of 'today'")
    parser.add_argument(
        "--levers",
        action="store_true",
        help="also time single levers (first thread count, the sample image only)",
    )
    parser.add_argument(
        "--malloc-tuned",
        action="store_true",
        help="set glibc's mmap threshold to 1 GiB and trim threshold to 4 GiB first",
    )
    parser.add_argument("--no-exactness", action="store_true", help="skip the whole-image pass")
    parser.add_argument("--out", type=Path, default=RESULTS / "prediction_speed-cpu.json")
    args = parser.parse_args(argv)

    allocator = None
    if args.malloc_tuned:
        allocator = set_glibc_allocator(2**30, 2**32 - 1)
    model, info = load_model(builtin_models()["nuclei"])
    today = code_at(args.baseline)
    sample = load_sample("nuclei_1")[0]
    mosaic, mosaic_source = nuclei_mosaic(args.size)
    images = {f"{sample.shape[0]}x{sample.shape[1]}": sample, f"{args.size}x{args.size}": mosaic}
    ranges = {
        name: intensity_range_for(image, info.normalization) for name, image in images.items()
    }

    report: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "baseline_commit": args.baseline,
        "images": {"sample": "plugin sample nuclei_1 (BBBC039)", "large": mosaic_source},
        "glibc_allocator_tuned": allocator,
        "runs": {},
    }
    outputs: dict[tuple[str, str], np.ndarray] = {}
    for index, threads in enumerate(int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for image_name, image in images.items():
            levers = args.levers and index == 0 and image is sample
            variants = variants_for(model, today, levers)
            rng = ranges[image_name]
            times = {key: {"wall": [], "cpu": []} for key in variants}
            for key, run in variants.items():  # warm-up, and the outputs compared below
                outputs[key, image_name] = run(image, rng)
            for round_ in range(args.repeats):
                order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
                for key in order:
                    wall, cpu, _ = timed(
                        lambda run=variants[key], image=image, rng=rng: run(image, rng)
                    )
                    times[key]["wall"].append(wall)
                    times[key]["cpu"].append(cpu)
            rows = {}
            for key, measured in times.items():
                ratios = [
                    t / n for t, n in zip(times["today"]["wall"], measured["wall"], strict=True)
                ]
                cpu_ratios = [
                    t / n for t, n in zip(times["today"]["cpu"], measured["cpu"], strict=True)
                ]
                rows[key] = {
                    **measured,
                    "median_wall_s": statistics.median(measured["wall"]),
                    "median_cpu_s": statistics.median(measured["cpu"]),
                    "speed_up_wall": statistics.median(ratios),
                    "speed_up_cpu": statistics.median(cpu_ratios),
                    "vs_today": compare(outputs[key, image_name], outputs["today", image_name]),
                }
                print(
                    f"{threads} thread(s) {image_name:>9} {key:<30} "
                    f"{rows[key]['median_wall_s']:7.2f} s wall {rows[key]['median_cpu_s']:7.2f} s "
                    f"CPU  speed-up {rows[key]['speed_up_wall']:.2f}x wall "
                    f"{rows[key]['speed_up_cpu']:.2f}x CPU  "
                    f"max|dp| {rows[key]['vs_today']['max_abs_probability_difference']:.1e}",
                    flush=True,
                )
            report["runs"][f"{threads} threads, {image_name}"] = rows
    report["machine"]["load_average_end"] = list(__import__("os").getloadavg())

    if not args.no_exactness:  # the promise: tiled prediction is the whole-image pass
        exact = {}
        for image_name, image in images.items():
            whole = predict_tiled(
                model, image, device="cpu", tile_size=None, intensity_range=ranges[image_name]
            )
            exact[image_name] = bool(np.array_equal(whole, outputs["new", image_name]))
            print(f"new path, {image_name}: tiled equals the whole-image pass: {exact[image_name]}")
        report["tiled_equals_whole"] = exact

    for run_name, rows in report["runs"].items():
        speed_up = rows["new"]["speed_up_wall"]
        verdict = "PASS" if speed_up >= TARGET else "FAIL"
        print(f"{run_name}: new / today {speed_up:.2f}x (target {TARGET}x) {verdict}")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
