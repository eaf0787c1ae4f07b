"""The Look-inside widget in a real napari viewer, its worker thread included."""

import numpy as np
import pytest
from napari.layers import Image, Points, Shapes

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import intensity_range_for
from napari_unet_lab.core.look_inside.feature_maps import feature_maps
from napari_unet_lab.core.look_inside.receptive_field import input_gradient
from napari_unet_lab.core.model.files import ModelInfo, load_model, save_model
from napari_unet_lab.core.model.unet import randomly_initialised
from napari_unet_lab.gui.inspect_widget import InspectWidget

TIMEOUT_MS = 60_000


@pytest.fixture
def live_model_file(tmp_path):
    """A small random U-Net whose every output pixel depends on the image.

    With 4 channels, some random initialisations switch every path off (all
    ReLUs at zero), leaving nothing to see; 8 channels and this seed do not.
    """
    config = UNetConfig(base_channels=8, depth=2)
    info = ModelInfo(config=config, class_names=["background", "nucleus"], name="live")
    # seed 3, not the seed (0) of the untrained network it is compared with
    return save_model(tmp_path / "live", randomly_initialised(config, 3), info)


@pytest.fixture
def viewer_and_widget(make_napari_viewer, live_model_file):
    viewer = make_napari_viewer()
    widget = InspectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choose_file(live_model_file)
    return viewer, widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _image(viewer, shape=(60, 80), **placement):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    return viewer.add_image(data, name="cells", **placement)


