"""The docks fit a laptop screen: 1280×800, all three open, every control within reach.

Each dock scrolls its controls instead of cutting them off, a long message wraps
instead of widening its dock (the canvas keeps at least half of the window),
and hiding the advanced settings gives their room back.
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QApplication, QScrollArea

WIDTH, HEIGHT = 1280, 800
DOCKS = ("U-Net: Predict", "U-Net: Train", "U-Net: Look inside")
LONG_ERROR = (
    "the model file /home/someone/experiments/2026-05-21/nuclei-finetuned-on-my-own-images/"
    "weights-after-four-hundred-steps-with-elastic-deformation.safetensors could not be used: "
    + "it does not describe a network this plugin can build, and every word of this sentence "
    "is here to make the message long enough to wrap over many lines in a narrow dock. " * 3
)[:500]


def _scroll_area_of(widget) -> QScrollArea | None:
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parent()
    return parent


def _settle(qtbot) -> None:
    QApplication.processEvents()
    qtbot.wait(50)


def _reachable(qtbot, window, control) -> bool:
    """Tell whether `control`, scrolled into view, lies wholly inside its view and the window."""
    area = _scroll_area_of(control)
    if area is None:
        return False
    area.ensureWidgetVisible(control)
    _settle(qtbot)
    shown = QRect(control.mapTo(area.viewport(), QPoint(0, 0)), control.size())
    in_window = QRect(area.viewport().mapTo(window, QPoint(0, 0)), area.viewport().size())
    return (
        control.isVisible()
        and area.viewport().rect().contains(shown)
        and window.rect().contains(in_window)
    )


@pytest.fixture
def laptop(qtbot, make_napari_viewer):
    """A 1280×800 napari window with the three docks open, as a user opens them.

    The window is not handed out: napari's leak check after the test fails while
    a fixture still holds it.
    """
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(WIDTH, HEIGHT)
    opened = {name: viewer.window.add_plugin_dock_widget("napari-unet-lab", name) for name in DOCKS}
    docks = {name: dock for name, (dock, _) in opened.items()}
    widgets = {name: widget for name, (_, widget) in opened.items()}
    qtbot.waitUntil(lambda: all(isinstance(d.widget(), QScrollArea) for d in docks.values()))
    _settle(qtbot)
    return viewer, docks, widgets


def test_three_docks_keep_every_button_reachable_and_a_long_error_wraps(qtbot, laptop, errors):
    viewer, docks, widgets = laptop
    window = viewer.window._qt_window
    predict, train, inspect = (widgets[name] for name in DOCKS)
    predict.task.fail(LONG_ERROR)
    train.controls.task.fail(LONG_ERROR)
    _settle(qtbot)

    assert errors and len(errors[0]) == 500 and predict.status.value == errors[0]
    assert (window.width(), window.height()) == (WIDTH, HEIGHT)  # the window did not grow
    canvas = window.centralWidget()
    assert canvas.width() >= WIDTH / 2, [dock.width() for dock in docks.values()]
    for dock in docks.values():
        assert window.rect().contains(QRect(dock.mapTo(window, QPoint(0, 0)), dock.size()))
    # the message wrapped: many lines, none wider than its dock
    status = predict.status.native
    assert status.height() > 4 * status.fontMetrics().height()
    assert status.width() <= docks["U-Net: Predict"].width()
    controls = {
        "Segment": predict.run_button.native,
        "Start": train.controls.start_button.native,
        "Stop": train.controls.stop_button.native,
        "Save model": train.saving.button.native,
        "training plot": train.live.plot,
        "Average receptive field": inspect.average_button.native,
    }
    unreachable = [
        name for name, control in controls.items() if not _reachable(qtbot, window, control)
    ]
    assert unreachable == []


def test_hiding_the_advanced_settings_gives_the_room_back(qtbot, laptop):
    _, _, widgets = laptop
    for widget, advanced in [
        (widgets["U-Net: Predict"], widgets["U-Net: Predict"].show_advanced),
        (widgets["U-Net: Train"], widgets["U-Net: Train"].settings.show_advanced),
    ]:
        collapsed = widget.native.sizeHint().height()
        scroll_bar = _scroll_area_of(widget.native).verticalScrollBar()
        scrolled = scroll_bar.maximum()
        advanced.value = True
        _settle(qtbot)
        assert widget.native.sizeHint().height() > collapsed + 60
        assert scroll_bar.maximum() >= scrolled
        advanced.value = False
        _settle(qtbot)
        assert widget.native.sizeHint().height() == collapsed
        assert scroll_bar.maximum() == scrolled
