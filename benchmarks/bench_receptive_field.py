"""Time of one effective receptive field: the input gradient at one output pixel, on the CPU.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_receptive_field

For the light U-Net (``UNetConfig()``: 32 base channels, 3 poolings, valid
padding, batch norm folded as `UNet.for_inference` does once per model), it times
the gradient of one class score at one pixel with respect to the input

- with `input_gradient`, which runs the network on the smallest input crop on the
  image's pooling grid (92 or 100 pixels a side, by the pixel's pooling phase);
- on the whole mirrored 512 x 512 image, as a naive implementation would.

Both give the same gradient (tests/core/test_inspect.py proves it). The pixels
cycle through every pooling phase, so both crop sizes are timed. Repeats are
interleaved (crop, whole, crop, whole, ...) so background load hits both alike,
at 1 PyTorch thread and at PyTorch's default; medians are reported, raw times
kept, with the load average. The exit status is 0 whatever the target says.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.look_inside.receptive_field import (
    input_gradient,
    iter_effective_receptive_field,
)
from napari_unet_lab.core.model.unet import UNet, randomly_initialised
from napari_unet_lab.core.predict.tile_plan import mirror_indices, plan_axis
from napari_unet_lab.core.progress import run_to_end

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.machine import write_report
except ImportError:
    from machine import write_report

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 0.050  # the issue: one ERF of the light model on the CPU in under 50 ms


def whole_image_gradient(model: UNet, image: np.ndarray, position: tuple[int, int]) -> np.ndarray:
    """Return the gradient from a pass over the whole mirrored image (what the crop avoids)."""
    plans = [plan_axis(model, length, None) for length in image.shape]
    starts = [plan.input_starts[0] for plan in plans]  # image index of the first input pixel
    ys, xs = (
        mirror_indices(start, plan.tile_input, length)
        for start, plan, length in zip(starts, plans, image.shape, strict=True)
    )
    inputs = torch.from_numpy(image[np.ix_(ys, xs)][None, None]).requires_grad_(True)
    scores = model(inputs)
    # output pixel k lies over input pixel k + output_offset
    row, column = (p - s - model.output_offset for p, s in zip(position, starts, strict=True))
    (gradient,) = torch.autograd.grad(scores[0, 1, row, column], inputs)
    return gradient.numpy()


def pixels(size: int, grid: int, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Pixels at random places whose pooling phases cycle through every phase."""
    chosen = []
    for index in range(count):
        base = rng.integers(0, size // grid, 2) * grid
        phase = (index % grid, (index * 3) % grid)
        chosen.append((int(base[0] + phase[0]), int(base[1] + phase[1])))
    return chosen


def timed(run, repeats: list[float]) -> None:
    """Run once, adding the wall time in seconds to `repeats`."""
    start = time.perf_counter()
    run()
    repeats.append(time.perf_counter() - start)


def measure(model: UNet, image: np.ndarray, arguments: argparse.Namespace) -> dict[str, Any]:
    """Time the crop and the whole image, interleaved, at the current thread count."""
    rng = np.random.default_rng(arguments.seed)
    where = pixels(image.shape[0], model.size_multiple, arguments.repeats, rng)
    for position in where[: arguments.warmup]:  # first calls set up oneDNN kernels
        input_gradient(model, image, position)
        whole_image_gradient(model, image, position)
    crop_times: list[float] = []
    whole_times: list[float] = []
    for index, position in enumerate(where):
        crop = lambda p=position: input_gradient(model, image, p)  # noqa: E731
        whole = lambda p=position: whole_image_gradient(model, image, p)  # noqa: E731
        if index < arguments.whole_repeats:
            timed(crop, crop_times)
            timed(whole, whole_times)
        else:
            timed(crop, crop_times)
    average_start = time.perf_counter()
    run_to_end(iter_effective_receptive_field(model, [image], n_positions=100, rng=0))
    average = time.perf_counter() - average_start
    return {
        "torch_threads": torch.get_num_threads(),
        "crop": {"median_s": statistics.median(crop_times), "times_s": crop_times},
        "whole_512": {"median_s": statistics.median(whole_times), "times_s": whole_times},
        "average_of_100_pixels_s": average,
        "speed_up": statistics.median(whole_times) / statistics.median(crop_times),
        "meets_target": statistics.median(crop_times) < TARGET_S,
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_receptive_field",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--size", type=int, default=512, help="image edge in pixels")
    parser.add_argument("--repeats", type=int, default=40, help="timed pixels for the crop")
    parser.add_argument(
        "--whole-repeats", type=int, default=8, help="of these, also timed on the whole image"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed pixels first")
    parser.add_argument("--threads", default="1,default", help="PyTorch thread counts to time")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and pixels")
    parser.add_argument("--out", type=Path, help="JSON file (results/receptive_field-cpu.json)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats, no JSON")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.repeats, arguments.whole_repeats, arguments.warmup = 4, 2, 1
    arguments.whole_repeats = min(arguments.whole_repeats, arguments.repeats)
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, write the JSON file; always return 0."""
    arguments = parse_arguments(argv)
    default_threads = torch.get_num_threads()
    model = randomly_initialised(UNetConfig(), arguments.seed)
    fold_start = time.perf_counter()
    model = model.for_inference()
    fold = time.perf_counter() - fold_start
    # the content does not change the work (dense convolutions); random intensities in 0..1
    image = np.random.default_rng(arguments.seed).random((arguments.size,) * 2, dtype=np.float32)
    load_start = list(os.getloadavg())
    print(
        f"Receptive-field benchmark: light U-Net, {arguments.size}^2 image, CPU "
        f"({os.cpu_count()} cores, load average {load_start[0]:.1f})",
        file=sys.stderr,
    )
    runs = []
    for threads in arguments.threads.split(","):
        torch.set_num_threads(default_threads if threads == "default" else int(threads))
        runs.append(measure(model, image, arguments))
    torch.set_num_threads(default_threads)

    print(f"{'threads':>7}  {'crop (ms)':>9}  {'whole (ms)':>10}  {'speed-up':>8}  100 px avg (s)")
    for run in runs:
        print(
            f"{run['torch_threads']:>7}  {1e3 * run['crop']['median_s']:>9.1f}  "
            f"{1e3 * run['whole_512']['median_s']:>10.1f}  {run['speed_up']:>8.1f}  "
            f"{run['average_of_100_pixels_s']:.2f}"
        )
    print(
        f"target: under {1e3 * TARGET_S:.0f} ms on the crop; batch-norm folding {fold:.2f} s once"
    )
    report = {
        "benchmark": "receptive_field",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": list(os.getloadavg()),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "model": {"config": model.config.to_dict(), "receptive_field": model.receptive_field},
        "image_size": arguments.size,
        "fold_batch_norm_s": fold,
        "target_s": TARGET_S,
        "runs": runs,
    }
    out = arguments.out
    if out is None and not arguments.quick:
        out = RESULTS / "receptive_field-cpu.json"
    write_report(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
