"""What training shows, in a real napari viewer with its worker thread.

Previews on top in the user's colours, the plot's legend and kept step, and augmented
patches drawn in the worker beside the image.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.colormaps import DirectLabelColormap
from tests import synthetic

from napari_unet_lab.core.train import Preview, TrainingResult, ValidationScores
from napari_unet_lab.gui.train.controls import result_text
from napari_unet_lab.gui.train.start_from import CONTINUE
from napari_unet_lab.gui.train_widget import TrainWidget
from napari_unet_lab.gui.training_plot import KEPT_COLOUR

TIMEOUT_MS = 120_000

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    image, labels = synthetic.bright_disks((120, 150), 0, count=13, radii=(6, 11))
    scribbles = np.where(labels > 0, 2, 1).astype(np.int32)  # 1 background, 2 nuclei
    colours = {None: "transparent", 0: "transparent", 1: "blue", 2: "magenta", 3: "lime"}
    image_layer = viewer.add_image(image, name="cells", scale=(0.5, 0.5), translate=(3, 4))
    strokes = viewer.add_labels(scribbles, name="strokes", scale=(0.5, 0.5), translate=(3, 4))
    strokes.colormap = DirectLabelColormap(color_dict=colours)  # the user's own colours
    viewer.add_points([[10, 10]], name="notes")  # the user's, above the annotations
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.pairs.image.value = image_layer
    widget.pairs.annotations.value = strokes
    widget.pairs.kind.value = "scribbles"
    widget.start_from.choose_file(tiny_model_file())
    widget.settings.batch_size.value = 2
    widget.settings.patch_size.value = 60
    widget.settings.learning_rate.value = 0.01
    widget.settings.preview_every.value = 2
    return viewer, widget


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def test_previews_are_on_top_in_the_annotation_colours_then_go_under_them(
    qtbot, viewer_and_widget, errors
):
    viewer, widget = viewer_and_widget
    widget.settings.steps.value = 100_000
    previews: list[Preview] = []
    widget.start()
    widget.controls.task.worker.yielded.connect(
        lambda record: previews.append(record) if isinstance(record, Preview) else None
    )
    # while it trains: what it shows lies over the image and the annotations, shown
    assert _names(viewer) == ["cells", "strokes", "notes", "cells preview", "cells uncertainty"]
    assert all(layer.visible for layer in viewer.layers)
    assert viewer.layers.selection.active is viewer.layers["strokes"]  # painting goes on
    qtbot.waitUntil(lambda: len(previews) >= 2, timeout=TIMEOUT_MS)
    widget.controls.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []

    # one numbering and one palette: "nuclei" is 2 in the strokes and in the preview
    preview, strokes = viewer.layers["cells preview"], viewer.layers["strokes"]
    classes = previews[-1].classes
    np.testing.assert_array_equal(preview.data, np.where(classes > 0, classes + 1, 0))
    for label in (1, 2, 3):
        np.testing.assert_allclose(preview.get_color(label), strokes.get_color(label))
    # afterwards: the annotations back on top of the previews, the user's order as it was
    assert _names(viewer) == ["cells", "cells preview", "cells uncertainty", "strokes", "notes"]


def test_when_training_ends_the_preview_shows_the_network_it_returns(
    qtbot, viewer_and_widget, errors
):
    viewer, widget = viewer_and_widget
    widget.settings.steps.value = 5
    widget.settings.preview_every.value = 100  # mid-run, only the one after step 1
    previews: list[Preview] = []
    widget.start()
    widget.controls.task.worker.yielded.connect(
        lambda record: previews.append(record) if isinstance(record, Preview) else None
    )
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    assert [preview.step for preview in previews] == [1, 5]
    last = previews[-1]
    expected = widget.run.preview_training_image(last.index, last.region).classes
    np.testing.assert_array_equal(last.classes, expected)
    layer = viewer.layers["cells preview"]
    qtbot.waitUntil(
        lambda: np.array_equal(layer.data, np.where(expected > 0, expected + 1, 0)),
        timeout=TIMEOUT_MS,
    )


def test_plot_shows_validation_from_step_0_and_marks_the_kept_step(
    qtbot, viewer_and_widget, errors
):
    viewer, widget = viewer_and_widget
    image, labels = synthetic.bright_disks((120, 150), 1, count=13, radii=(6, 11))
    widget.pairs.add()
    widget.pairs.image.value = viewer.add_image(image, name="held out")
    widget.pairs.annotations.value = viewer.add_labels(np.where(labels > 0, 2, 1), name="held")
    widget.pairs.add()
    widget.pairs.validation.value = 1
    widget.settings.steps.value = 20
    widget.settings.validate_every.value = 10
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []

    plot = widget.live.plot
    # the starting network is validated before the first step
    assert [step for step, _ in plot.validation] == [0, 10, 20]
    assert [step for step, _ in widget.run.history] == [10, 20]
    kept = widget.run.best_step
    assert plot.kept_step == kept
    assert [text for text, _ in plot.legend()] == [
        "loss (smoothed)",
        f"validation IoU {plot.validation[-1][1]:.3f}",
        f"kept: step {kept}",
    ]
    # the kept step is drawn: a green dashed line at its step
    picture = plot.grab().toImage()
    x, area = round(plot.x_of(kept)), plot.plot_area()
    column = [
        picture.pixelColor(dx, y)
        for dx in (x - 1, x, x + 1)
        for y in range(int(area.top()) + 1, int(area.bottom()))
    ]
    assert any(c.green() > 180 and c.red() < 120 and c.blue() < 150 for c in column), KEPT_COLOUR
    # the next Start goes on with the network trained here
    assert widget.start_from.choice.value == CONTINUE


def test_status_says_when_the_kept_weights_are_not_the_last_steps():
    scores = ValidationScores(0.8, 0.88, (0.9, 0.8))
    result = TrainingResult(None, [0.5] * 30, 30, 60.0, scores, 10, True, [(10, scores)])
    text = result_text(result)
    assert text == (
        "Trained 30 steps in 1.0 min; validation IoU 0.800, Dice 0.880 at step 10: the "
        "network keeps the weights of that step, where validation was best, not those of the "
        "last step (30); stopped early: validation no longer improved. Save the model to use it."
    )
    last = TrainingResult(None, [0.5] * 30, 30, 60.0, scores, 30, False, [(30, scores)])
    assert "keeps" not in result_text(last)


def test_augmented_patches_are_drawn_in_the_worker_and_shown_beside_the_image(
    qtbot, viewer_and_widget, errors
):
    viewer, widget = viewer_and_widget
    names = _names(viewer)
    widget.data_views.show_augmented_patches()
    # napari stays free: the patches are drawn in a worker, Start waits for them
    assert widget.data_views.task.running and not widget.controls.start_button.enabled
    assert _names(viewer) == names
    qtbot.waitUntil(lambda: not widget.data_views.task.running, timeout=TIMEOUT_MS)
    assert errors == []
    assert widget.controls.start_button.enabled
    image = viewer.layers["cells"]
    patches = viewer.layers["augmented patches"]
    classes = viewer.layers["augmented classes (0 = ignored)"]
    assert patches.data.shape == (2, 60, 60)
    # beside the image, at its scale, not over it
    np.testing.assert_allclose(patches.scale[1:], image.scale)
    assert patches.extent.world[0][-1] > image.extent.world[1][-1]
    offset = (60 - classes.data.shape[-1]) // 2
    np.testing.assert_allclose(
        classes.translate[1:], patches.translate[1:] + 0.5 * np.array([offset, offset])
    )
    np.testing.assert_allclose(classes.get_color(2), viewer.layers["strokes"].get_color(2))
    assert "right of the image" in widget.controls.status.value
