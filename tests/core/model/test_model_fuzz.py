"""Seeded mutations of a small model file: each one loads, or is refused in plain words.

A model file can come from anywhere. Whatever is changed in it (a JSON field
removed, given another type or an absurd value, the text cut short, the weights
truncated, bit-flipped, or swapped for a pickle that would create a marker file
if it were ever run), the core entry points (`read_model_info`, `load_model`)
and the command line must either use it or refuse it with a `ModelFileError`
that says why: never another exception, never a run pickle. The command line
answers exit code 4 exactly when the core refuses the file, and 0 otherwise.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet_lab.cli.main import main
from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import intensity_range_for
from napari_unet_lab.core.model.files import (
    ModelFileError,
    ModelInfo,
    load_model,
    read_model_info,
    save_model,
)
from napari_unet_lab.core.model.unet import randomly_initialised

SEED = 20260521
MUTATIONS = 240  # core entry points
CLI_MUTATIONS = 40  # a seeded subset through `napari-unet-lab predict`
EXIT_OK, EXIT_BAD_MODEL = 0, 4
MARKER = "PICKLE-WAS-RUN"

# Values a field can be given instead of its own: other types, absurd sizes, paths.
STRANGE_VALUES = [
    None, True, False, 0, -1, 1, 2, 3, 7, 255, 10**6, 1e6, 2**63, -1e308, 1.5,
    math.nan, math.inf, "", "abc", "valid", "../x.safetensors", "/etc/passwd",
    "tiny.safetensors", "x/../../tiny.safetensors", [], [1], ["a", "b"], {}, {"low": 1},
]  # fmt: skip


class Payload:
    """Unpickling this creates the marker file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass
class Mutation:
    """One change to the model's two files."""

    label: str
    change: Callable[[Path, dict, bytes], tuple[bytes, bytes]]  # (folder, JSON, weights)


