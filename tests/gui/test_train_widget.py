"""The Train widget in a real napari viewer: training in its worker, live feedback, saving."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from tests import synthetic

from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.train import TrainingProgress
from napari_unet_lab.gui.train.start_from import CONTINUE
from napari_unet_lab.gui.train_widget import TrainWidget

TIMEOUT_MS = 120_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bright_disks(shape=(120, 150), seed=0):
    return synthetic.bright_disks(shape, seed, count=13, radii=(6, 11))


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    image, labels = bright_disks()
    image_layer = viewer.add_image(image, name="cells", scale=(0.5, 0.5), translate=(3, 4))
    labels_layer = viewer.add_labels(labels, name="nuclei", scale=(0.5, 0.5), translate=(3, 4))
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.pairs.image.value = image_layer
    widget.pairs.annotations.value = labels_layer
    widget.start_from.choose_file(tiny_model_file())
    widget.settings.steps.value = 30
    widget.settings.batch_size.value = 2
    widget.settings.patch_size.value = 60
    widget.settings.learning_rate.value = 0.01
    widget.settings.preview_every.value = 3
    widget.settings.validate_every.value = 10
    return viewer, widget


class EventLoopWatch:
    """Longest gap between ticks of a 10 ms timer on napari's event loop."""

    def __init__(self):
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *_):
        self.timer.stop()

    @property
    def longest_gap_ms(self) -> float:
        return 1000 * float(np.max(np.diff(self.ticks)))


def test_trains_with_live_plot_and_preview_and_never_stalls_napari(
    qtbot, viewer_and_widget, errors, tmp_path
):
    viewer, widget = viewer_and_widget
    widget.pairs.validation.value = None
    widget.settings.steps.value = 60
    widget.start()
    assert widget.running and not widget.controls.start_button.enabled
    # Start makes the preview layers, and napari draws new layers once (compiling shaders,
    # slow in software OpenGL): that happens before the first step, so watch from there
    qtbot.waitUntil(lambda: widget.run is not None, timeout=TIMEOUT_MS)
    with EventLoopWatch() as watch:
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    assert widget.run.step == 60 and len(widget.live.plot.losses) == 60
    assert "Trained 60 steps" in widget.controls.status.value
    # the live preview lies exactly over the part of the image it shows
    preview = next(layer for layer in viewer.layers if layer.name == "cells preview")
    uncertainty = next(layer for layer in viewer.layers if layer.name == "cells uncertainty")
    assert isinstance(preview, Labels) and isinstance(uncertainty, Image)
    assert preview.data.shape == uncertainty.data.shape
    assert preview.data.shape[0] <= 120 and preview.data.shape[1] <= 150
    np.testing.assert_array_equal(preview.scale, (0.5, 0.5))
    assert uncertainty.data.min() >= 0 and uncertainty.data.max() <= 1
    # the user's annotations stay on top, selected, unchanged
    assert viewer.layers[-1].name == "nuclei"
    np.testing.assert_array_equal(viewer.layers["nuclei"].data, bright_disks()[1])
    # napari kept painting and responding all along
    print(f"longest event-loop stall: {watch.longest_gap_ms:.0f} ms")
    assert watch.longest_gap_ms < 100

    widget.saving.path.value = tmp_path / "my_nuclei.json"
    widget.save()
    model, info = load_model(tmp_path / "my_nuclei.json")
    for key, value in widget.run.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu()), key
    description = json.loads((tmp_path / "my_nuclei.json").read_text())
    assert description["training"]["steps_done"] == 60
    assert description["provenance"]["images"] == ["cells ← nuclei (objects)"]
    # saving again never overwrites
    widget.save()
    assert errors and "already exists" in errors[-1]

    # go on training the same network
    first_run = widget.run
    trained = {k: v.clone() for k, v in first_run.model.state_dict().items()}
    widget.start_from.choice.value = CONTINUE
    widget.settings.steps.value = 2
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.run is not first_run and widget.run.step == 2
    assert "go on" in widget.started.origin
    changed = [
        k for k, v in widget.run.model.state_dict().items() if not torch.equal(v, trained[k])
    ]
    assert changed  # it trained on from where it was, on a copy
    for key, value in first_run.model.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_fine_tuning_sees_objects_at_the_model_size_and_previews_on_the_layer(
    qtbot, viewer_and_widget, tiny_model_file, errors, tmp_path
):
    """A model that knows objects twice as large: the run halves the image, not the preview."""
    viewer, widget = viewer_and_widget
    annotated = float(np.median(np.sqrt(4 * np.bincount(bright_disks()[1].ravel())[1:] / np.pi)))
    widget.start_from.choose_file(tiny_model_file(name="large", object_diameter=2 * annotated))
    widget.pairs.validation.value = None
    widget.settings.steps.value = 3
    widget.settings.preview_every.value = 1
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    factor = widget.run.factors[0]
    assert factor == pytest.approx(2.0, rel=0.1)
    assert widget.run.images[0].shape[-2:] == (round(120 * factor), round(150 * factor))
    preview = viewer.layers["cells preview"]
    assert preview.data.shape[0] <= 120 and preview.data.shape[1] <= 150  # the layer's grid
    np.testing.assert_array_equal(preview.scale, (0.5, 0.5))

    widget.saving.path.value = tmp_path / "fine.json"
    widget.save()
    _, info = load_model(tmp_path / "fine.json")
    assert info.object_diameter == pytest.approx(2 * annotated)  # what the network learnt at
    assert info.training["object_size"]["annotation_object_diameter"] == pytest.approx(
        annotated, rel=0.05
    )


