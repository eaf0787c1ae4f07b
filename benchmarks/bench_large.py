"""Peak memory of prediction into a zarr store, for images many times larger than it.

One command, from the repository root::

    .venv/bin/python -m benchmarks.bench_large

For each image size it

1. writes a uint16 OME-Zarr image of real nuclei to disk chunk by chunk (never whole
   in memory): each 1024 x 1024 chunk is a 2 x 2 mosaic of 512 x 512 crops of the
   plugin's three BBBC039 sample images, flipped and turned at random;
2. segments it with `predict_to_zarr` in a fresh Python process (probabilities,
   classes, objects and the viewing pyramid), under an address-space limit
   (``RLIMIT_AS``) far below the data the run reads and writes;
3. records that process's peak resident memory (``ru_maxrss``), its resident memory
   before prediction (Python, torch and the model), the time of each step, and the
   sizes of the image and the store, on disk and uncompressed.

Optionally (``--in-memory-sizes``) the same image is segmented in memory with
`segment`, without a limit, for comparison.

The network is a light stand-in, so that gigabytes fit in minutes on two CPU cores:
a tiny U-Net (4 base channels, 2 poolings, valid padding; its compute is that of any
network of this shape) whose weights are set by hand to smooth the image and
threshold it, so that the object step sees nucleus-like objects rather than the
noise of random weights. Memory, not segmentation quality, is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import UNet

try:  # run as `python -m benchmarks.NAME` or as `python benchmarks/NAME.py`
    from benchmarks.machine import describe_machine, write_report
except ImportError:
    from machine import describe_machine, write_report

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 1024  # image chunk edge; each chunk is a 2 x 2 mosaic of crops
CROP = 512
PIXEL_SIZE = 0.65  # micrometres, as BBBC039
LIMIT_GIB = 2.0  # address space the zarr runs may use


# ----------------------------------------------------------------------------- inputs
def threshold_unet(threshold: float = 0.15, steepness: float = 30.0) -> tuple[UNet, ModelInfo]:
    """Return a tiny U-Net whose hand-set weights smooth the image and threshold it.

    Encoder 0 averages 3 x 3 twice in channel 0, decoder 0 passes channel 0 on,
    every other weight is 0, and the head scores "nucleus" as
    ``steepness * (smoothed - threshold)``. Batch norm is left at identity.
    """
    config = UNetConfig(base_channels=4, depth=2)
    model = UNet(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
        model.encoders[0][0].weight[0, 0] = 1 / 9
        model.encoders[0][3].weight[0, 0] = 1 / 9
        model.decoders[0][0].weight[0, 0, 1, 1] = 1.0
        model.decoders[0][3].weight[0, 0, 1, 1] = 1.0
        model.head.weight[1, 0] = steepness
        model.head.bias[1] = -steepness * threshold
    info = ModelInfo(config=config, class_names=["background", "nucleus"], name="threshold")
    return model.eval(), info


def write_nuclei_image(path: Path, size: int, seed: int = 0) -> dict[str, Any]:
    """Write a (size, size) uint16 OME-Zarr image of nuclei, one chunk at a time."""
    import zarr

    from napari_unet_lab.core.formats.ome_zarr import create_multiscale, label_axes
    from napari_unet_lab.samples import load_sample

    samples = [load_sample(f"nuclei_{i}")[0] for i in (1, 2, 3)]
    rng = np.random.default_rng(seed)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    (image,) = create_multiscale(
        group,
        (size, size),
        np.uint16,
        label_axes(2, "micrometer"),
        (PIXEL_SIZE, PIXEL_SIZE),
        name="nuclei mosaic",
        chunks=(CHUNK, CHUNK),
        levels=1,
    )
    started = time.perf_counter()
    for top in range(0, size, CHUNK):
        for left in range(0, size, CHUNK):
            rows = []
            for _ in range(CHUNK // CROP):
                crops = []
                for _ in range(CHUNK // CROP):
                    sample = samples[rng.integers(len(samples))]
                    y = rng.integers(sample.shape[0] - CROP + 1)
                    x = rng.integers(sample.shape[1] - CROP + 1)
                    crop = np.rot90(sample[y : y + CROP, x : x + CROP], rng.integers(4))
                    crops.append(crop[:, ::-1] if rng.integers(2) else crop)
                rows.append(np.concatenate(crops, axis=1))
            chunk = np.concatenate(rows, axis=0)
            image[top : top + CHUNK, left : left + CHUNK] = chunk[
                : min(CHUNK, size - top), : min(CHUNK, size - left)
            ]
    return {
        "shape": [size, size],
        "dtype": "uint16",
        "chunks": [CHUNK, CHUNK],
        "write_s": time.perf_counter() - started,
        "bytes_uncompressed": size * size * 2,
        "bytes_on_disk": folder_bytes(path),
    }


def folder_bytes(path: Path) -> int:
    """Return the bytes of all files under `path`."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def store_bytes_uncompressed(path: Path) -> int:
    """Return the bytes of every array in a zarr store, as if in memory."""
    import zarr

    members = zarr.open_group(path, mode="r").members(max_depth=None)
    return sum(node.nbytes for _, node in members if isinstance(node, zarr.Array))