def save_small_model(folder: Path) -> Path:
    """Save a small model with a realistic record in `folder`; return its JSON file."""
    config = UNetConfig(base_channels=2, depth=1)
    info = ModelInfo(
        config=config,
        class_names=["background", "nucleus"],
        name="tiny",
        description="a small model to mutate",
        training={
            "settings": {"steps": 10, "patch_size": 60, "augmentation": {"elastic": True}},
            "border_weights": {"w0": 10.0, "sigma": 5.0},
            "patch_input_size": 60,
        },
        provenance={"images": ["a.tif", "b.tif"]},
        metrics={"val_pixel_iou": 0.5},
    )
    return save_model(folder / "tiny", randomly_initialised(config, 0), info)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A small saved model (with a realistic record) and a tiny image for the CLI."""
    folder = tmp_path_factory.mktemp("original")
    json_path = save_small_model(folder)
    image = np.random.default_rng(0).integers(0, 4000, (40, 44)).astype(np.uint16)
    tifffile.imwrite(folder / "image.tif", image)
    return folder, json_path


def _paths(value, prefix=()):
    """Every path (dict keys, list indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _set(description, path, value=None, remove=False):
    changed = copy.deepcopy(description)
    *parents, last = path
    target = changed
    for key in parents:
        target = target[key]
    if remove:
        del target[last]
    else:
        target[last] = value
    return changed


def _json(description) -> bytes:
    return json.dumps(description, indent=2).encode()


def _with_checksum(description, weights: bytes):
    changed = copy.deepcopy(description)
    changed["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
    return changed


def _pickled(kind: str, marker: Path) -> bytes:
    if kind == "torch.save":
        buffer = io.BytesIO()
        torch.save({"head.weight": Payload(marker)}, buffer)
        return buffer.getvalue()
    return pickle.dumps(Payload(marker), protocol=int(kind[-1]))


def make_mutations(description: dict, weights: bytes, rng: np.random.Generator) -> list[Mutation]:
    """Draw the seeded mutations, a mix of every kind."""
    paths = [path for path in _paths(description) if path]
    mutations: list[Mutation] = []

    def add(label, change):
        mutations.append(Mutation(label, change))

    while len(mutations) < MUTATIONS:
        kind = rng.choice(
            ["remove", "retype", "retype", "text", "truncate", "flip", "pickle", "files"]
        )
        if kind == "remove":
            path = paths[rng.integers(len(paths))]
            add(f"remove {path}", lambda f, d, w, p=path: (_json(_set(d, p, remove=True)), w))
        elif kind == "retype":
            path = paths[rng.integers(len(paths))]
            value = STRANGE_VALUES[rng.integers(len(STRANGE_VALUES))]
            add(f"{path} = {value!r}", lambda f, d, w, p=path, v=value: (_json(_set(d, p, v)), w))
        elif kind == "text":
            text = _json(description)
            cut, byte, bit = (
                int(rng.integers(len(text))),
                int(rng.integers(len(text))),
                rng.integers(8),
            )
            flipped = bytearray(text)
            flipped[byte] ^= 1 << int(bit)
            choice = rng.integers(4)
            if choice == 0:
                add(f"JSON cut at {cut}", lambda f, d, w, c=cut, t=text: (t[:c], w))
            elif choice == 1:
                add(f"JSON byte {byte} bit {bit}", lambda f, d, w, t=bytes(flipped): (t, w))
            elif choice == 2:
                add("JSON nested 100000 deep", lambda f, d, w: (b"[" * 100_000, w))
            else:
                add("JSON is binary", lambda f, d, w: (bytes(range(256)) * 4, w))
        elif kind in ("truncate", "flip"):
            checksum = bool(rng.integers(2))
            if kind == "truncate":
                size = int(rng.integers(len(weights)))
                damaged = weights[:size]
                label = f"weights cut to {size} bytes"
            else:
                position, bit = int(rng.integers(len(weights))), int(rng.integers(8))
                flipped = bytearray(weights)
                flipped[position] ^= 1 << bit
                damaged = bytes(flipped)
                label = f"weights byte {position} bit {bit} flipped"
            if checksum:
                add(
                    label + ", checksum updated",
                    lambda f, d, w, x=damaged: (_json(_with_checksum(d, x)), x),
                )
            else:
                add(label, lambda f, d, w, x=damaged: (_json(d), x))
        elif kind == "pickle":
            how = ["protocol 2", "protocol 4", "protocol 5", "torch.save"][rng.integers(4)]
            checksum = ["updated", "removed", "kept"][rng.integers(3)]

            def swap(folder, d, w, how=how, checksum=checksum):
                data = _pickled(how, folder / MARKER)
                if checksum == "updated":
                    d = _with_checksum(d, data)
                elif checksum == "removed":
                    d = _set(d, ("weights", "sha256"), remove=True)
                return _json(d), data

            add(f"weights swapped for a pickle ({how}), checksum {checksum}", swap)
        else:
            choice = rng.integers(3)
            if choice == 0:
                add("weights missing", lambda f, d, w: (_json(d), None))
            elif choice == 1:
                add("weights file is a folder", lambda f, d, w: (_json(d), "folder"))
            else:
                add(
                    "empty weights, checksum updated",
                    lambda f, d, w: (_json(_with_checksum(d, b"")), b""),
                )
    return mutations


def _write(folder: Path, original_folder: Path, mutation: Mutation) -> Path:
    """Write the mutated model into `folder`; return its JSON file."""
    folder.mkdir()
    shutil.copy(original_folder / "image.tif", folder / "image.tif")
    description = json.loads((original_folder / "tiny.json").read_text())
    weights = (original_folder / "tiny.safetensors").read_bytes()
    text, data = mutation.change(folder, description, weights)
    (folder / "tiny.json").write_bytes(text)
    if data == "folder":
        (folder / "tiny.safetensors").mkdir()
    elif data is not None:
        (folder / "tiny.safetensors").write_bytes(data)
    return folder / "tiny.json"


def _core_outcome(json_path: Path, image: np.ndarray) -> str | None:
    """Load through the core; return the refusal's text, or None if the model loaded.

    Any exception other than ModelFileError propagates and fails the test.
    """
    try:
        info = read_model_info(json_path)
    except ModelFileError as refusal:
        with pytest.raises(ModelFileError):  # what the description refuses, loading refuses
            load_model(json_path)
        return str(refusal)
    intensity_range_for(image, info.normalization)  # an accepted normalisation works
    try:
        model, loaded_info = load_model(json_path)
    except ModelFileError as refusal:
        return str(refusal)
    assert loaded_info == info
    assert not model.training
    return None


@pytest.fixture(scope="module")
def outcomes(original, tmp_path_factory):
    """Every mutation, its folder, and the core's answer (refusal text or None)."""
    folder, _ = original
    description = json.loads((folder / "tiny.json").read_text())
    weights = (folder / "tiny.safetensors").read_bytes()
    image = tifffile.imread(folder / "image.tif")
    mutations = make_mutations(description, weights, np.random.default_rng(SEED))
    root = tmp_path_factory.mktemp("mutations")
    found, uncaught = [], []
    for index, mutation in enumerate(mutations):
        json_path = _write(root / f"{index:03d}", folder, mutation)
        try:
            found.append((mutation, json_path, _core_outcome(json_path, image)))
        except Exception as error:  # noqa: BLE001  (collected, reported below)
            uncaught.append(f"{mutation.label}: {type(error).__name__}: {error}")
    return found, uncaught


def test_every_mutation_loads_or_is_refused_in_plain_words(outcomes, original) -> None:
    found, uncaught = outcomes
    assert uncaught == []
    assert len(found) >= 200
    refusals = [text for _, _, text in found if text is not None]
    assert all(text.strip() for text in refusals)
    # widgets capitalise the first letter: a message starting with "tiny.json" would read
    # "Tiny.json", so messages start with words
    assert not [text for text in refusals if text.startswith(("tiny", "Tiny"))]
    # both kinds occur: the fuzzing reaches the weights, not only the JSON check
    assert len(refusals) >= 100 and len(found) - len(refusals) >= 20
    assert any("not a readable safetensors file" in text for text in refusals)
    assert any("damaged" in text for text in refusals)


def test_no_pickle_is_ever_run(outcomes) -> None:
    found, _ = outcomes
    pickles = [path for mutation, path, _ in found if "pickle" in mutation.label]
    assert len(pickles) >= 10
    assert not [path for path in pickles if (path.parent / MARKER).exists()]


def test_the_command_line_exits_4_exactly_when_the_model_is_refused(outcomes, capsys) -> None:
    found, _ = outcomes
    rng = np.random.default_rng(SEED + 1)
    # half refused, half accepted, so that both exit codes are checked
    refused = [item for item in found if item[2] is not None]
    accepted = [item for item in found if item[2] is None]
    half = CLI_MUTATIONS // 2
    chosen = [refused[i] for i in rng.choice(len(refused), half, replace=False)]
    chosen += [accepted[i] for i in rng.choice(len(accepted), half, replace=False)]
    wrong = []
    for mutation, json_path, refusal in chosen:
        folder = json_path.parent
        status = main(
            ["predict", str(json_path), str(folder / "image.tif"), "-o", str(folder / "out"), "-q"]
        )
        error = capsys.readouterr().err
        expected = EXIT_OK if refusal is None else EXIT_BAD_MODEL
        if status != expected or (refusal is not None and refusal not in error):
            wrong.append(f"{mutation.label}: exit {status}, expected {expected}: {error.strip()}")
        if status == EXIT_OK:
            assert (folder / "out" / "image_objects.tif").is_file()
        assert not (folder / MARKER).exists()
    assert wrong == []