def test_validation_pair_is_held_out_and_measured(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.pairs.add()
    image, labels = bright_disks(seed=1)
    widget.pairs.image.value = viewer.add_image(image, name="held out")
    widget.pairs.annotations.value = viewer.add_labels(labels, name="held out nuclei")
    widget.pairs.add()
    assert len(widget.pairs.added.choices) == 2
    widget.pairs.validation.value = 1
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    assert len(widget.run.images) == 1  # the held-out pair is not trained on
    assert [step for step, _ in widget.run.history] == [10, 20, 30]
    assert [step for step, _ in widget.live.plot.validation] == [0, 10, 20, 30]  # 0: before
    assert "validation IoU" in widget.controls.status.value


def test_pause_resume_and_stop(qtbot, viewer_and_widget, errors):
    _, widget = viewer_and_widget
    widget.settings.steps.value = 100_000
    widget.start()
    qtbot.waitUntil(lambda: widget.run is not None and widget.run.step >= 2, timeout=TIMEOUT_MS)
    widget.controls.toggle_pause()
    assert widget.controls.pause_button.text == "Resume" and widget.saving.button.enabled
    qtbot.wait(300)
    paused_at = widget.run.step
    qtbot.wait(500)
    assert widget.run.step <= paused_at + 1  # at most the step under way when paused
    widget.controls.toggle_pause()
    qtbot.waitUntil(lambda: widget.run.step > paused_at + 2, timeout=TIMEOUT_MS)
    widget.controls.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    assert widget.run.step < 100_000 and "Stopped at step" in widget.controls.status.value
    assert widget.saving.button.enabled


def test_annotations_painted_during_training_are_picked_up(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.settings.steps.value = 100_000
    messages = []
    widget.start()
    widget.controls.task.worker.yielded.connect(
        lambda record: messages.append(record) if isinstance(record, str) else None
    )
    qtbot.waitUntil(lambda: widget.run is not None and widget.run.step >= 1, timeout=TIMEOUT_MS)
    nuclei = viewer.layers["nuclei"]
    # a new object, painted as a user would; napari announces this edit before writing it
    nuclei.paint((10, 10), 99, refresh=True)
    qtbot.waitUntil(lambda: any("new annotations" in m for m in messages), timeout=TIMEOUT_MS)
    widget.controls.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    assert (widget.run.targets[0][8:13, 8:13] == 1).any()  # the new object is trained on


def test_scribbles_inside_rectangles(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    _, labels = bright_disks()
    scribbles = np.zeros_like(labels)
    scribbles[labels == 0] = 1
    scribbles[labels > 0] = 2
    layer = viewer.add_labels(scribbles, name="strokes", scale=(0.5, 0.5), translate=(3, 4))
    box = viewer.add_shapes(
        [[[3 + 0.5 * 10, 4 + 0.5 * 20], [3 + 0.5 * 90, 4 + 0.5 * 130]]],
        shape_type="rectangle",
        name="where",
    )
    widget.pairs.annotations.value = layer
    widget.pairs.kind.value = "scribbles"
    widget.pairs.region.value = box
    widget.settings.steps.value = 4
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    annotated = widget.run.targets[0] >= 0
    rows, cols = np.nonzero(annotated)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 90, 20, 130)


def test_a_failed_start_changes_nothing(qtbot, viewer_and_widget, errors, tmp_path):
    """Train, stop, then Start with annotations that hold only background.

    The message says what is wrong; the network trained before stays, to save
    or go on with; no layer is added (no empty preview) and the plot is kept.
    """
    viewer, widget = viewer_and_widget
    widget.settings.steps.value = 100_000
    widget.start()
    qtbot.waitUntil(lambda: widget.run is not None and widget.run.step >= 2, timeout=TIMEOUT_MS)
    widget.controls.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == [] and "Stopped at step" in widget.controls.status.value
    trained, started, steps = widget.run, widget.started, widget.run.step
    losses = list(widget.live.plot.losses)
    for name in ("cells preview", "cells uncertainty"):  # a Start would make them again
        viewer.layers.remove(name)
    widget.pairs.annotations.value = viewer.add_labels(np.zeros((120, 150), np.int32), name="bg")
    names = [layer.name for layer in viewer.layers]

    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(errors) == 1
    assert "only background" in errors[0] and "label at least one object" in errors[0]
    assert widget.controls.status.value == errors[0]
    assert widget.run is trained and widget.started is started and trained.step == steps
    assert [layer.name for layer in viewer.layers] == names
    assert widget.live.plot.losses == losses
    assert widget.saving.button.enabled
    assert CONTINUE in widget.start_from.choice.choices  # still offered

    widget.saving.path.value = tmp_path / "kept.json"
    widget.save()
    model, _ = load_model(tmp_path / "kept.json")
    for key, value in trained.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu()), key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_annotations", "choose an image and its annotations"),
        ("other_shape", "do not match the image"),
        ("only_background", "only background"),
        ("empty_scribbles", "nothing is annotated"),
        ("stack", "training takes 2D images"),
    ],
)
def test_bad_input_gets_a_clear_message(qtbot, viewer_and_widget, errors, change, message):
    viewer, widget = viewer_and_widget
    if change == "no_annotations":
        widget.pairs.annotations.value = None
    elif change == "other_shape":
        widget.pairs.annotations.value = viewer.add_labels(np.ones((50, 50), np.int32))
    elif change == "only_background":
        widget.pairs.annotations.value = viewer.add_labels(np.zeros((120, 150), np.int32))
    elif change == "empty_scribbles":
        widget.pairs.annotations.value = viewer.add_labels(np.zeros((120, 150), np.int32))
        widget.pairs.kind.value = "scribbles"
    elif change == "stack":
        widget.pairs.image.value = viewer.add_image(np.zeros((3, 120, 150), np.float32))
    names = [layer.name for layer in viewer.layers]
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors and message.lower() in errors[-1].lower()
    assert [layer.name for layer in viewer.layers] == names  # no empty preview left behind
    assert widget.run is None and not widget.saving.button.enabled


