"""The widgets run on Qt6: napari 0.9 deprecates PyQt5 and announces its removal."""

from __future__ import annotations

import qtpy


def test_the_tests_and_the_plugin_run_on_qt6(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-lab", "U-Net: Predict")
    assert qtpy.QT6, f"running on {qtpy.API_NAME} {qtpy.QT_VERSION}"
    assert widget.native.isVisible() or widget.native.parent() is not None
