"""Failures injected into every long action of the dock widgets: nothing lost, nothing stuck.

Each action runs once as it should, in a real napari viewer and its worker
thread, to count the network's forward passes; then the network runs out of
memory at its first, middle and last pass. Every time, a message in plain words
reaches the user (a notification and the widget's status line), the buttons
work again, no layer of the user's changed, and no file changed.

The widgets are opened as the Plugins menu opens them and driven by what the
user sees (button texts, field labels), so that their internals may move.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from magicgui.widgets import ComboBox, Container, Label, PushButton
from qtpy.QtCore import QThreadPool
from tests import synthetic

from napari_unet_lab.core.model.unet import UNet

PLUGIN = "napari-unet-lab"
MODEL_FROM_FILE = "model file…"
TIMEOUT_MS = 60_000
# What torch says when the CPU cannot allocate a tensor.
TORCH_OUT_OF_MEMORY = (
    "[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ driving a widget
def controls(container: Container):
    """Every control in `container`, nested containers included."""
    for control in container:
        yield control
        if isinstance(control, Container):
            yield from controls(control)


def control(widget: Container, words: str):
    """The one control labelled `words`, or a button reading `words`."""
    found = [
        c
        for c in controls(widget)
        if (c.text if isinstance(c, PushButton) else getattr(c, "label", None)) == words
    ]
    assert len(found) == 1, f"{len(found)} controls called {words!r}"
    return found[0]


def click(widget: Container, text: str) -> None:
    button = control(widget, text)
    assert button.enabled, f"{text!r} is disabled"
    button.native.click()


def choose_model_file(widget: Container, path: Path) -> None:
    """Pick "model file…" in the widget's model chooser, then the file."""
    choosers = [c for c in controls(widget) if hasattr(c, "choose_file")]
    if choosers:
        choosers[0].choose_file(path)
        return
    combo = next(
        c for c in controls(widget) if isinstance(c, ComboBox) and MODEL_FROM_FILE in c.choices
    )
    combo.value = MODEL_FROM_FILE
    control(widget, "Model file").value = path


def open_dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def dock_of(viewer, name: str):
    dock, _ = viewer.window.add_plugin_dock_widget(PLUGIN, name)  # the open one, not a new one
    return dock


def status_lines(widget: Container) -> list[str]:
    return [c.value for c in controls(widget) if isinstance(c, Label)]


# ------------------------------------------------------------------ what must not change
def layer_contents(layers) -> list[tuple[str, str, list[np.ndarray]]]:
    """Name, kind and a copy of the data of every layer, in order."""
    contents = []
    for layer in layers:
        data = layer.data if isinstance(layer.data, list) else [layer.data]
        contents.append((layer.name, type(layer).__name__, [np.array(d, copy=True) for d in data]))
    return contents


def same_layers(before, after) -> bool:
    return [(n, k) for n, k, _ in before] == [(n, k) for n, k, _ in after] and all(
        len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        for (_, _, a), (_, _, b) in zip(before, after, strict=True)
    )