def test_a_grayscale_model_trains_on_an_rgb_layers_luminance_and_says_so(
    qtbot, viewer_and_widget, errors, monkeypatch
):
    """Issue #12: an RGB layer (stained tissue) fine-tunes a grayscale model, never refused."""
    from napari_unet_lab.core.images import grayscale, intensity_range_for, normalised
    from napari_unet_lab.gui import train_widget

    told = []
    monkeypatch.setattr(train_widget, "show_info", told.append)
    viewer, widget = viewer_and_widget
    image, _ = bright_disks()
    colours = (image[..., None] * np.array([0.9, 0.3, 0.7]) * 200 + 30).astype(np.uint8)
    widget.pairs.image.value = viewer.add_image(colours, rgb=True, name="tissue")
    widget.pairs.validation.value = None
    widget.settings.steps.value = 3
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    assert errors == []
    assert widget.run.step == 3 and widget.run.model.config.in_channels == 1
    luminance = grayscale(colours)  # what prediction feeds the model, bit for bit
    expected = normalised(luminance[None], intensity_range_for(luminance, None))
    np.testing.assert_array_equal(widget.run.images[0], expected)
    assert "RGB image converted to grayscale (luminance) for a grayscale model." in told


def test_shows_weight_map_and_augmented_patches(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.data_views.show_weight_map()
    weights = viewer.layers["cells loss weights"]
    assert weights.data.shape == (120, 150) and weights.data.max() > 2  # borders weigh more
    widget.data_views.show_augmented_patches()
    qtbot.waitUntil(lambda: not widget.data_views.task.running, timeout=TIMEOUT_MS)
    patches = viewer.layers["augmented patches"]
    classes = viewer.layers["augmented classes (0 = ignored)"]
    assert patches.data.shape == (2, 60, 60) and classes.data.shape[1:] == (20, 20)
    assert errors == []


def test_trains_for_three_minutes_by_default_and_says_why(make_napari_viewer):
    widget = TrainWidget(make_napari_viewer())
    options = widget.settings
    assert (options.train_for.value, options.minutes.value) == ("minutes", 3.0)
    assert not options.minutes.native.isHidden() and options.steps.native.isHidden()
    assert options.budget.value == (
        "Stops after 3 minutes, or sooner when validation stops improving; steps take "
        "different times on every machine."
    )
    settings = options.training_settings(fine_tuning=False, base=None)
    assert (settings.minutes, settings.patience) == (3.0, 3)

    options.steps.value = 250  # setting a step count trains for it
    assert options.train_for.value == "steps" and not options.steps.native.isHidden()
    assert options.budget.value == (
        "Stops after 250 steps; steps take different times on every machine."
    )
    settings = options.training_settings(fine_tuning=False, base=None)
    assert (settings.steps, settings.minutes) == (250, None)

    options.patience.value = 0
    options.minutes.value = 1.5  # and minutes again
    assert options.train_for.value == "minutes" and options.steps.native.isHidden()
    assert options.budget.value == (
        "Stops after 1.5 minutes; steps take different times on every machine."
    )
    assert options.training_settings(fine_tuning=False, base=None).minutes == 1.5


def test_a_time_budget_ends_the_run_in_its_worker(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.pairs.validation.value = None
    widget.settings.minutes.value = 0.05  # 3 s
    progress = []
    widget.start()
    widget.controls.task.worker.yielded.connect(
        lambda record: progress.append(record) if isinstance(record, TrainingProgress) else None
    )
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == []
    run = widget.run
    assert run.settings.minutes == 0.05 and run.step == len(progress) >= 1
    # it stopped at the step that found the 3 s spent, not before, and not a step later
    assert run.timing.spent >= 3.0 and all(p.budget_fraction < 1 for p in progress[:-1])
    assert progress[-1].fraction == 1.0 and progress[-1].eta_seconds == 0.0
    assert widget.controls.progress_bar.value == 1000 or not widget.controls.progress_bar.visible
    assert widget.live.plot.total_steps == max(progress[-1].total_steps, run.step)
    assert f"Trained {run.step} steps" in widget.controls.status.value


def test_an_rgb_layer_is_offered_the_built_in_model_that_takes_colours_to_start_from(
    make_napari_viewer, errors
):
    """Fine-tuning on stained tissue starts from the three-channel built-in model."""
    from napari_unet_lab.core.model.builtin import DEFAULT_MODEL, RGB_MODEL, builtin_models

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    gray = viewer.add_image(np.zeros((40, 50), np.uint8), name="gray")
    from napari_unet_lab.samples import load_sample

    tissue = viewer.add_image(load_sample("nuclei_tissue")[0], rgb=True, name="tissue")
    widget.pairs.image.value = tissue
    assert widget.start_from.info.name == RGB_MODEL
    widget.pairs.image.value = gray
    assert widget.start_from.info.name == DEFAULT_MODEL
    widget.start_from.choice.value = builtin_models()["nuclei"]  # the user's own choice stays
    widget.pairs.image.value = tissue
    assert widget.start_from.info.name == "nuclei" and errors == []
