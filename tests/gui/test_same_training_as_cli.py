"""The Train widget and ``napari-unet-lab train`` train the same way: one pipeline in the core.

Same annotations (instance masks), same settings, same seed, on the CPU: the targets, the
loss weights, the trained network and its model file must be the same, apart from what
names the data and the tool, where the files lie, and how long it took.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from tests import synthetic

from napari_unet_lab.cli import train as cli_train
from napari_unet_lab.cli.main import main
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.gui.train.start_from import NEW_NETWORK
from napari_unet_lab.gui.train_widget import TrainWidget

TIMEOUT_MS = 120_000
STEPS, BATCH, PATCH, RATE, VALIDATE_EVERY, SEED = 3, 2, 60, 0.01, 10, 7

# What may differ, and why: the tool names the data its own way (file names, layer names),
# says in its own words what it made, records its command line, and takes its own time.
NAMES_PATHS_AND_TIMES = {
    ("name",),
    ("description",),
    ("weights", "file"),
    ("training", "training_seconds"),
    ("training", "command"),
    ("provenance", "images"),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _without(description: dict, keys: set[tuple[str, ...]]) -> dict:
    description = json.loads(json.dumps(description))  # a deep copy
    for key in keys:
        *parents, last = key
        part = description
        for parent in parents:
            part = part.get(parent, {})
        part.pop(last, None)
    return description


def _differences(a, b, where=()) -> list[str]:
    """List every key path at which two JSON values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            line
            for key in sorted(set(a) | set(b))
            for line in _differences(
                a.get(key, "<missing>"), b.get(key, "<missing>"), (*where, key)
            )
        ]
    return [] if a == b else [f"{'.'.join(map(str, where))}: CLI {a!r}, widget {b!r}"]


@pytest.mark.parametrize("start_from", ["model file", "new network"])
def test_widget_and_cli_train_the_same_network(
    qtbot, make_napari_viewer, tiny_model_file, monkeypatch, tmp_path, errors, start_from
):
    image, labels = synthetic.bright_disks((90, 110), seed=3, count=10, radii=(5, 9))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "cells.tif", image)
    tifffile.imwrite(tmp_path / "labels" / "cells.tif", labels.astype(np.uint16))
    base = tiny_model_file() if start_from == "model file" else None

    # the command line, with the run it builds kept for a look at its targets
    runs = []

    def keeping_the_run(*args, **kwargs):
        runs.append((yield from cli_train_prepare(*args, **kwargs)))
        return runs[-1]

    cli_train_prepare = cli_train.prepare_training
    monkeypatch.setattr(cli_train, "prepare_training", keeping_the_run)
    arguments = ["train", str(tmp_path / "images" / "cells.tif"),
                 str(tmp_path / "labels" / "cells.tif"), "-o", str(tmp_path / "cli.json"),
                 "--steps", str(STEPS), "--batch-size", str(BATCH), "--patch-size", str(PATCH),
                 "--learning-rate", str(RATE), "--validate-every", str(VALIDATE_EVERY),
                 "--seed", str(SEED), "--device", "cpu", "--quiet"]  # fmt: skip
    if base is not None:
        arguments += ["--from", str(base)]
    assert main(arguments) == 0
    (cli_run,) = runs

    # the widget, on the same arrays as layers
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.pairs.image.value = viewer.add_image(image, name="cells")
    widget.pairs.annotations.value = viewer.add_labels(labels, name="nuclei")
    if base is not None:
        widget.start_from.choose_file(base)
    else:
        widget.start_from.choice.value = NEW_NETWORK
    settings = widget.settings
    settings.steps.value, settings.batch_size.value, settings.patch_size.value = STEPS, BATCH, PATCH
    settings.learning_rate.value, settings.validate_every.value = RATE, VALIDATE_EVERY
    settings.seed.value, settings.device.value = SEED, "cpu"
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    widget.saving.path.value = tmp_path / "widget.json"
    widget.save()
    assert errors == []
    widget_run = widget.run

    # the same targets, loss weights and class weights
    assert np.array_equal(cli_run.targets[0], widget_run.targets[0])
    assert np.array_equal(cli_run.weights[0], widget_run.weights[0])
    assert np.array_equal(cli_run.class_weights, widget_run.class_weights)
    assert cli_run.losses == widget_run.losses

    # the same network
    cli_model, _ = load_model(tmp_path / "cli.json")
    widget_model, _ = load_model(tmp_path / "widget.json")
    for key, value in cli_model.state_dict().items():
        assert torch.equal(value, widget_model.state_dict()[key]), key

    # the same model file, apart from names, paths and times
    cli_json = json.loads((tmp_path / "cli.json").read_text())
    widget_json = json.loads((tmp_path / "widget.json").read_text())
    differences = _differences(
        _without(cli_json, NAMES_PATHS_AND_TIMES), _without(widget_json, NAMES_PATHS_AND_TIMES)
    )
    assert differences == []
