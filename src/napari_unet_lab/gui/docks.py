"""Docks that fit a laptop screen: controls that scroll, and status lines that wrap."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QFrame, QScrollArea, QSizePolicy, QWidget

try:  # PyQt5 / PyQt6
    from qtpy.sip import isdeleted as _isdeleted
except ImportError:  # PySide2 / PySide6
    from qtpy.shiboken import isValid

    def _isdeleted(qobject: Any) -> bool:
        return not isValid(qobject)


def qt_deleted(qobject: Any) -> bool:
    """Return True if Qt already deleted `qobject` (its Python wrapper outlives it)."""
    return _isdeleted(qobject)


# Characters a choice shows at the least; longer ones ("the network trained here (go on)")
# are elided in the closed box, and read in full when it opens.
CHOICE_CHARACTERS = 10
# Height a dock keeps at the least, when docks share a short screen: a few controls,
# or the whole training plot, in view at once.
DOCK_HEIGHT = 200


def compact_choices(native: QWidget) -> None:
    """Let every drop-down under `native` be as narrow as `CHOICE_CHARACTERS`.

    Qt sizes a drop-down to its longest choice by default, so one long layer or
    model name would widen the whole dock.
    """
    for combo in native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(CHOICE_CHARACTERS)


def status_line(text: str = "") -> Label:
    """Return a label for text of any length (status, errors, explanations) that never widens.

    A long message (an error naming a long path) wraps and grows the label in
    height; the dock keeps its width, so the canvas keeps its share of the
    window. The text can be selected, to copy an error.
    """
    label = Label(value=text)
    native = label.native
    native.setWordWrap(True)
    policy = native.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)  # take the width given, ask none
    native.setSizePolicy(policy)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class DockScrollArea(QScrollArea):
    """A scroll area that asks for no more width than its controls need.

    Qt opens a dock as wide as its widget asks for; asking for the least that
    shows every control leaves the canvas its room (the user can widen the dock).
    """

    def sizeHint(self):  # noqa: D102, N802 (Qt's name)
        hint = super().sizeHint()
        hint.setWidth(self.minimumWidth())
        return hint


def scroll_in_dock(widget: Container) -> None:
    """Put `widget` in a scroll area once napari docks it, so every control stays reachable.

    napari docks a magicgui widget's ``.native``, never the scroll area of a
    ``scrollable`` container (magicgui's ``root_native_widget``), so the dock gets
    one here: with three docks on a 1280×800 screen, each gets a third of the
    height, and the buttons below scroll into view instead of being cut off.
    """
    native = widget.native

    def wrap() -> None:
        dock = native.parent()
        if qt_deleted(native) or not isinstance(dock, QDockWidget) or dock.widget() is not native:
            return
        compact_choices(native)  # drop-downs added since
        area = DockScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # wrap instead
        # the controls are never cut off, even beside the scroll bar
        scroll_bar = area.verticalScrollBar().sizeHint().width()
        area.setMinimumWidth(native.minimumSizeHint().width() + scroll_bar)
        area.setMinimumHeight(min(native.minimumSizeHint().height(), DOCK_HEIGHT))
        # napari finds the magicgui widget of a dock through this attribute (inner_widget)
        area._magic_widget = widget
        dock.setWidget(area)
        area.setWidget(native)
        native.show()  # the dock hid it when it let go of it

    def parent_changed(*_: Any) -> None:
        # later: the dock is still setting its widget when Qt says the parent changed
        if isinstance(native.parent(), QDockWidget):
            QTimer.singleShot(0, wrap)

    compact_choices(native)
    widget.native_parent_changed.connect(parent_changed)
