"""Layer pickers follow the viewer: a sensible layer is chosen, and kept through renames.

Every picker of every widget (Predict's image; Train's image, annotations and
region; Look inside's image) preselects a layer the user made when there is
one, follows layers opened later while the user has not chosen, keeps the
user's choice through renames and moves, and lets go of a removed layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_unet_lab.core.model.builtin import DEFAULT_MODEL, builtin_models
from napari_unet_lab.gui.inspect_widget import InspectWidget
from napari_unet_lab.gui.pickers import LayerPicker, annotation_match
from napari_unet_lab.gui.predict_widget import PredictWidget
from napari_unet_lab.gui.train_widget import TrainWidget

TIMEOUT_MS = 120_000


def _names(picker) -> list[str]:
    """The texts the picker lists, as the user sees them."""
    return [picker.native.itemText(index) for index in range(picker.native.count())]


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def _docked(viewer, widget):
    viewer.window.add_dock_widget(widget)
    return widget


def test_the_first_segment_after_open_sample_just_works(qtbot, viewer, errors):
    """File ▸ Open Sample, then Segment with the default (built-in) model: objects appear."""
    widget = _docked(viewer, PredictWidget(viewer))
    assert widget.image.value is None
    image, truth = viewer.open_sample("napari-unet-lab", "nuclei")
    assert widget.image.value is image
    assert widget.model.path == builtin_models()[DEFAULT_MODEL]

    widget.run_button.changed.emit(True)  # as a click does
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    objects = viewer.layers[f"nuclei_1 objects ({DEFAULT_MODEL})"]
    assert objects.data.shape == image.data.shape and objects.data.max() > 50
    assert widget.status.value.startswith("Found ")
    assert f" objects in nuclei_1 with {DEFAULT_MODEL}." in widget.status.value


def test_a_widget_opened_after_the_sample_preselects_it(viewer):
    image, truth = viewer.open_sample("napari-unet-lab", "nuclei")
    predict = _docked(viewer, PredictWidget(viewer))
    inspect = _docked(viewer, InspectWidget(viewer))
    train = _docked(viewer, TrainWidget(viewer))
    assert predict.image.value is image and inspect.image.value is image
    pairs = train.pairs
    assert pairs.image.value is image and pairs.annotations.value is truth
    assert pairs.region.value is None and pairs.region.current_choice == "whole image"
    # with a pair chosen, Start has what it needs without the user touching a picker
    training, validation = pairs.chosen()
    assert [(p.image, p.annotations) for p in training] == [(image, truth)] and validation == []


def test_a_guess_follows_layers_opened_later_but_a_choice_stays(viewer):
    widget = _docked(viewer, PredictWidget(viewer))
    first = viewer.add_image(np.zeros((20, 20)), name="first")
    second = viewer.add_image(np.zeros((20, 20)), name="second")
    assert widget.image.value is second  # still a guess: follows the newest
    widget.image.value = first  # the user's choice
    viewer.add_image(np.zeros((20, 20)), name="third")
    assert widget.image.value is first
    assert _names(widget.image) == ["-----", "first", "second", "third"]


def test_renaming_keeps_the_choice_and_shows_the_new_name(viewer):
    predict = _docked(viewer, PredictWidget(viewer))
    train = _docked(viewer, TrainWidget(viewer))
    image = viewer.add_image(np.zeros((20, 20)), name="cells")
    other = viewer.add_image(np.zeros((20, 20)), name="other")
    labels = viewer.add_labels(np.zeros((20, 20), np.int32), name="cells labels")
    predict.image.value = image
    train.pairs.image.value = image
    train.pairs.add()

    image.name = "renamed"
    viewer.layers.move(viewer.layers.index(other), 0)
    assert predict.image.value is image and predict.image.current_choice == "renamed"
    assert _names(predict.image) == ["-----", "other", "renamed"]
    assert train.pairs.image.value is image and train.pairs.annotations.value is labels
    assert train.pairs.added.choices == (0,)
    assert train.pairs.added.native.item(0).text() == "renamed ← cells labels (objects)"


def test_removing_the_chosen_layer_chooses_another_or_nothing(viewer):
    predict = _docked(viewer, PredictWidget(viewer))
    inspect = _docked(viewer, InspectWidget(viewer))
    kept = viewer.add_image(np.zeros((20, 20)), name="kept")
    gone = viewer.add_image(np.zeros((20, 20)), name="gone")
    predict.image.value = gone
    inspect.image.value = gone
    viewer.layers.remove(gone)
    assert predict.image.value is kept and inspect.image.value is kept
    viewer.layers.remove(kept)
    assert predict.image.value is None and inspect.image.value is None
    assert _names(predict.image) == ["-----"]


def test_results_of_the_plugin_are_never_guessed(qtbot, viewer, tiny_model_file, errors):
    predict = _docked(viewer, PredictWidget(viewer))
    train = _docked(viewer, TrainWidget(viewer))
    predict.model.choose_file(tiny_model_file())
    image = viewer.add_image(np.random.default_rng(0).random((48, 56)), name="cells")
    predict.start()
    qtbot.waitUntil(lambda: not predict.running, timeout=TIMEOUT_MS)
    assert errors == [] and "cells foreground probability (tiny)" in viewer.layers
    # the probability (an Image) and the objects (Labels) arrived after the image
    assert predict.image.value is image and train.pairs.image.value is image
    assert train.pairs.annotations.value is None  # nothing the user painted yet
    painted = viewer.add_labels(np.zeros((48, 56), np.int32), name="Labels")
    assert train.pairs.annotations.value is painted
    # Look inside does not even list them
    inspect = _docked(viewer, InspectWidget(viewer))
    assert _names(inspect.image) == ["-----", "cells"]


def test_annotations_follow_the_image_chosen(viewer):
    train = _docked(viewer, TrainWidget(viewer))
    viewer.open_sample("napari-unet-lab", "nuclei")
    viewer.open_sample("napari-unet-lab", "nuclei_2")
    pairs = train.pairs
    assert pairs.image.value.name == "nuclei_2"
    assert pairs.annotations.value.name == "nuclei_2 ground truth"
    pairs.image.value = viewer.layers["nuclei_1"]
    assert pairs.annotations.value.name == "nuclei_1 ground truth"
    # a choice of the user's is not overridden by choosing another image
    pairs.annotations.value = viewer.layers["nuclei_2 ground truth"]
    pairs.image.value = viewer.layers["nuclei_2"]
    pairs.image.value = viewer.layers["nuclei_1"]
    assert pairs.annotations.value.name == "nuclei_2 ground truth"


def test_a_region_stays_whole_image_until_chosen_and_forgets_a_removed_layer(viewer):
    train = _docked(viewer, TrainWidget(viewer))
    shapes = viewer.add_shapes([[[0, 0], [0, 5], [5, 5], [5, 0]]], name="boxes")
    region = train.pairs.region
    assert region.value is None and _names(region) == ["whole image", "boxes"]
    region.value = shapes
    shapes.name = "my boxes"
    assert region.value is shapes and region.current_choice == "my boxes"
    viewer.layers.remove(shapes)
    assert region.value is None and _names(region) == ["whole image"]


def test_annotation_match_prefers_same_size_named_after_the_image(viewer):
    image = viewer.add_image(np.zeros((30, 40, 3), np.uint8), rgb=True, name="slide")
    named = Labels(np.zeros((30, 40), np.int32), name="slide annotations")
    same_size = Labels(np.zeros((30, 40), np.int32), name="other")
    wrong_size = Labels(np.zeros((40, 30), np.int32), name="slide too")
    scores = [annotation_match(image, labels) for labels in (named, same_size, wrong_size)]
    assert scores == [2, 1, 0] and annotation_match(None, named) == 0


def test_closing_a_widget_stops_its_picker_following(viewer):
    widget = PredictWidget(viewer)
    picker = widget.image
    assert isinstance(picker, LayerPicker)
    widget.close()
    viewer.add_image(np.zeros((5, 5)), name="after")
    assert _names(picker) == ["-----"]
    assert isinstance(viewer.layers["after"], Image)
