"""Tiled versus whole-image prediction, and versus MONAI's sliding-window inference.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_tiling

On a 2048 x 2048 mosaic of BBBC039 nuclei and one device, it times

- a valid-padding light U-Net: one pass over the whole mirrored image (the
  reference) against overlap-tile prediction with `predict_tiled`;
- the same weights with same padding, mirrored and with a zero border: our whole
  pass and our tiled prediction, against MONAI's `sliding_window_inference`
  driving the same network, once at MONAI's defaults and once on exactly our
  tiles (same windows, batch and step);
- our default, automatic tile size (`auto_tile_size` for the device and batch)
  against MONAI at its defaults with roi 512 and with roi equal to our limit.

Repeats are interleaved (A, B, C, then C, B, A, ...) so background load hits every
variant alike; medians are reported, raw timings kept. The exit status is 0
whatever the targets say: this is a measurement, not a test. See README.md.
"""

from __future__ import annotations

import argparse
import gc
import glob
import math
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

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.device import autocast, select_device
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.tile_plan import Border, auto_tile_size, plan_axis
from napari_unet_lab.core.predict.tiling import predict_tiled

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.machine import describe_machine, write_report
except ImportError:
    from machine import describe_machine, write_report

RESULTS = Path(__file__).resolve().parent / "results"
BBBC039_VAL = "/work/shared/data/bbbc039/val/images"
# throughput ratios wanted by the issue "Benchmark"
TILED_VS_WHOLE = 0.85
VS_MONAI_EQUAL = 1.0
VS_MONAI_DEFAULTS = 1.2
MONAI_ROI = 512  # MONAI has no default roi; 512 is a common choice for 2D
SAME_PADDING_TOLERANCE = 1e-5  # promised bound on |tiled - whole| for same padding


@dataclass
class Variant:
    """One way of predicting the image, timed as a whole call (NumPy in, NumPy out)."""

    key: str  # name in the JSON file
    label: str  # row in the printed table
    model: str  # "valid" or "same": which network
    method: str  # "whole", "tiled" or "monai"
    reference: str  # key of the whole-image pass its output is compared with
    settings: dict[str, Any]
    run: Callable[[np.ndarray], np.ndarray]  # (Y, X) float32 -> (n_classes, Y, X) float32
    geometry: Callable[[], tuple[int, int]]  # (network passes, input pixels) of the last run
    times: list[float] = field(default_factory=list)  # wall clock, seconds
    cpu_times: list[float] = field(default_factory=list)  # this process's CPU time, seconds
    output: np.ndarray | None = None


# ----------------------------------------------------------------------------- inputs
def nuclei_mosaic(size: int, crop: int = 512) -> tuple[np.ndarray, str]:
    """Return a (size, size) float32 image in 0..1 made of real nuclei images.

    Distinct `crop` x `crop` centre crops of the BBBC039 validation images are laid
    side by side (so tile seams fall on real content, not on a repeated pattern);
    without that folder, the plugin's sample image is mirrored up to size.
    """
    paths = sorted(glob.glob(os.path.join(BBBC039_VAL, "*.tif")))
    per_side = math.ceil(size / crop)
    if len(paths) >= per_side**2:
        import tifffile

        rows = []
        for row in range(per_side):
            tiles = []
            for column in range(per_side):
                image = tifffile.imread(paths[row * per_side + column]).astype(np.float32)
                top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
                tiles.append(image[top : top + crop, left : left + crop])
            rows.append(np.concatenate(tiles, axis=1))
        mosaic = np.concatenate(rows, axis=0)[:size, :size]
        source = (
            f"BBBC039 val: centre {crop}x{crop} crops of the first {per_side**2} images "
            f"(sorted by name), {per_side}x{per_side} mosaic"
        )
    else:
        from napari_unet_lab.samples import load_sample

        image = load_sample("nuclei_1")[0].astype(np.float32)
        reps = [math.ceil(size / n) for n in image.shape]
        mosaic = np.pad(
            image, [(0, (r - 1) * n) for r, n in zip(reps, image.shape, strict=True)], "symmetric"
        )[:size, :size]
        source = "plugin sample nuclei_1, mirrored up to size"
    low, high = float(mosaic.min()), float(mosaic.max())
    mosaic = (mosaic - low) / (high - low)
    return np.ascontiguousarray(mosaic, dtype=np.float32), f"{source}; min-max scaled to 0..1"


