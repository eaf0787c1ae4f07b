"""Look inside keeps the user's place, in a real napari viewer with its worker thread.

The view stays, each stage has its own channels, a new model clears the old one's layers,
and the receptive field is read out in words that agree with what is drawn.
"""

import numpy as np
import pytest

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import intensity_range_for
from napari_unet_lab.core.look_inside.receptive_field import (
    input_gradient,
    iter_trained_and_untrained,
)
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import randomly_initialised
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.gui.inspect_widget import InspectWidget

TIMEOUT_MS = 60_000


def _model_file(tmp_path, name, seed, n_classes=2):
    config = UNetConfig(base_channels=8, depth=2, n_classes=n_classes)
    names = ["background", "nucleus", "membrane"][:n_classes]
    info = ModelInfo(config=config, class_names=names, name=name)
    return save_model(tmp_path / name, randomly_initialised(config, seed), info)


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = InspectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choose_file(_model_file(tmp_path, "first", 3))
    image = np.random.default_rng(0).random((60, 80)).astype(np.float32)
    widget.image.value = viewer.add_image(image, name="cells")
    return viewer, widget


def _done(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _camera(viewer):
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    return camera


def _names(viewer):
    return [layer.name for layer in viewer.layers]


def test_the_view_stays_where_the_user_put_it(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    camera = _camera(viewer)
    camera.center = (20.0, 30.0)
    camera.zoom = 3.5
    centre, zoom = tuple(camera.center[-2:]), camera.zoom
    widget.show_feature_maps()
    _done(qtbot, widget)
    widget.pick_pixels()
    viewer.layers["cells probed pixels"].add([30, 41])
    qtbot.waitUntil(lambda: "cells receptive field" in viewer.layers, timeout=TIMEOUT_MS)
    _done(qtbot, widget)
    widget.n_positions.value = 4
    widget.average_receptive_field()
    _done(qtbot, widget)
    assert errors == [] and "cells receptive field sizes" in viewer.layers
    assert tuple(camera.center[-2:]) == pytest.approx(centre)
    assert camera.zoom == pytest.approx(zoom)
    assert "right of the image" in widget.status.value  # where to find what is not in view


def test_each_stage_has_its_own_channel_slider(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.stage.value = "encoder 0"
    widget.show_feature_maps()
    _done(qtbot, widget)
    assert errors == []
    assert viewer.dims.nsteps[0] == 8  # encoder 0 has 8 channels
    viewer.dims.set_current_step(0, 3)
    widget.stage.value = "logits"
    (shown,) = [layer for layer in viewer.layers if layer.name != "cells"]
    assert shown.name == "cells logits" and shown.data.shape[0] == 2
    # the slider spans the 2 logits, and stands on one of them: never a blank view
    assert viewer.dims.nsteps[0] == 2 and viewer.dims.current_step[0] <= 1
    widget.stage.value = "bottleneck"
    assert viewer.dims.nsteps[0] == shown.data.shape[0] == 32  # 8 x 2 x 2 at depth 2


def test_a_new_model_removes_the_old_ones_layers_and_probes_again(
    qtbot, viewer_and_widget, errors, tmp_path
):
    viewer, widget = viewer_and_widget
    widget.show_feature_maps()
    _done(qtbot, widget)
    widget.pick_pixels()
    points = viewer.layers["cells probed pixels"]
    points.add([30, 41])
    qtbot.waitUntil(lambda: "cells input gradient" in viewer.layers, timeout=TIMEOUT_MS)
    _done(qtbot, widget)
    widget.n_positions.value = 4
    widget.compare.value = False
    widget.average_receptive_field()
    _done(qtbot, widget)
    assert "cells effective receptive field (trained)" in viewer.layers
    old_heat = viewer.layers["cells input gradient"].data.copy()

    second = _model_file(tmp_path, "second", 7, n_classes=3)
    widget.model.choose_file(second)
    # the previous model's results are gone at once; the clicked pixels stay, probed again
    assert _names(viewer) == ["cells", "cells probed pixels"]
    qtbot.waitUntil(lambda: "cells input gradient" in viewer.layers, timeout=TIMEOUT_MS)
    _done(qtbot, widget)
    assert errors == []
    model, info = load_model(second)
    image = viewer.layers["cells"].data
    expected = input_gradient(
        model,
        image,
        (30, 41),
        intensity_range=intensity_range_for(image, info.normalization),
    )
    heat = viewer.layers["cells input gradient"].data
    np.testing.assert_allclose(
        heat, expected.magnitude / expected.magnitude.max(), rtol=1e-3, atol=1e-6
    )
    assert not np.allclose(heat, old_heat)


def test_the_radius_is_read_out_and_the_rectangles_are_explained(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.pick_pixels()
    viewer.layers["cells probed pixels"].add([30, 41])
    qtbot.waitUntil(lambda: "cells receptive field" in viewer.layers, timeout=TIMEOUT_MS)
    _done(qtbot, widget)
    widget.n_positions.value = 6
    widget.average_receptive_field()
    _done(qtbot, widget)
    assert errors == []

    model, info = load_model(widget.model.path)
    image = viewer.layers["cells"].data
    trained, untrained = run_to_end(
        iter_trained_and_untrained(
            model.for_inference(),
            [image],
            n_positions=6,
            class_index=1,
            intensity_range=intensity_range_for(image, info.normalization),
        )
    )
    reading = (
        f"This network uses about {trained.radius_holding():.0f} px around each pixel "
        f"(untrained, it would use about {untrained.radius_holding():.0f} px)."
    )
    assert widget.status.value.startswith(reading)

    def width(rectangle):  # in image pixels, edges included
        return round(float(np.ptp(np.asarray(rectangle)[:, 1])))

    clicked = width(viewer.layers["cells receptive field"].data[0])
    averaged = width(viewer.layers["cells receptive field sizes"].data[0])
    assert (clicked, averaged, model.receptive_field) == (44, 47, 44)
    assert widget.status.value.endswith(
        "The rectangle spans 47 px, more than a clicked pixel's (44 px at most): where a pixel "
        "lies on the pooling grid shifts its field, so together they span 3 px more."
    )
