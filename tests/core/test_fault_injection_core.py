"""Failures injected into the long actions that write files: nothing is lost, nothing half-written.

Each action runs once as it should, to count its steps; then it fails at its
first, middle and last step. Every time the error reaches the caller with its
text, the file or store that was there before is unchanged byte for byte, and
no half-written file or hidden temporary is left beside it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.larger_than_memory import iter_predict_to_zarr
from napari_unet_lab.writers import write_labels_tiff, write_labels_zarr

# What torch says when the CPU cannot allocate a tensor, and the C library when a disk is full.
TORCH_OUT_OF_MEMORY = (
    "DefaultCPUAllocator: can't allocate memory: you tried to allocate 17179869184 bytes. "
    "Error code 12 (Cannot allocate memory)"
)
DISK_FULL = os.strerror(errno.ENOSPC)


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, DISK_FULL)


def first_middle_last(count: int) -> dict[str, int]:
    """The 1-based indices of the first, middle and last of `count` steps."""
    assert count >= 3, f"only {count} steps: too few to fail in the middle"
    return {"first": 1, "middle": (count + 1) // 2, "last": count}


def folder_contents(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder` (hidden ones included), files with their hash."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in sorted(folder.rglob("*"))
    }


class FailingCalls:
    """Counts calls of a function; raises `error` on call number `fail_at` (None: never)."""

    def __init__(self, function, error: Exception | None = None, fail_at: int | None = None):
        self.function, self.error, self.fail_at, self.calls = function, error, fail_at, 0
        self.lock = threading.Lock()  # the larger-than-memory path may call from threads

    def count(self) -> None:
        """Count one call; raise the error if it is the one to fail."""
        with self.lock:
            self.calls += 1
            failing = self.calls == self.fail_at
        if failing:
            raise self.error

    def __call__(self, *args, **kwargs):
        self.count()
        return self.function(*args, **kwargs)

    def __get__(self, instance, owner=None):
        # set on a class (UNet.forward, zarr.Array.__setitem__), it binds as a method does
        return self if instance is None else functools.partial(self, instance)


def failing_for(path: Path, function):
    """`function` (os.replace, os.rename, os.fsync) failing when it is about `path`.

    A renaming to `path` fails, and so does flushing any file: the file written.
    """
    flushing = function is os.fsync

    def call(*args, **kwargs):
        if flushing or Path(args[1]) == path:
            raise disk_full()
        return function(*args, **kwargs)

    return call


def labels_image(shape=(1100, 700)) -> np.ndarray:
    # 1100 rows: three bands of 512-row chunks, then two smaller levels of the pyramid
    rng = np.random.default_rng(0)
    return rng.integers(0, 40, shape, dtype=np.uint16)


# ------------------------------------------------------------------ TIFF writer
class FillingDisk:
    """A file whose `write` fails once `fail_at` writes were asked for, as a full disk does."""

    def __init__(self, file, counter: FailingCalls):
        self._file, self._counter = file, counter

    def write(self, data):
        self._counter.count()
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _tiff_writes(monkeypatch, fail_at: int | None) -> FailingCalls:
    """Count (and fail) the writes the TIFF writer makes to its file."""
    counter = FailingCalls(None, disk_full(), fail_at)
    imwrite = tifffile.imwrite

    def imwrite_on_filling_disk(file, *args, **kwargs):
        return imwrite(FillingDisk(file, counter), *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite_on_filling_disk)
    return counter


def test_tiff_writer_failing_at_any_step_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "nuclei.tif"
    old = labels_image((64, 64))
    write_labels_tiff(str(path), old, {"scale": (0.5, 0.5)})
    with monkeypatch.context() as patch:
        writes = _tiff_writes(patch, None)
        write_labels_tiff(str(path), labels_image(), {"scale": (0.5, 0.5)})
    count = writes.calls
    write_labels_tiff(str(path), old, {"scale": (0.5, 0.5)})  # back to the old file
    before = folder_contents(tmp_path)

    for where, step in first_middle_last(count).items():
        with monkeypatch.context() as patch:
            _tiff_writes(patch, step)
            with pytest.raises(OSError, match=DISK_FULL):
                write_labels_tiff(str(path), labels_image(), {"scale": (0.5, 0.5)})
        assert folder_contents(tmp_path) == before, f"failing at the {where} write"

    # after the last byte: flushing it to disk, then putting the file in place
    for where, name in [("flushing", "fsync"), ("publishing", "replace")]:
        with monkeypatch.context() as patch:
            patch.setattr(os, name, failing_for(path, getattr(os, name)))
            with pytest.raises(OSError, match=DISK_FULL):
                write_labels_tiff(str(path), labels_image(), {"scale": (0.5, 0.5)})
        assert folder_contents(tmp_path) == before, f"failing while {where}"
    assert np.array_equal(tifffile.imread(path), old)


# ------------------------------------------------------------------ OME-Zarr writer
def _chunk_writes(monkeypatch, fail_at: int | None) -> FailingCalls:
    """Count (and fail) the writes of blocks into zarr arrays."""
    counter = FailingCalls(zarr.Array.__setitem__, disk_full(), fail_at)
    monkeypatch.setattr(zarr.Array, "__setitem__", counter)
    return counter


def test_zarr_writer_failing_at_any_step_leaves_no_store(tmp_path, monkeypatch):
    (tmp_path / "other.zarr").mkdir()  # something of the user's beside it, never touched
    (tmp_path / "other.zarr" / "data").write_bytes(b"the user's")
    with monkeypatch.context() as patch:
        writes = _chunk_writes(patch, None)
        write_labels_zarr(str(tmp_path / "counted.zarr"), labels_image(), {"name": "nuclei"})
    count = writes.calls
    before = folder_contents(tmp_path)
    path = tmp_path / "nuclei.zarr"

    for where, step in first_middle_last(count).items():
        with monkeypatch.context() as patch:
            _chunk_writes(patch, step)
            with pytest.raises(OSError, match=DISK_FULL):
                write_labels_zarr(str(path), labels_image(), {"name": "nuclei"})
        assert folder_contents(tmp_path) == before, f"failing at the {where} block"

    # after the last block: putting the store in place
    with monkeypatch.context() as patch:
        patch.setattr(os, "rename", failing_for(path, os.rename))
        with pytest.raises(OSError, match=DISK_FULL):
            write_labels_zarr(str(path), labels_image(), {"name": "nuclei"})
    assert folder_contents(tmp_path) == before


# ------------------------------------------------------------------ larger than memory
@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    config = UNetConfig(in_channels=1, base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "object"], name="tiny")
    return UNet(config), info


def _predict_to_zarr(tiny_model, store: Path, **kwargs):
    model, info = tiny_model
    image = np.random.default_rng(0).random((150, 170)).astype(np.float32)
    # small tiles, chunks and object blocks: several steps of each stage
    return iter_predict_to_zarr(
        model,
        info,
        image,
        store,
        tile_size=128,
        chunk_size=64,
        object_block_size=96,
        object_margin=16,
        **kwargs,
    )


def _forward_calls(monkeypatch, fail_at: int | None) -> FailingCalls:
    counter = FailingCalls(UNet.forward, RuntimeError(TORCH_OUT_OF_MEMORY), fail_at)
    monkeypatch.setattr(UNet, "forward", counter)
    return counter


def test_larger_than_memory_prediction_failing_keeps_the_old_store(
    tmp_path, monkeypatch, tiny_model
):
    store = tmp_path / "prediction.zarr"
    with monkeypatch.context() as patch:
        forward = _forward_calls(patch, None)
        records = list(_predict_to_zarr(tiny_model, store))
    before = folder_contents(tmp_path)
    assert "prediction.zarr/.zattrs" in before  # the store made by the run that went well

    # the network fails (out of memory) at its first, middle and last batch of tiles
    for where, call in first_middle_last(forward.calls).items():
        with monkeypatch.context() as patch:
            _forward_calls(patch, call)
            # the engine retries with smaller batches, then says what did not fit
            with pytest.raises(MemoryError, match="ran out of memory for a single tile"):
                list(_predict_to_zarr(tiny_model, store, overwrite=True))
        assert folder_contents(tmp_path) == before, f"failing at the {where} forward pass"

    # any step fails: tiles, probabilities, objects, resolution levels
    for where, step in first_middle_last(len(records)).items():
        run = _predict_to_zarr(tiny_model, store, overwrite=True)
        for _ in range(step):
            next(run)
        with pytest.raises(MemoryError):
            run.throw(MemoryError())
        assert folder_contents(tmp_path) == before, f"failing after the {where} step"

    # Cancel closes the generator: the unfinished store goes too
    run = _predict_to_zarr(tiny_model, store, overwrite=True)
    for _ in range(len(records) // 2):
        next(run)
    run.close()
    assert folder_contents(tmp_path) == before