# --------------------------------------------------------------------------- children
def resident_bytes() -> int:
    """Return this process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_virtual_bytes() -> int:
    """Return this process's peak address space so far (what RLIMIT_AS limits)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmPeak:"))
    return int(line.split()[1]) * 1024


def peak_resident_bytes() -> int:
    """Return this process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def phase_of(message: str) -> str:
    """Name the step a progress message belongs to."""
    if message.startswith(("predicting", "predicted")):
        return "network (tiles)"
    if message.startswith("class probabilities"):
        return "softmax and classes"
    if message.startswith("separated objects"):
        return "objects"
    if message.startswith("resolution level"):
        return "pyramid"
    return message


def child(arguments: argparse.Namespace) -> None:
    """Segment one image in this process and print what it cost as JSON."""
    if arguments.limit_gib:
        limit = int(arguments.limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from napari_unet_lab.core.predict.larger_than_memory import iter_predict_to_zarr
    from napari_unet_lab.core.predict.segment import iter_segment

    model, info = threshold_unet()
    started = time.perf_counter()
    phases: dict[str, float] = {}
    baseline = resident_bytes()
    if arguments.in_memory:
        import zarr

        image = zarr.open_group(arguments.image, mode="r")["0"][...]
        work = iter_segment(model, info, image, tile_size=arguments.tile_size)
        phase, phase_start = "read image", started
    else:
        work = iter_predict_to_zarr(
            model, info, arguments.image, arguments.store, tile_size=arguments.tile_size
        )
        phase, phase_start = "open", started
    objects = None
    while True:
        try:
            progress = next(work)
        except StopIteration as stop:
            if arguments.in_memory:
                objects = int(stop.value.objects.max())
            break
        name = phase_of(progress.message)
        if name != phase:
            now = time.perf_counter()
            phases[phase] = phases.get(phase, 0.0) + now - phase_start
            phase, phase_start = name, now
    now = time.perf_counter()
    phases[phase] = phases.get(phase, 0.0) + now - phase_start
    if not arguments.in_memory:
        import zarr

        objects = zarr.open_group(arguments.store, mode="r").attrs["napari-unet-lab"]
        objects = objects["object_count"]
    print(
        json.dumps(
            {
                "seconds": now - started,
                "phases_s": phases,
                "baseline_rss_bytes": baseline,
                "peak_rss_bytes": peak_resident_bytes(),
                "peak_address_space_bytes": peak_virtual_bytes(),
                "torch_threads": torch.get_num_threads(),
                "objects": objects,
            }
        )
    )


def run_child(
    image: Path, store: Path | None, tile_size: int, limit_gib: float | None
) -> dict[str, Any]:
    """Run `child` in a fresh Python process; return its JSON plus how it ended."""
    command = [sys.executable, "-m", "benchmarks.bench_large", "--child", str(image)]
    command += ["--tile-size", str(tile_size)]
    command += ["--store", str(store)] if store else ["--in-memory"]
    if limit_gib:
        command += ["--limit-gib", str(limit_gib)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    if done.returncode != 0:
        return {"failed": True, "returncode": done.returncode, "stderr": done.stderr[-3000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ main
def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_large", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--sizes", default="2048,8192,16384", help="image edges in pixels, comma-separated"
    )
    parser.add_argument(
        "--in-memory-sizes",
        default="2048,8192",
        help="sizes also segmented in memory with `segment`, for comparison ('' for none)",
    )
    parser.add_argument(
        "--limit-gib",
        type=float,
        help=f"address-space limit (RLIMIT_AS) of the zarr runs, GiB ({LIMIT_GIB}); 0 for none; "
        "runs in memory get none",
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--workdir", type=Path, help="where images and stores go (a temp dir)")
    parser.add_argument("--out", type=Path, help="JSON file (results/large-cpu.json)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1024 px, no JSON")
    # the child process, started by the parent
    parser.add_argument("--child", dest="image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.sizes, arguments.in_memory_sizes = "1024", "1024"
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, write the JSON file; always return 0."""
    arguments = parse_arguments(argv)
    if arguments.image is not None:
        child(arguments)
        return 0
    sizes = [int(s) for s in arguments.sizes.split(",") if s]
    in_memory = {int(s) for s in arguments.in_memory_sizes.split(",") if s}
    limit = (LIMIT_GIB if arguments.limit_gib is None else arguments.limit_gib) or None
    workdir = Path(arguments.workdir or tempfile.mkdtemp(prefix="bench_large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model, _ = threshold_unet()
    info = describe_machine(torch.device("cpu"))
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    results = []
    try:
        for size in sizes:
            image_path = workdir / f"nuclei-{size}.zarr"
            image = write_nuclei_image(image_path, size)
            store = workdir / f"prediction-{size}.zarr"
            print(f"{size} x {size}: segmenting into zarr ...", file=sys.stderr)
            run = run_child(image_path, store, arguments.tile_size, limit)
            row = {"size": size, "image": image, "method": "predict_to_zarr", **run}
            row["address_space_limit_gib"] = limit
            if not run.get("failed"):
                row["store_bytes_on_disk"] = folder_bytes(store)
                row["store_bytes_uncompressed"] = store_bytes_uncompressed(store)
            results.append(row)
            shutil.rmtree(store, ignore_errors=True)
            if size in in_memory:
                print(f"{size} x {size}: segmenting in memory ...", file=sys.stderr)
                run = run_child(image_path, None, arguments.tile_size, None)
                row = {"size": size, "image": image, "method": "segment", **run}
                results.append({**row, "address_space_limit_gib": None})
            shutil.rmtree(image_path, ignore_errors=True)
    finally:
        if arguments.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_average_end"] = list(os.getloadavg())
    print_table(results)
    report = {
        "benchmark": "large",
        "command": " ".join(["python -m benchmarks.bench_large", *(argv or sys.argv[1:])]),
        "machine": info,
        "settings": {
            "tile_size": arguments.tile_size,
            "image_chunks": CHUNK,
            "store_chunks": 512,
            "address_space_limit_gib": limit,
            "peak": "ru_maxrss of the child process that segments one image",
            "baseline": "resident memory of that process after imports and model setup",
        },
        "model": {
            "description": threshold_unet.__doc__.split("\n")[0],
            "config": model.config.to_dict(),
            "parameters": model.parameter_count(),
        },
        "results": results,
    }
    out = arguments.out
    if out is None and not arguments.quick:
        out = RESULTS / "large-cpu.json"
    write_report(report, out)
    return 0


def print_table(results: list[dict[str, Any]]) -> None:
    """Print one line per run."""
    mib = 2**20
    print(
        f"{'image':>13} {'method':>16} {'image MiB':>10} {'written MiB':>12} "
        f"{'limit GiB':>9} {'peak RSS MiB':>12} {'before MiB':>10} {'s':>7} {'Mpx/s':>6}"
    )
    for row in results:
        if row.get("failed"):
            print(f"{row['size']:>6} x {row['size']:<6} {row['method']:>16} FAILED")
            continue
        pixels = row["size"] ** 2
        written = row.get("store_bytes_uncompressed", 0) / mib
        limit = row.get("address_space_limit_gib") or "-"
        print(
            f"{row['size']:>6} x {row['size']:<6} {row['method']:>16} "
            f"{row['image']['bytes_uncompressed'] / mib:>10.0f} {written:>12.0f} {limit:>9} "
            f"{row['peak_rss_bytes'] / mib:>12.0f} {row['baseline_rss_bytes'] / mib:>10.0f} "
            f"{row['seconds']:>7.1f} {pixels / row['seconds'] / 1e6:>6.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