def test_feature_maps_are_placed_over_what_each_activation_sees(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    layer = _image(viewer, scale=(0.5, 0.25), translate=(10, 20))
    widget.image.value = layer
    widget.stage.value = "decoder 1"
    widget.show_feature_maps()
    _wait(qtbot, widget)
    assert errors == []

    model, info = load_model(widget.model.path)
    normalised = intensity_range_for(layer.data, info.normalization)  # as the widget does
    expected = feature_maps(model, layer.data, intensity_range=normalised)
    assert [lyr.name for lyr in viewer.layers] == ["cells", "cells decoder 1"]
    assert viewer.dims.ndim == 3  # the channels have their own slider
    for stage in expected:  # one layer, showing the stage chosen
        widget.stage.value = stage.stage
        (shown,) = viewer.layers[1:]
        assert shown.name == f"cells {stage.stage}"
        assert isinstance(shown, Image) and shown.data.shape == stage.activations.shape
        np.testing.assert_allclose(shown.data, stage.activations, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(shown.scale[1:], np.array(layer.scale) * stage.step)
        # activation (i, j) lands on image pixel origin + step * (i, j): its receptive-field centre
        for i, j in [(0, 0), (1, 2), (stage.activations.shape[1] - 1, 0)]:
            world = shown.data_to_world([0, i, j])[1:]
            np.testing.assert_allclose(
                layer.world_to_data(world), np.array(stage.origin) + stage.step * np.array([i, j])
            )
    assert "most active first" in widget.status.value


def test_feature_maps_of_a_stack_show_the_current_plane(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    stack = np.random.default_rng(1).random((3, 40, 50)).astype(np.float32)
    layer = viewer.add_image(stack, name="stack", scale=(4, 1, 1))
    viewer.dims.set_current_step(0, 2)
    widget.image.value = layer
    widget.show_feature_maps()
    _wait(qtbot, widget)
    assert errors == []
    model, info = load_model(widget.model.path)
    normalised = intensity_range_for(stack, info.normalization)  # over the whole stack
    expected = feature_maps(model, stack[2], intensity_range=normalised)[0]
    shown = viewer.layers["stack encoder 0"]
    assert shown.data.shape == (expected.activations.shape[0], 1, *expected.activations.shape[1:])
    np.testing.assert_allclose(shown.data[:, 0], expected.activations, rtol=1e-4, atol=1e-5)
    assert shown.translate[1] == 8  # plane 2 of a stack with 4 units between planes


def test_a_grayscale_model_looks_at_an_rgb_layers_luminance(qtbot, viewer_and_widget, errors):
    """As prediction converts it: the feature maps of the luminance, not a refusal."""
    from napari_unet_lab.core.images import grayscale

    viewer, widget = viewer_and_widget
    colours = np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    widget.image.value = viewer.add_image(colours, rgb=True, name="tissue", scale=(2, 2))
    widget.stage.value = "encoder 0"
    widget.show_feature_maps()
    _wait(qtbot, widget)
    assert errors == []
    model, info = load_model(widget.model.path)
    luminance = grayscale(colours)
    normalised = intensity_range_for(luminance, info.normalization)
    expected = feature_maps(model, luminance, intensity_range=normalised)[0]
    shown = viewer.layers["tissue encoder 0"]
    np.testing.assert_allclose(shown.data, expected.activations, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(shown.scale[1:], np.array([2, 2]) * expected.step)


def test_clicking_pixels_shows_their_input_gradient_and_receptive_field(
    qtbot, viewer_and_widget, errors
):
    viewer, widget = viewer_and_widget
    layer = _image(viewer, scale=(2, 2), translate=(5, -5))
    widget.image.value = layer
    widget.pick_pixels()
    points = viewer.layers["cells probed pixels"]
    assert isinstance(points, Points) and points.mode == "add"
    assert viewer.layers.selection.active is points
    assert widget.class_name.value == 1  # the first object class ("nucleus"), not the background

    points.add([30, 41])  # what a click on image pixel (30, 41) does
    qtbot.waitUntil(lambda: "cells receptive field" in viewer.layers, timeout=TIMEOUT_MS)
    _wait(qtbot, widget)
    assert errors == []
    model, info = load_model(widget.model.path)
    normalised = intensity_range_for(layer.data, info.normalization)
    expected = input_gradient(model, layer.data, (30, 41), intensity_range=normalised)
    heat = viewer.layers["cells input gradient"]
    np.testing.assert_allclose(heat.scale, layer.scale)
    assert heat.data.max() == pytest.approx(1.0)
    # the heat map lies over the crop the gradient was taken on, in image pixels
    np.testing.assert_allclose(layer.world_to_data(heat.data_to_world([0, 0])), expected.origin)
    np.testing.assert_allclose(
        heat.data, expected.magnitude / expected.magnitude.max(), rtol=1e-3, atol=1e-6
    )
    rectangles = viewer.layers["cells receptive field"]
    assert isinstance(rectangles, Shapes) and rectangles.shape_type == ["rectangle"]
    corners = np.array([layer.world_to_data(c) for c in rectangles.data[0]])
    (top, bottom), (left, right) = expected.window
    np.testing.assert_allclose(corners.min(0), [top - 0.5, left - 0.5])
    np.testing.assert_allclose(corners.max(0), [bottom + 0.5, right + 0.5])
    assert viewer.layers.selection.active is points  # ready for the next click

    points.add([10, 12])
    qtbot.waitUntil(lambda: len(rectangles.data) == 2, timeout=TIMEOUT_MS)
    _wait(qtbot, widget)
    assert len([lyr for lyr in viewer.layers if lyr.name.startswith("cells input")]) == 1


def test_average_beside_an_untrained_network_with_progress(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    layer = _image(viewer)
    widget.image.value = layer
    widget.n_positions.value = 6
    records = []
    widget.average_receptive_field()
    widget.task.worker.yielded.connect(records.append)
    assert widget.running and widget.cancel_button.enabled and not widget.average_button.enabled
    _wait(qtbot, widget)
    assert errors == []
    trained = viewer.layers["cells effective receptive field (trained)"]
    untrained = viewer.layers["cells effective receptive field (untrained)"]
    assert trained.data.shape == untrained.data.shape
    # side by side, to the right of the image
    assert layer.extent.world[1][1] < trained.extent.world[0][1] < untrained.extent.world[0][1]
    sizes = viewer.layers["cells receptive field sizes"]
    # per network: its theoretical extent, the fitted Gaussian's 2 sigma, the 86 % circle
    assert sizes.shape_type == ["rectangle", "ellipse", "ellipse"] * 2
    assert records and records[-1].done == records[-1].total == 12
    assert "effective radius" in widget.status.value and "trained" in widget.status.value
    assert widget.average_button.enabled and not widget.cancel_button.enabled


def test_average_can_be_cancelled_and_changes_nothing(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    widget.image.value = _image(viewer)
    widget.n_positions.value = 5000
    records = []
    widget.average_receptive_field()
    widget.task.worker.yielded.connect(records.append)
    qtbot.waitUntil(lambda: len(records) >= 2, timeout=TIMEOUT_MS)
    widget.cancel()
    _wait(qtbot, widget)
    assert records[-1].done < records[-1].total
    assert [lyr.name for lyr in viewer.layers] == ["cells"]
    assert widget.status.value.startswith("Cancelled")
    assert errors == []


@pytest.mark.parametrize(
    ("data", "rgb", "message"),
    [
        (None, False, "choose an image"),
        (np.full((40, 50), np.nan, np.float32), False, "NaN"),
    ],
    ids=["no-image", "nan"],
)
def test_bad_input_gives_a_clear_message(qtbot, viewer_and_widget, errors, data, rgb, message):
    viewer, widget = viewer_and_widget
    if data is not None:
        widget.image.value = viewer.add_image(data, rgb=rgb, name="bad")
    widget.show_feature_maps()
    _wait(qtbot, widget)
    assert len(errors) == 1 and message.lower() in errors[0].lower()
    assert [lyr.name for lyr in viewer.layers] == ([] if data is None else ["bad"])
    assert widget.features_button.enabled


def test_feature_maps_of_a_large_image_cover_only_the_view(
    qtbot, make_napari_viewer, live_model_file, errors
):
    viewer = make_napari_viewer(show=True)  # napari tracks the view while it draws the canvas
    widget = InspectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choose_file(live_model_file)
    layer = _image(viewer, shape=(400, 600))
    widget.image.value = layer
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    camera.center = (200, 300)
    camera.zoom = 8 * camera.zoom  # about an eighth of the image across
    qtbot.waitUntil(lambda: layer.corner_pixels[1, 1] - layer.corner_pixels[0, 1] < 300)
    (top, bottom), (left, right) = (layer.corner_pixels[:, 0], layer.corner_pixels[:, 1])
    widget.show_feature_maps()
    _wait(qtbot, widget)
    assert errors == []
    shown = viewer.layers["cells encoder 0"]
    assert shown.data.shape[1:] == (bottom - top + 1, right - left + 1)
    np.testing.assert_allclose(shown.translate[1:], (top, left))