def light_unets(seed: int) -> dict[str, UNet]:
    """Return the light U-Net with random weights, as valid- and same-padding twins.

    Both share every weight. Batch-norm statistics are randomised so that folding
    them into the convolutions (what `for_inference` does) changes the weights.
    """
    with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
        torch.manual_seed(seed)
        valid = UNet(UNetConfig(padding="valid"))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in valid.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.normal_(1.0, 0.1, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
    same = UNet(UNetConfig(padding="same"))
    same.load_state_dict(valid.state_dict())
    return {"valid": valid.eval(), "same": same.eval()}


# --------------------------------------------------------------------------- variants
def ours(
    model: UNet,
    size: int,
    tile_size: int | None,
    batch_size: int,
    border: Border,
    device: torch.device,
    key: str,
    automatic: bool = False,
) -> Variant:
    """Our `predict_tiled`; ``tile_size=None`` is the whole-image reference pass.

    With `automatic`, `predict_tiled` gets ``tile_size="auto"``, which must
    resolve to `tile_size`.
    """
    padding = model.config.padding
    shape = [size, size]

    def run(image: np.ndarray) -> np.ndarray:
        shape[:] = image.shape
        return predict_tiled(
            model,
            image,
            tile_size="auto" if automatic else tile_size,
            batch_size=batch_size,
            device=device,
            output="logits",
            border=border,
        )

    def geometry() -> tuple[int, int]:
        plans = [plan_axis(model, length, tile_size, border) for length in shape]
        passes = len(plans[0].starts) * len(plans[1].starts)
        return passes, passes * plans[0].tile_input * plans[1].tile_input

    plan = plan_axis(model, size, tile_size, border)
    n = len(plan.starts)
    where = ", zero border" if border == "zeros" else ""
    if tile_size is None:
        label = f"{padding:5}  ours, whole image{where}"
    else:
        label = f"{padding:5}  ours, {n}x{n} tiles of {plan.tile_input}, batch {batch_size}{where}"
    if automatic:
        label += f" (auto: <= {tile_size})"
    settings = {
        "tile_size": "auto" if automatic else tile_size,
        "tile_limit": tile_size,
        "tile_input": plan.tile_input,
        "tiles_per_axis": n,
        "batch_size": batch_size if tile_size is not None else 1,
        "border": border,
    }
    reference = f"{padding}-whole" + ("-zeros" if border == "zeros" else "")
    method = "whole" if tile_size is None else "tiled"
    return Variant(key, label, padding, method, reference, settings, run, geometry)


def monai(
    model: UNet,
    roi: int,
    batch_size: int,
    overlap: float,
    mirror: int,
    device: torch.device,
    key: str,
    label: str,
    reference: str,
) -> Variant:
    """MONAI's `sliding_window_inference`, ``mode="constant"``, driving `model`.

    `mirror` pixels are added on every side by reflection before (and cropped
    after), as our tiler reads them; 0 gives MONAI the image as it is.
    """
    from monai.inferers import sliding_window_inference

    network = model.for_inference().to(device)  # what our tiler runs, folded once
    seen = [0, 0]  # windows and input pixels of the last run

    def predictor(windows: torch.Tensor) -> torch.Tensor:  # (B, 1, roi, roi)
        seen[0] += windows.shape[0]
        seen[1] += windows.shape[0] * windows.shape[-2] * windows.shape[-1]
        with autocast(device):  # as `predict_tiled`: mixed precision on CUDA only
            return network(windows).float()

    def run(image: np.ndarray) -> np.ndarray:
        seen[:] = [0, 0]
        with torch.inference_mode():
            batch = torch.from_numpy(image)[None, None].to(device)  # (1, 1, Y, X)
            if mirror:
                batch = F.pad(batch, (mirror,) * 4, mode="reflect")
            scores = sliding_window_inference(
                batch, (roi, roi), batch_size, predictor, overlap=overlap, mode="constant"
            )
            if mirror:
                scores = scores[..., mirror:-mirror, mirror:-mirror]
            return scores[0].float().cpu().numpy()

    settings = {
        "roi_size": roi,
        "sw_batch_size": batch_size,
        "overlap": overlap,
        "mode": "constant",
        "step": int(roi * (1 - overlap)),
        "border": f"mirror ({mirror} px added, cropped after)" if mirror else "zeros",
    }
    return Variant(
        key, label, "same", "monai", reference, settings, run, lambda: (seen[0], seen[1])
    )


def overlap_for_step(roi: int, step: int) -> float:
    """Return the overlap for which MONAI steps exactly `step` pixels (it truncates)."""
    overlap = (roi - step) / roi
    while int(roi * (1 - overlap)) < step:
        overlap = math.nextafter(overlap, 0.0)
    return overlap


def monai_defaults(same: UNet, roi: int, device: torch.device) -> Variant:
    """MONAI at its defaults (sw_batch_size 1, overlap 0.25) with `roi`, on the image as given."""
    return monai(
        same,
        roi=roi,
        batch_size=1,
        overlap=0.25,
        mirror=0,
        device=device,
        key=f"same-monai-{roi}-defaults",
        label=f"same   MONAI roi {roi}, defaults: batch 1, overlap 0.25, zero border",
        reference="same-whole-zeros",
    )


def auto_keys(tile: int, auto: int) -> dict[str, str]:
    """Keys of our default (automatic) runs, and of MONAI's with roi 512 and roi = our limit.

    Where the automatic limit equals `tile`, the runs at `tile` are our default.
    """
    suffix = "auto" if auto != tile else str(tile)
    return {
        "valid": f"valid-tiled-{suffix}",
        "mirror": f"same-tiled-{suffix}",
        "zeros": f"same-tiled-{suffix}-zeros",
        "monai_512": f"same-monai-{MONAI_ROI}-defaults",
        "monai_auto": f"same-monai-{auto}-defaults",
    }


def all_variants(
    models: dict[str, UNet],
    size: int,
    tile: int,
    batch: int,
    extra_tiles: list[tuple[int, int]],
    device: torch.device,
    auto: int,
    monai_rois: list[int],
) -> list[Variant]:
    """Return the variants in table order: valid padding, then same padding and MONAI.

    `auto` is our automatic tile limit. Where it equals `tile`, the runs at `tile`
    ask for ``tile_size="auto"``; otherwise our default runs are timed as well.
    MONAI runs at its defaults with roi 512, `tile`, `auto` and `monai_rois`.
    """
    valid, same = models["valid"], models["same"]
    keys = auto_keys(tile, auto)
    automatic = auto != tile
    variants = [
        ours(valid, size, None, 1, "mirror", device, "valid-whole"),
        ours(valid, size, tile, batch, "mirror", device, f"valid-tiled-{tile}", not automatic),
    ]
    if automatic:
        variants.append(ours(valid, size, auto, batch, "mirror", device, keys["valid"], True))
    variants += [
        ours(valid, size, t, b, "mirror", device, f"valid-tiled-{t}-batch-{b}")
        for t, b in extra_tiles
    ]
    variants += [
        ours(same, size, None, 1, "mirror", device, "same-whole"),
        ours(same, size, tile, batch, "mirror", device, f"same-tiled-{tile}", not automatic),
    ]
    if automatic:
        variants.append(ours(same, size, auto, batch, "mirror", device, keys["mirror"], True))
    variants += [
        ours(same, size, t, b, "mirror", device, f"same-tiled-{t}-batch-{b}")
        for t, b in extra_tiles
    ]
    variants += [
        ours(same, size, None, 1, "zeros", device, "same-whole-zeros"),
        ours(same, size, tile, batch, "zeros", device, f"same-tiled-{tile}-zeros", not automatic),
    ]
    if automatic:
        variants.append(ours(same, size, auto, batch, "zeros", device, keys["zeros"], True))
    variants += [
        ours(same, size, t, b, "zeros", device, f"same-tiled-{t}-batch-{b}-zeros")
        for t, b in extra_tiles
    ]
    rois = dict.fromkeys([MONAI_ROI, tile, auto, *monai_rois])  # in order, once each
    variants += [monai_defaults(same, roi, device) for roi in rois]
    # Equal footing: the image mirrored by our halo, MONAI's window and step set to
    # our tile and step, gives MONAI exactly our tiles; it then blends, we crop.
    plan = plan_axis(same, size, tile)
    step = plan.starts[1] - plan.starts[0] if len(plan.starts) > 1 else plan.tile_input
    variants.append(
        monai(
            same,
            roi=plan.tile_input,
            batch_size=batch,
            overlap=overlap_for_step(plan.tile_input, step),
            mirror=plan.context,
            device=device,
            key=f"same-monai-{tile}-equal",
            label=f"same   MONAI roi {plan.tile_input}, batch {batch}, our tiles, mirrored",
            reference="same-whole",
        )
    )
    return variants


# -------------------------------------------------------------------------- measuring
def measure(variants: list[Variant], image: np.ndarray, warmup: np.ndarray, repeats: int) -> None:
    """Time every variant `repeats` times, interleaved, after one untimed warm-up each.

    Odd repeats run the variants in reverse order, so that neither a slow drift of
    the background load nor the variant run just before favours any one of them.
    """
    for variant in variants:
        variant.run(warmup)
    for repeat in range(repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            gc.collect()
            cpu_start, start = time.process_time(), time.perf_counter()
            output = variant.run(image)
            elapsed = time.perf_counter() - start
            variant.times.append(elapsed)
            variant.cpu_times.append(time.process_time() - cpu_start)
            variant.output = output
            print(
                f"  repeat {repeat + 1}/{repeats}  {variant.key:30} {elapsed:8.2f} s"
                f"  (CPU {variant.cpu_times[-1]:.2f} s)",
                file=sys.stderr,
                flush=True,
            )


def differences(output: np.ndarray, reference: np.ndarray, border: int) -> dict[str, Any]:
    """Compare an output with the whole-image pass, everywhere and away from the border."""
    diff = np.abs(output - reference)  # (n_classes, Y, X)
    interior = diff[:, border:-border, border:-border] if border else diff
    return {
        "identical": bool(np.array_equal(output, reference)),
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_interior": float(interior.max()),
        "relative_max_abs_diff": float(diff.max() / reference.std()),
        "fraction_pixels_over_1e-4": float((diff.max(axis=0) > 1e-4).mean()),
    }


def summarise(variants: list[Variant], models: dict[str, UNet], size: int) -> dict[str, Any]:
    """Medians, best runs, throughput and differences from the whole pass, per variant."""
    by_key = {variant.key: variant for variant in variants}
    results = {}
    for variant in variants:
        reference = by_key[variant.reference]
        passes, input_pixels = variant.geometry()
        median = statistics.median(variant.times)
        results[variant.key] = {
            "label": " ".join(variant.label.split()),
            "model": variant.model,
            "method": variant.method,
            "compared_with": variant.reference,
            "settings": variant.settings,
            "network_passes": passes,
            "input_megapixels": input_pixels / 1e6,
            "times_s": variant.times,
            "median_s": median,
            "best_s": min(variant.times),
            "throughput_mpx_per_s": size * size / 1e6 / median,
            "throughput_vs_whole": statistics.median(reference.times) / median,
            "cpu_times_s": variant.cpu_times,
            "median_cpu_s": statistics.median(variant.cpu_times),
            **differences(variant.output, reference.output, models[variant.model].halo),
        }
    return results


def ratios(results: dict[str, Any], tile: int, auto: int, column: str) -> dict[str, float]:
    """Throughput ratios behind the targets, from the times in `column`."""
    monai_defaults = f"same-monai-{tile}-defaults"
    keys = auto_keys(tile, auto)
    pairs = {  # name: (ours, the one compared with)
        "valid_tiled_vs_whole": (f"valid-tiled-{tile}", "valid-whole"),
        "same_tiled_vs_whole": (f"same-tiled-{tile}", "same-whole"),
        "same_zeros_tiled_vs_whole": (f"same-tiled-{tile}-zeros", "same-whole-zeros"),
        "ours_vs_monai_equal": (f"same-tiled-{tile}", f"same-monai-{tile}-equal"),
        "ours_zeros_vs_monai_defaults": (f"same-tiled-{tile}-zeros", monai_defaults),
        "ours_mirror_vs_monai_defaults": (f"same-tiled-{tile}", monai_defaults),
        "ours_whole_zeros_vs_monai_defaults": ("same-whole-zeros", monai_defaults),
        # our default (automatic) tiling against MONAI's defaults, roi 512 and roi = our limit
        "ours_auto_zeros_vs_monai_512_defaults": (keys["zeros"], keys["monai_512"]),
        "ours_auto_mirror_vs_monai_512_defaults": (keys["mirror"], keys["monai_512"]),
        "ours_auto_zeros_vs_monai_auto_defaults": (keys["zeros"], keys["monai_auto"]),
        "ours_auto_mirror_vs_monai_auto_defaults": (keys["mirror"], keys["monai_auto"]),
        "valid_auto_vs_whole": (keys["valid"], "valid-whole"),
    }
    return {
        name: results[other][column] / results[mine][column]
        for name, (mine, other) in pairs.items()
    }


def check_targets(
    results: dict[str, Any],
    median_ratios: dict[str, float],
    best_ratios: dict[str, float],
    tile: int,
    auto: int,
) -> list[dict[str, Any]]:
    """Compare the median ratios with the targets of the issue; best runs shown alongside."""
    wanted = [
        (f"tiled >= {TILED_VS_WHOLE}x whole: valid padding, tile {tile}",
         "valid_tiled_vs_whole", TILED_VS_WHOLE),
        (f"tiled >= {TILED_VS_WHOLE}x whole: same padding, tile {tile}",
         "same_tiled_vs_whole", TILED_VS_WHOLE),
        (f"tiled >= {TILED_VS_WHOLE}x whole: same padding, tile {tile}, zero border",
         "same_zeros_tiled_vs_whole", TILED_VS_WHOLE),
        (f"ours >= {VS_MONAI_EQUAL}x MONAI: the same tiles and batch",
         "ours_vs_monai_equal", VS_MONAI_EQUAL),
    ]  # fmt: skip
    # our default tiling against MONAI at its defaults: roi 512, and roi = our tile limit
    rois = {MONAI_ROI: "512"} if auto == MONAI_ROI else {MONAI_ROI: "512", auto: "auto"}
    for roi, name in rois.items():
        same_roi = " (= our limit)" if roi == auto else ""
        for border, mine in (("both zero border", "zeros"), ("ours mirrored", "mirror")):
            wanted.append(
                (
                    f"ours auto (<= {auto}) >= {VS_MONAI_DEFAULTS}x MONAI defaults, "
                    f"roi {roi}{same_roi}: {border}",
                    f"ours_auto_{mine}_vs_monai_{name}_defaults",
                    VS_MONAI_DEFAULTS,
                )
            )
    targets = [
        {
            "target": name,
            "measured": median_ratios[ratio],
            "measured_best_runs": best_ratios[ratio],
            "wanted": bound,
            "pass": median_ratios[ratio] >= bound,
            "pass_best_runs": best_ratios[ratio] >= bound,
        }
        for name, ratio, bound in wanted
    ]
    tiled = [results[key] for key in results if results[key]["method"] == "tiled"]
    targets.append(
        {
            "target": "exact: every tiled output = its whole pass "
            f"(valid: identical; same: < {SAME_PADDING_TOLERANCE:g})",
            "measured": max(result["max_abs_diff"] for result in tiled),
            "measured_best_runs": None,
            "pass_best_runs": None,
            "wanted": 0.0,
            "pass": all(
                result["identical"]
                if result["model"] == "valid"
                else result["max_abs_diff"] < SAME_PADDING_TOLERANCE
                for result in tiled
            ),
        }
    )
    return targets


# --------------------------------------------------------------------------- context
def machine_info(device: torch.device) -> dict[str, Any]:
    """Describe where the numbers were measured."""
    import monai
    import psutil

    info = describe_machine(device, monai=monai.__version__)
    info["physical_cores"] = psutil.cpu_count(logical=False)
    info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    info["torch_interop_threads"] = torch.get_num_interop_threads()
    # settings that change CPU speed: threads, and glibc malloc (see the README)
    info["environment"] = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(("OMP_", "MKL_", "MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))
    }
    return info


def format_table(rows: list[list[str]], header: list[str], text_columns: int = 1) -> str:
    """Align columns: the first `text_columns` and the last to the left, numbers to the right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {*range(text_columns), len(header) - 1}

    def line(row: list[str]) -> str:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def print_report(
    variants: list[Variant],
    results: dict[str, Any],
    targets: list[dict[str, Any]],
    caption: str,
) -> None:
    """Print the results and the targets as two plain-text tables."""
    header = [
        "variant", "passes", "in Mpx", "median s", "best s", "Mpx/s", "vs whole",
        f"vs MONAI {MONAI_ROI}", "max|d|", "interior", "identical",
    ]  # fmt: skip
    monai_median = results[f"same-monai-{MONAI_ROI}-defaults"]["median_s"]
    rows = []
    for variant in variants:
        result = results[variant.key]
        rows.append(
            [
                variant.label,
                str(result["network_passes"]),
                f"{result['input_megapixels']:.2f}",
                f"{result['median_s']:.2f}",
                f"{result['best_s']:.2f}",
                f"{result['throughput_mpx_per_s']:.3f}",
                f"{result['throughput_vs_whole']:.2f}",
                f"{monai_median / result['median_s']:.2f}",
                f"{result['max_abs_diff']:.3g}",
                f"{result['max_abs_diff_interior']:.3g}",
                "yes" if result["identical"] else "no",
            ]
        )
    print(f"\n{caption}\n")
    print(format_table(rows, header))
    print()
    target_rows = [
        [
            target["target"],
            f"{target['measured']:.3g}",
            "" if target["measured_best_runs"] is None else f"{target['measured_best_runs']:.3g}",
            f"{target['wanted']:g}",
            ("PASS" if target["pass"] else "FAIL")
            + (
                ""  # medians and best runs agree, or there is no ratio
                if target["pass_best_runs"] in (None, target["pass"])
                else f" (best runs: {'PASS' if target['pass_best_runs'] else 'FAIL'}; noisy)"
            ),
        ]
        for target in targets
    ]
    print(format_table(target_rows, ["target", "median", "best runs", "wanted", "result"]))
    print("\nA benchmark, not a test: the exit status is 0 whatever the targets say.")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_tiling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", type=int, help="image edge in pixels (2048; 512 with --quick)")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (3; 1 with --quick)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    parser.add_argument(
        "--tile-size",
        type=int,
        default=512,
        help="largest tile of our tiler; MONAI's roi at its defaults",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="our tiles per batch (the tiler's default: 1 on the CPU, 4 on a GPU)",
    )
    parser.add_argument(
        "--extra-tiles",
        default="",
        help="more settings for our tiler, outside the targets: comma-separated TILE or "
        "TILExBATCH, e.g. 456,512x1,1136x1",
    )
    parser.add_argument(
        "--monai-rois",
        default="",
        help="more rois for MONAI at its defaults, outside the targets: comma-separated, "
        "e.g. 1024 (512 and our automatic limit are always run)",
    )
    parser.add_argument("--warmup-size", type=int, help="edge of the warm-up crop (size / 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--out", type=Path, help="JSON file (results/tiling-<device>.json)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small image, one repeat, no JSON"
    )
    arguments = parser.parse_args(argv)
    if arguments.size is None:
        arguments.size = 512 if arguments.quick else 2048
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.quick else 3
    if arguments.warmup_size is None:
        arguments.warmup_size = max(arguments.size // 2, 64)
    arguments.monai_rois = [int(roi) for roi in arguments.monai_rois.split(",") if roi.strip()]
    arguments.extra_tiles = [
        (int(tile), int(batch[0]) if batch else arguments.batch_size)
        for tile, *batch in (item.strip().split("x") for item in arguments.extra_tiles.split(","))
        if tile
    ]
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON file; always return 0."""
    arguments = parse_arguments(argv)
    device = select_device(arguments.device)
    if arguments.batch_size is None:  # as `predict_tiled` chooses
        arguments.batch_size = 1 if device.type == "cpu" else 4
    size, tile, batch = arguments.size, arguments.tile_size, arguments.batch_size
    arguments.extra_tiles = [(t, b or batch) for t, b in arguments.extra_tiles]
    image, source = nuclei_mosaic(size)
    warmup = np.ascontiguousarray(image[: arguments.warmup_size, : arguments.warmup_size])
    models = light_unets(arguments.seed)
    auto = auto_tile_size(models["same"], device, batch)
    if auto_tile_size(models["valid"], device, batch) != auto:
        raise RuntimeError("the valid and same twins were given different automatic tiles")
    variants = all_variants(
        models, size, tile, batch, arguments.extra_tiles, device, auto, arguments.monai_rois
    )

    info = machine_info(device)
    print(
        f"Tiling benchmark: {size}x{size} image, {len(variants)} variants, "
        f"{arguments.repeats} interleaved repeats, device {device}, "
        f"{info['torch_threads']} torch threads, {info['cpu']}",
        file=sys.stderr,
    )
    measure(variants, image, warmup, arguments.repeats)
    info["load_average_end"] = list(os.getloadavg())

    results = summarise(variants, models, size)
    median_ratios = ratios(results, tile, auto, "median_s")
    best_ratios = ratios(results, tile, auto, "best_s")
    targets = check_targets(results, median_ratios, best_ratios, tile, auto)
    reference_std = float(next(v for v in variants if v.key == "same-whole").output.std())
    caption = (
        f"{size}x{size} image ({source}); device {device}; {info['torch_threads']} torch "
        f"threads; {arguments.repeats} interleaved repeats. 'in Mpx': pixels fed to the "
        "network; 'Mpx/s': image megapixels per second (median); 'max|d|': largest "
        "|output - whole-image pass| of the same model, 'interior' the same more than "
        f"the halo ({models['same'].halo} px) from the image border; 'vs MONAI "
        f"{MONAI_ROI}': throughput over MONAI's at its defaults with roi {MONAI_ROI}. Our "
        f"automatic tile limit here: {auto} px. The logits of these random networks vary "
        f"with a standard deviation of {reference_std:.3g}."
    )
    print_report(variants, results, targets, caption)

    report = {
        "benchmark": "tiling",
        "command": " ".join(["python -m benchmarks.bench_tiling", *(argv or sys.argv[1:])]),
        "machine": info,
        "settings": {
            "size": size,
            "repeats": arguments.repeats,
            "warmup": f"one untimed run per variant on the top-left {len(warmup)} px crop",
            "order": "interleaved: every variant once per repeat, reversed on odd repeats",
            "timer": "time.perf_counter around one call: NumPy image in, NumPy logits out",
            "tile_size": tile,
            "auto_tile_size": auto,
            "monai_roi": MONAI_ROI,
            "batch_size": batch,
            "extra_tiles": arguments.extra_tiles,
            "monai_rois": arguments.monai_rois,
            "seed": arguments.seed,
            "inference": "torch.inference_mode; float32 on the CPU; logits, no softmax",
        },
        "image": {"shape": list(image.shape), "source": source},
        "models": {
            name: {
                "config": model.config.to_dict(),
                "parameters": model.parameter_count(),
                "halo": model.halo,
                "size_multiple": model.size_multiple,
            }
            for name, model in models.items()
        },
        "reference_logit_std": reference_std,
        "results": results,
        "ratios": median_ratios,
        "ratios_best_runs": best_ratios,
        "targets": targets,
    }
    out = arguments.out
    if out is None and not arguments.quick:
        out = RESULTS / f"tiling-{device.type}.json"
    write_report(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
