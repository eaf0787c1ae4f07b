"""Seeded mutations of a model file, chosen in every widget: used, or refused in plain words.

The core and the command line are fuzzed in tests/core/model/test_model_fuzz.py;
here a seeded subset of the same mutations goes through the one model chooser
of each widget (Predict's Model, Train's Start from, Look inside's Model), as a
user picks a file: no exception ever escapes (none reaches ``sys.excepthook`` or
``threading.excepthook``), the chooser shows the core's refusal word for word,
pressing the widget's button either works or says why, the widget stays usable
for a good model afterwards, and a pickle in place of the weights is never run.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest
from tests.core.model.test_model_fuzz import MARKER, SEED, make_mutations, save_small_model

from napari_unet_lab.core.model.files import (
    ModelFileError,
    load_model,
    read_model_info,
)
from napari_unet_lab.gui.inspect_widget import InspectWidget
from napari_unet_lab.gui.messages import sentence
from napari_unet_lab.gui.predict_widget import PredictWidget
from napari_unet_lab.gui.train_widget import TrainWidget

IN_WIDGETS = 20  # mutations per widget, pickles included
PICKLES = 5
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def mutated_files(tmp_path_factory):
    """IN_WIDGETS mutated model files, and what the core says of each (None: usable)."""
    root = tmp_path_factory.mktemp("mutated")
    (root / "original").mkdir()
    original = save_small_model(root / "original")
    description = json.loads(original.read_text())
    weights = original.with_suffix(".safetensors").read_bytes()
    mutations = make_mutations(description, weights, np.random.default_rng(SEED))
    rng = np.random.default_rng(SEED + 2)
    pickles = [m for m in mutations if "pickle" in m.label][:PICKLES]
    others = [m for m in mutations if "pickle" not in m.label]
    chosen = pickles + [others[i] for i in rng.choice(len(others), IN_WIDGETS - PICKLES, False)]
    files = []
    for index, mutation in enumerate(chosen):
        folder = root / f"{index:02d}"
        folder.mkdir()
        text, data = mutation.change(folder, description, weights)
        (folder / "tiny.json").write_bytes(text)
        if data == "folder":
            (folder / "tiny.safetensors").mkdir()
        elif data is not None:
            (folder / "tiny.safetensors").write_bytes(data)
        files.append((mutation.label, folder / "tiny.json", *_core_says(folder / "tiny.json")))
    return original, files


def _core_says(path):
    """Return (refusal of the description, refusal of the weights); None where accepted."""
    try:
        read_model_info(path)
    except ModelFileError as refusal:
        return str(refusal), None
    try:
        load_model(path)
    except ModelFileError as refusal:
        return None, str(refusal)
    return None, None


@pytest.fixture
def uncaught(monkeypatch):
    """Exceptions that escaped to Python's hooks, in the main thread or a worker."""
    escaped = []
    monkeypatch.setattr(sys, "excepthook", lambda *info: escaped.append(info[1]))
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    return escaped


def _shown(widget) -> bool:
    return not widget.native.isHidden()


def _check_chooser(chooser, label, refused):
    if refused is None:
        assert chooser.info is not None and not _shown(chooser.problem), label
    else:
        assert chooser.info is None, label
        assert _shown(chooser.problem) and chooser.problem.value == sentence(refused), label


def test_widgets_use_or_refuse_every_mutated_model_file(
    qtbot, make_napari_viewer, mutated_files, uncaught, errors
):
    original, files = mutated_files
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((40, 44)).astype(np.float32))
    labels = np.zeros((40, 44), np.int32)
    labels[10:20, 10:20] = 1
    viewer.add_labels(labels, name="annotations")
    predict, train, inspect = PredictWidget(viewer), TrainWidget(viewer), InspectWidget(viewer)
    for widget in (predict, train, inspect):
        viewer.window.add_dock_widget(widget)
    assert predict.image.value is image and train.pairs.annotations.value is not None
    train.settings.steps.value = 2
    train.settings.patch_size.value = 32

    refused_somewhere = 0
    for label, path, refused, refused_loading in files:
        for chooser in (predict.model, train.start_from, inspect.model):
            chooser.choose_file(path)
            _check_chooser(chooser, label, refused)
        says = refused or refused_loading
        refused_somewhere += says is not None

        shown_before = len(errors)
        predict.start()
        qtbot.waitUntil(lambda: not predict.running, timeout=TIMEOUT_MS)
        inspect.show_feature_maps()
        qtbot.waitUntil(lambda: not inspect.running, timeout=TIMEOUT_MS)
        if says is not None:
            train.start()  # refused before any thread starts
            assert not train.running, label
            assert errors[shown_before:] == [sentence(says)] * 3, label
            assert predict.status.value == sentence(says), label
        else:
            assert errors[shown_before:] == [], label
            assert predict.status.value.startswith("Found "), label
        assert predict.run_button.enabled and inspect.features_button.enabled, label
        assert train.controls.start_button.enabled, label
        assert not (path.parent / MARKER).exists(), label

    assert refused_somewhere >= IN_WIDGETS // 2 and refused_somewhere < IN_WIDGETS
    assert uncaught == []

    # still usable: the original model segments, trains and shows what it sees
    for chooser in (predict.model, train.start_from, inspect.model):
        chooser.choose_file(original)
    shown_before = len(errors)
    predict.start()
    qtbot.waitUntil(lambda: not predict.running, timeout=TIMEOUT_MS)
    inspect.show_feature_maps()
    qtbot.waitUntil(lambda: not inspect.running, timeout=TIMEOUT_MS)
    train.start()
    qtbot.waitUntil(lambda: not train.running, timeout=TIMEOUT_MS)
    assert errors[shown_before:] == []
    assert "Found " in predict.status.value and train.run is not None and train.run.step == 2
    assert uncaught == []