def folder_contents(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder` (hidden ones included), files with their hash."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in sorted(folder.rglob("*"))
    }


# ------------------------------------------------------------------ the failure
class ForwardPasses:
    """Counts the network's forward passes in worker threads; runs out of memory at one.

    Passes on napari's own thread (checks before a run starts) are neither
    counted nor failed: the failure is injected into the background run.
    """

    def __init__(self, monkeypatch, seconds: float = 0.0):
        self.calls, self.fail_at = 0, None
        forward = UNet.forward

        def counted_forward(module, *args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                self.calls += 1
                if self.calls == self.fail_at:
                    raise RuntimeError(TORCH_OUT_OF_MEMORY)
                time.sleep(seconds)  # a slower network, to close things mid-run
            return forward(module, *args, **kwargs)

        monkeypatch.setattr(UNet, "forward", counted_forward)

    def fail(self, at: int | None) -> None:
        self.calls, self.fail_at = 0, at


def first_middle_last(count: int) -> dict[str, int]:
    """The 1-based indices of the first, middle and last of `count` passes (some may agree)."""
    assert count >= 1
    return {"first": 1, "middle": (count + 1) // 2, "last": count}


def fails_visibly(qtbot, viewer, widget, start, errors, tmp_path, passes, *, user_layers=None):
    """Run `start` once to count the passes, then make it fail at the first, middle and last.

    `user_layers` (names) are the layers that must not change; all layers by default.
    """
    start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert errors == [], "the run without a failure failed"
    count = passes.calls
    assert count >= 1, "the action never ran the network"

    def watched():
        layers = viewer.layers
        if user_layers is not None:
            layers = [layer for layer in layers if layer.name in user_layers]
        return layer_contents(layers)

    for where, at in first_middle_last(count).items():
        layers, files = watched(), folder_contents(tmp_path)
        passes.fail(at)
        start()
        assert widget.running
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

        case = f"out of memory at the {where} of {count} forward passes"
        assert len(errors) == 1, case
        message = errors.pop()
        assert message.startswith("There was not enough memory for "), (case, message)
        assert message in status_lines(widget), case
        assert same_layers(layers, watched()), case
        assert folder_contents(tmp_path) == files, case
    return count


# ------------------------------------------------------------------ the long actions
def test_segmenting_fails_visibly(
    make_napari_viewer, qtbot, monkeypatch, tiny_model_file, errors, tmp_path
):
    viewer = make_napari_viewer()
    passes = ForwardPasses(monkeypatch)
    layer = viewer.add_image(np.random.default_rng(0).random((150, 170)), name="cells")
    widget = open_dock(viewer, "U-Net: Predict")
    choose_model_file(widget, tiny_model_file())
    control(widget, "Image").value = layer
    control(widget, "Tile size (px)").value = 128  # four tiles: four forward passes
    control(widget, "Tiles per batch").value = 1

    def segment():
        click(widget, "Segment")

    count = fails_visibly(qtbot, viewer, widget, segment, errors, tmp_path, passes)
    assert count >= 3
    assert control(widget, "Segment").enabled and not control(widget, "Cancel").enabled


def test_training_fails_visibly(
    make_napari_viewer, qtbot, monkeypatch, tiny_model_file, errors, tmp_path
):
    viewer = make_napari_viewer()
    passes = ForwardPasses(monkeypatch)
    image, labels = synthetic.bright_disks((120, 150), 0, count=13, radii=(6, 11))
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(labels, name="nuclei")
    widget = open_dock(viewer, "U-Net: Train")
    control(widget, "Image").value = image_layer
    control(widget, "Annotations").value = labels_layer
    choose_model_file(widget, tiny_model_file())
    for words, value in [
        ("Steps", 4),
        ("Patches per step", 1),
        ("Patch size (px)", 60),
        ("Preview every (steps)", 2),
    ]:
        control(widget, words).value = value

    def train():
        click(widget, "Start")

    # previews are the widget's, shown while it trains: only the user's layers are watched
    count = fails_visibly(
        qtbot, viewer, widget, train, errors, tmp_path, passes, user_layers={"cells", "nuclei"}
    )
    assert count >= 4  # one pass per step, and the previews
    assert control(widget, "Start").enabled and not control(widget, "Stop").enabled


@pytest.mark.parametrize(
    ("button", "settings", "least_passes"),
    [
        ("Show feature maps", {}, 1),  # one pass over the part of the image in view
        # 8 pixels a pass, for the trained and the untrained network
        ("Average receptive field", {"Pixels to average": 20}, 3),
    ],
    ids=["feature maps", "receptive field"],
)
def test_looking_inside_fails_visibly(
    make_napari_viewer,
    qtbot,
    monkeypatch,
    tiny_model_file,
    errors,
    tmp_path,
    button,
    settings,
    least_passes,
):
    viewer = make_napari_viewer()
    passes = ForwardPasses(monkeypatch)
    layer = viewer.add_image(np.random.default_rng(0).random((60, 80)), name="cells")
    widget = open_dock(viewer, "U-Net: Look inside")
    choose_model_file(widget, tiny_model_file())
    control(widget, "Image").value = layer
    for words, value in settings.items():
        control(widget, words).value = value

    start = functools.partial(click, widget, button)
    assert fails_visibly(qtbot, viewer, widget, start, errors, tmp_path, passes) >= least_passes
    for text in ("Show feature maps", "Click pixels to probe", "Average receptive field"):
        assert control(widget, text).enabled
    assert not control(widget, "Cancel").enabled


# ------------------------------------------------------------------ closing mid-run
def segmenting(viewer, tiny_model_file):
    layer = viewer.add_image(np.random.default_rng(0).random((600, 600)), name="cells")
    widget = open_dock(viewer, "U-Net: Predict")
    choose_model_file(widget, tiny_model_file())
    control(widget, "Image").value = layer
    control(widget, "Tile size (px)").value = 128  # dozens of tiles
    control(widget, "Tiles per batch").value = 1
    return widget, "U-Net: Predict", "Segment"


def training(viewer, tiny_model_file):
    image, labels = synthetic.bright_disks((120, 150), 0, count=13, radii=(6, 11))
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(labels, name="nuclei")
    widget = open_dock(viewer, "U-Net: Train")
    control(widget, "Image").value = image_layer
    control(widget, "Annotations").value = labels_layer
    choose_model_file(widget, tiny_model_file())
    for words, value in [("Steps", 1000), ("Patches per step", 1), ("Patch size (px)", 60)]:
        control(widget, words).value = value
    return widget, "U-Net: Train", "Start"


@pytest.mark.parametrize("action", [segmenting, training], ids=["segment", "train"])
@pytest.mark.parametrize("closing", ["dock", "viewer"])
def test_closing_mid_run_stops_the_work_silently(
    make_napari_viewer,
    qtbot,
    monkeypatch,
    tiny_model_file,
    errors,
    capfd,
    caplog,
    action,
    closing,
):
    viewer = make_napari_viewer()
    passes = ForwardPasses(monkeypatch, seconds=0.05)
    widget, name, button = action(viewer, tiny_model_file)
    click(widget, button)
    qtbot.waitUntil(lambda: passes.calls >= 2, timeout=TIMEOUT_MS)

    if closing == "dock":
        viewer.window.remove_dock_widget(dock_of(viewer, name))
    else:
        viewer.close()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    pool = QThreadPool.globalInstance()
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=TIMEOUT_MS)
    stopped_at = passes.calls
    qtbot.wait(200)

    assert passes.calls == stopped_at < 20  # stopped, within a step or two of the close
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "has been deleted" not in out + err
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert errors == []
