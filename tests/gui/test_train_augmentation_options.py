"""The Train widget's zoom and inverted-contrast settings reach the patches training draws."""

from __future__ import annotations

import numpy as np
import pytest
from tests import synthetic

from napari_unet_lab.gui.train_widget import TrainWidget

TIMEOUT_MS = 120_000

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    image, labels = synthetic.bright_disks((120, 150), 0, count=13, radii=(6, 11))
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.pairs.image.value = viewer.add_image(image, name="cells")
    widget.pairs.annotations.value = viewer.add_labels(labels, name="nuclei")
    widget.start_from.choose_file(tiny_model_file())
    widget.settings.batch_size.value = 2
    widget.settings.patch_size.value = 60
    return viewer, widget


def augmented_patches(qtbot, viewer, widget) -> np.ndarray:
    """Draw the first batch in the widget's worker, as "Show augmented patches" does."""
    widget.data_views.show_augmented_patches()
    qtbot.waitUntil(lambda: not widget.data_views.task.running, timeout=TIMEOUT_MS)
    return np.array(viewer.layers["augmented patches"].data)


def test_zoom_and_inverted_contrast_are_advanced_settings_training_uses(
    qtbot, viewer_and_widget, errors
):
    viewer, widget = viewer_and_widget
    options = widget.settings
    assert (options.zoom.value, options.invert.value) == (0.0, 0.0)  # off by default
    assert options.zoom.native.isHidden() and options.invert.native.isHidden()
    options.show_advanced.value = True
    assert not options.zoom.native.isHidden() and not options.invert.native.isHidden()

    plain = augmented_patches(qtbot, viewer, widget)
    options.invert.value = 1.0
    inverted = augmented_patches(qtbot, viewer, widget)
    # the same seed draws the same patches, each now inverted within its own range
    low, high = plain.min(axis=(1, 2)), plain.max(axis=(1, 2))
    expected = (low + high)[:, None, None] - plain
    np.testing.assert_allclose(inverted, expected, atol=1e-6, rtol=0)

    options.zoom.value = 0.25
    settings = options.training_settings(fine_tuning=True, base=None).augmentation
    assert (settings.zoom, settings.invert, settings.elastic) == (0.25, 1.0, True)
    assert errors == []
