"""Elastic deformation in torch versus the `elasticdeform` package, and its share of a step.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_augment

Part 1 times the elastic deformation of a batch of 8 samples of 512 x 512, each
with three arrays (image, label map, weight map), as the issue asks:

- ours: `elastic_displacement` + `deform` on the whole batch (torch, on the
  device), with the image bicubic, labels nearest and weights bilinear (our
  default), and with every mode matched to the package's;
- `elasticdeform.deform_random_grid(X=[image, labels, weights], sigma=10,
  points=3, order=[3, 0, 3], mode="mirror")`, once per sample (NumPy in, NumPy
  out), and the same with order [1, 0, 1] against our all-bilinear variant.

Part 2 puts the full `augment_batch` (flips, turns, elastic, intensity) next to
one forward and backward pass of the light U-Net on the batch it would feed:
8 patches of the valid input size nearest 252.

Repeats are interleaved (A, B, C, A, B, C, ...) so background load hits every
variant alike; medians are reported, raw timings kept. The exit status is 0
whatever the targets say: this is a measurement, not a test.

``elasticdeform`` must be built from source under NumPy 2::

    .venv/bin/pip install -c constraints.txt --no-binary elasticdeform elasticdeform
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet_lab.core.config import AugmentationConfig, UNetConfig
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.train.augment import augment_batch, deform, elastic_displacement

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.machine import describe_machine
except ImportError:
    from machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
SPEEDUP_TARGET = 5.0  # ours at least 5x the package's throughput (issue "Training")
PIPELINE_SHARE_TARGET = 0.10  # the data pipeline adds at most 10 % to forward + backward


@dataclass
class Variant:
    """One way of deforming the batch, timed as a whole call."""

    key: str  # name in the JSON file
    label: str  # row in the printed table
    run: Callable[[], Any]
    times: list[float] = field(default_factory=list)  # wall clock, seconds


def sample_batch(batch: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return images, label maps and weight maps that look a little like nuclei data."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.standard_normal((batch, 1, size // 16, size // 16)))
    smooth = F.interpolate(noise.float(), size=(size, size), mode="bicubic", align_corners=True)
    image = smooth[:, 0].numpy()
    image = (image - image.min()) / (image.max() - image.min())
    labels = (image > 0.55).astype(np.int32) + (image > 0.7)  # 0, 1, 2
    weights = (1.0 + 4.0 * (labels == 2)).astype(np.float32)
    return image.astype(np.float32), labels.astype(np.int32), weights


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(variant: Variant, device: torch.device) -> None:
    """Run a variant once and record its wall-clock time."""
    synchronize(device)
    start = time.perf_counter()
    variant.run()
    synchronize(device)
    variant.times.append(time.perf_counter() - start)


def measure(variants: list[Variant], repeats: int, device: torch.device) -> None:
    """Warm every variant up once, then time them interleaved."""
    for variant in variants:
        variant.run()
    for _ in range(repeats):
        for variant in variants:
            timed(variant, device)


def with_threads(threads: int | None, run: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap `run` to use `threads` torch threads (None: leave torch's setting)."""
    if threads is None:
        return run

    def limited() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(before)

    return limited


