"""The one model chooser, shared by the Predict, Train and Look-inside widgets."""

import json

import numpy as np
import pytest

from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.gui.inspect_widget import InspectWidget
from napari_unet_lab.gui.model_chooser import MODEL_FROM_FILE, ModelChooser
from napari_unet_lab.gui.predict_widget import PredictWidget
from napari_unet_lab.gui.train_widget import TrainWidget

TIMEOUT_MS = 60_000

BAD_MODEL_FILES = {
    "not-json": ("not json at all", "is not valid JSON"),
    "other-format": (json.dumps({"format": "something else"}), "is not a napari-unet-lab model"),
    "bad-version": (
        json.dumps({"format": "napari-unet-lab model", "format_version": "x"}),
        "not a valid model description",
    ),
    "bad-architecture": (
        json.dumps(
            {"format": "napari-unet-lab model", "architecture": {"depth": 99}, "class_names": []}
        ),
        "not a valid model description",
    ),
}


def shown(widget) -> bool:
    """Whether a widget shows once its dock does (magicgui's `visible` needs a shown window)."""
    return not widget.native.isHidden()


def test_lists_built_in_models_then_extras_then_model_file(qtbot):
    chooser = ModelChooser("Start from", first=lambda: [("go on", "go on")], last=[("new", "new")])
    texts = [text for text, _ in chooser.choice._default_choices()]
    built_in = [f"{name} (built-in)" for name in builtin_models()]
    assert texts == ["go on", *built_in, "new", MODEL_FROM_FILE]
    chooser.choice.value = "new"
    assert chooser.path is None and chooser.info is None and not shown(chooser.problem)
    with pytest.raises(ValueError, match="choose a model file"):
        chooser.load()


def test_a_picked_file_is_read_once_and_loaded(qtbot, tiny_model_file):
    chooser = ModelChooser()
    assert not shown(chooser.file)
    path = tiny_model_file(name="mine")
    chooser.choose_file(path)
    assert shown(chooser.file) and chooser.path == path
    assert chooser.info.name == "mine" and not shown(chooser.problem)
    model, info = chooser.load()
    assert info.name == "mine" and model.config == info.config


@pytest.mark.parametrize("bad", list(BAD_MODEL_FILES))
def test_a_bad_file_says_why_instead_of_raising(qtbot, tmp_path, bad):
    text, message = BAD_MODEL_FILES[bad]
    path = tmp_path / f"{bad}.json"
    path.write_text(text)
    chooser = ModelChooser()
    chooser.choose_file(path)
    assert chooser.info is None
    assert shown(chooser.problem) and chooser.problem.value[:1].isupper()
    assert message.lower() in chooser.problem.value.lower() and path.name in chooser.problem.value
    with pytest.raises(ValueError, match=message):
        chooser.load()


def test_every_widget_uses_the_one_chooser(make_napari_viewer):
    viewer = make_napari_viewer()
    for widget, chooser in [
        (predict := PredictWidget(viewer), predict.model),
        (inspect := InspectWidget(viewer), inspect.model),
        (train := TrainWidget(viewer), train.start_from),
    ]:
        assert isinstance(chooser, ModelChooser)
        widget.close()


@pytest.mark.parametrize("bad", list(BAD_MODEL_FILES))
def test_bad_model_file_in_look_inside_leaves_layers_working(
    qtbot, make_napari_viewer, tmp_path, tiny_model_file, errors, bad
):
    """Layer events refresh the widget's choices; a bad model file must not break them."""
    text, message = BAD_MODEL_FILES[bad]
    path = tmp_path / f"{bad}.json"
    path.write_text(text)
    viewer = make_napari_viewer()
    widget = InspectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choose_file(path)
    assert shown(widget.model.problem)

    image = viewer.add_image(np.zeros((40, 50), np.float32), name="cells")
    other = viewer.add_image(np.ones((40, 50), np.float32), name="other")
    viewer.layers.remove(other)
    assert [name for name, _ in widget.image._default_choices()] == ["cells"]
    assert widget.stage.choices == ("encoder 0",)  # nothing to read stages from

    widget.image.value = image
    widget.show_feature_maps()
    assert not widget.running
    assert len(errors) == 1 and message.lower() in errors[0].lower()

    widget.model.file.value = tiny_model_file()  # a good file makes the stages appear
    assert not shown(widget.model.problem)
    stages = ("encoder 0", "encoder 1", "bottleneck", "decoder 1", "decoder 0", "logits")
    assert widget.stage.choices == stages
    widget.show_feature_maps()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(errors) == 1 and "cells encoder 0" in viewer.layers  # the stage shown
