"""The Predict widget warns when an image is unlike the model's training images.

A real viewer and the widget's worker thread; the built-in nuclei model on a sample
(silent) and on the same sample inverted (a warning that suggests fine-tuning).
"""

from __future__ import annotations

import pytest

from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.gui import predict_widget
from napari_unet_lab.gui.predict_widget import PredictWidget
from napari_unet_lab.samples import load_sample

TIMEOUT_MS = 120_000


@pytest.fixture
def warnings_shown(monkeypatch):
    shown = []
    monkeypatch.setattr(predict_widget, "show_warning", shown.append)
    return shown


def test_an_inverted_image_gets_a_warning_and_the_sample_none(
    qtbot, make_napari_viewer, warnings_shown, errors
) -> None:
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # the BBBC039 model: it never saw dark nuclei on a bright background
    widget.model.choice.value = builtin_models()["nuclei"]
    assert widget.model.info.name == "nuclei"
    image, _ = load_sample("nuclei_1")
    crop = image[:260, :348]

    for name, data in (("sample", crop), ("inverted", crop.max() - crop)):
        widget.image.value = viewer.add_image(data, name=name)
        widget.start()
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
        if name == "sample":
            assert warnings_shown == []

    assert errors == []
    (warning,) = warnings_shown
    assert warning.startswith("This image may be unlike the images the model was trained on: ")
    assert "of the image was taken for objects" in warning
    assert warning.endswith(
        "If it is wrong, correct a few objects on this image and fine-tune the model on them "
        "with U-Net: Train (start from this model)."
    )