def machine_info(device: torch.device) -> dict[str, Any]:
    """Describe where the numbers were measured."""
    import elasticdeform

    return describe_machine(device, elasticdeform=getattr(elasticdeform, "__version__", "unknown"))


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    parser.add_argument("--size", type=int, default=512, help="patch edge for part 1")
    parser.add_argument("--patch", type=int, default=252, help="U-Net input edge for part 2")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats")
    parser.add_argument("--device", default="cpu", help="torch device for our variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="results JSON path")
    return parser.parse_args(argv)


def elastic_variants(
    arguments: argparse.Namespace, device: torch.device
) -> tuple[list[Variant], dict[str, tuple[str, str]]]:
    """Part 1: the variants and which of ours is compared with which of theirs."""
    import elasticdeform

    images, labels, weights = sample_batch(arguments.batch, arguments.size, arguments.seed)
    image_t = torch.from_numpy(images[:, None]).to(device)  # (B, 1, H, W)
    labels_t = torch.from_numpy(labels).to(device)  # (B, H, W) int32
    weights_t = torch.from_numpy(weights).to(device)  # (B, H, W)
    generator = torch.Generator(device).manual_seed(arguments.seed)
    shape = (arguments.size, arguments.size)

    def ours(modes: list[str]) -> Callable[[], Any]:
        def run() -> list[torch.Tensor]:
            field = elastic_displacement(
                arguments.batch, shape, (3, 3), 10.0, generator=generator, device=device
            )
            return deform([image_t, labels_t, weights_t], field, modes)

        return run

    def package(order: list[int]) -> Callable[[], Any]:
        np.random.seed(arguments.seed)  # elasticdeform draws from NumPy's global generator

        def run() -> list[list[np.ndarray]]:
            return [
                elasticdeform.deform_random_grid(
                    X=[images[b], labels[b], weights[b]],
                    sigma=10,
                    points=3,
                    order=order,
                    mode="mirror",
                )
                for b in range(arguments.batch)
            ]

        return run

    modes = {
        "default": ["bicubic", "nearest", "bilinear"],
        "cubic": ["bicubic", "nearest", "bicubic"],
        "linear": ["bilinear", "nearest", "bilinear"],
    }
    variants = []
    for threads in (None, 1):
        for name, chosen in modes.items():
            key = f"ours_{name}" + ("_1thread" if threads else "")
            label = "ours " + "/".join(chosen) + (", 1 thread" if threads else "")
            variants.append(Variant(key, label, with_threads(threads, ours(chosen))))
    variants += [
        Variant("elasticdeform_303", "elasticdeform order [3, 0, 3]", package([3, 0, 3])),
        Variant("elasticdeform_101", "elasticdeform order [1, 0, 1]", package([1, 0, 1])),
    ]
    comparisons = {
        "default_vs_303": ("ours_default", "elasticdeform_303"),
        "cubic_vs_303": ("ours_cubic", "elasticdeform_303"),
        "linear_vs_101": ("ours_linear", "elasticdeform_101"),
        "default_1thread_vs_303": ("ours_default_1thread", "elasticdeform_303"),
        "cubic_1thread_vs_303": ("ours_cubic_1thread", "elasticdeform_303"),
        "linear_1thread_vs_101": ("ours_linear_1thread", "elasticdeform_101"),
    }
    return variants, comparisons


def training_variants(arguments: argparse.Namespace, device: torch.device) -> list[Variant]:
    """Part 2: full augmentation of a training batch next to forward + backward on it."""
    with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
        torch.manual_seed(arguments.seed)
        model = UNet(UNetConfig()).to(device).train()
    patch = model.valid_input_size(arguments.patch)
    out = model.output_size(patch)
    images, labels, weights = sample_batch(arguments.batch, patch, arguments.seed + 1)
    image_t = torch.from_numpy(images[:, None]).to(device)
    labels_t = torch.from_numpy(labels).long().to(device)
    weights_t = torch.from_numpy(weights).to(device)
    generator = torch.Generator(device).manual_seed(arguments.seed)
    settings = AugmentationConfig()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    target_out = labels_t[:, :out, :out].clamp(max=1)
    weights_out = weights_t[:, :out, :out]

    def augment() -> Any:
        return augment_batch(image_t, labels_t, weights_t, settings, generator, (out, out))

    def step() -> None:
        logits = model(image_t)  # (B, 2, out, out)
        loss = (F.cross_entropy(logits, target_out, reduction="none") * weights_out).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    arguments.unet_patch, arguments.unet_output = patch, out
    size = f"{arguments.batch} x {patch}^2"
    return [
        Variant("augment_batch", f"augment_batch, {size}", augment),
        Variant("forward_backward", f"light U-Net fwd+bwd, {size}", step),
        Variant("augment_batch_1thread", "augment_batch, 1 thread", with_threads(1, augment)),
        Variant("forward_backward_1thread", "fwd+bwd, 1 thread", with_threads(1, step)),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run both parts, print tables, and write the results JSON."""
    arguments = parse_arguments(argv)
    device = torch.device(arguments.device)
    info = machine_info(device)

    elastic, comparisons = elastic_variants(arguments, device)
    measure(elastic, arguments.repeats, device)
    training = training_variants(arguments, device)
    measure(training, arguments.repeats, device)
    info["load_average_end"] = list(os.getloadavg())

    median = {v.key: statistics.median(v.times) for v in elastic + training}
    samples_per_second = {v.key: arguments.batch / median[v.key] for v in elastic}
    ratios = {name: median[theirs] / median[ours] for name, (ours, theirs) in comparisons.items()}
    shares = {
        "default_threads": median["augment_batch"] / median["forward_backward"],
        "one_thread": median["augment_batch_1thread"] / median["forward_backward_1thread"],
    }
    verdict_speed = {
        name: "PASS" if ratio >= SPEEDUP_TARGET else "FAIL"
        for name, ratio in ratios.items()
        if name.startswith("default")
    }
    verdict_share = {
        name: "PASS" if share <= PIPELINE_SHARE_TARGET else "FAIL" for name, share in shares.items()
    }

    print(f"Part 1: elastic deformation, {arguments.batch} x {arguments.size}^2 x 3 arrays")
    for v in elastic:
        print(f"  {v.label:40s} {median[v.key] * 1e3:9.1f} ms  {samples_per_second[v.key]:7.1f} /s")
    for name, value in ratios.items():
        print(f"  speed-up {name:20s} {value:6.2f}x")
    for name, verdict in verdict_speed.items():
        print(f"  target >= {SPEEDUP_TARGET:.0f}x ({name}): {verdict}")
    print(f"Part 2: augmentation against one training step ({arguments.device})")
    for v in training:
        print(f"  {v.label:40s} {median[v.key] * 1e3:9.1f} ms")
    for name, share in shares.items():
        print(f"  augmentation / (fwd+bwd), {name}: {share:.1%}; <= 10 %: {verdict_share[name]}")

    results = {
        "benchmark": "augment",
        "command": "python -m benchmarks.bench_augment " + " ".join(argv or sys.argv[1:]),
        "machine": info,
        "settings": {
            "batch": arguments.batch,
            "size": arguments.size,
            "arrays_per_sample": ["image float32", "labels int32", "weights float32"],
            "sigma": 10.0,
            "grid": [3, 3],
            "border": "mirror about the edge pixel centres (ours: grid_sample reflection, "
            "align_corners=True; elasticdeform: mode='mirror')",
            "repeats": arguments.repeats,
            "order": "one untimed warm-up per variant, then interleaved repeats",
            "timer": "time.perf_counter around one batch; ours includes drawing the field",
            "unet": {
                "config": UNetConfig().to_dict(),
                "input": arguments.unet_patch,
                "output": arguments.unet_output,
            },
            "augmentation": AugmentationConfig().to_dict(),
        },  # fmt: skip
        "median_seconds": median,
        "samples_per_second": samples_per_second,
        "speedup": ratios,
        "augment_share_of_forward_backward": shares,
        "targets": {
            "speedup_vs_elasticdeform_303": {"wanted": SPEEDUP_TARGET, "verdict": verdict_speed},
            "augment_share": {"wanted": PIPELINE_SHARE_TARGET, "verdict": verdict_share},
        },
        "raw_seconds": {v.key: v.times for v in elastic + training},
    }
    output = arguments.output or RESULTS / f"augment-{device.type}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
