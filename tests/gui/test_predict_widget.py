"""The Predict widget in a real napari viewer, its worker thread included."""

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_unet_lab.core.model.builtin import DEFAULT_MODEL, RGB_MODEL, builtin_models
from napari_unet_lab.gui.predict_widget import PredictWidget
from napari_unet_lab.samples import load_sample

TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choose_file(tiny_model_file())
    return viewer, widget


def _run(qtbot, widget):
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_segments_into_three_layers_placed_over_the_image(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    image, _ = load_sample("nuclei_1")
    layer = viewer.add_image(image[:200, :300], name="cells", scale=(0.5, 0.25), translate=(10, 20))
    widget.image.value = layer
    progress = []
    widget.start()
    widget.task.worker.yielded.connect(progress.append)
    assert widget.running and not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    assert errors == []
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "cells",
        "cells foreground probability (tiny)",
        "cells classes (tiny)",
        "cells objects (tiny)",
    ]
    probability, classes, objects = viewer.layers[1:]
    assert isinstance(probability, Image) and isinstance(classes, Labels)
    assert isinstance(objects, Labels)
    for result in (probability, classes, objects):
        assert result.data.shape == (200, 300)
        np.testing.assert_array_equal(result.scale, layer.scale)
        np.testing.assert_array_equal(result.translate, layer.translate)
    assert probability.data.min() >= 0 and probability.data.max() <= 1
    assert set(np.unique(classes.data)) <= {0, 1}
    # progress went from 0 to all tiles, and the widget is ready again
    assert progress and progress[-1].done == progress[-1].total
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    count = int(objects.data.max())
    assert widget.status.value == f"Found {count} objects in cells with tiny."


def test_running_again_updates_own_layers_and_never_a_users(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    layer = viewer.add_image(np.random.default_rng(0).random((64, 80)), name="cells")
    users = viewer.add_labels(np.ones((64, 80), np.int32), name="cells objects")
    widget.image.value = layer
    _run(qtbot, widget)
    ours = [
        lyr for lyr in viewer.layers if lyr.name.startswith("cells objects") and lyr is not users
    ]
    assert len(ours) == 1
    assert np.all(users.data == 1)  # the user's layer of the same name is untouched
    first_layers = list(viewer.layers)

    _run(qtbot, widget)
    assert list(viewer.layers) == first_layers  # same layer objects, updated in place

    # the user corrects the objects: the next run keeps the correction
    edited = ours[0]
    corrected = edited.data.copy()
    corrected[:5, :5] = 7
    edited.data = corrected
    _run(qtbot, widget)
    assert np.array_equal(edited.data, corrected)
    assert len(viewer.layers) == len(first_layers) + 1
    assert "kept your edited layer" in widget.status.value
    assert errors == []


def test_cancel_stops_between_tiles_and_changes_nothing(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    layer = viewer.add_image(np.random.default_rng(1).random((600, 600)), name="big")
    widget.image.value = layer
    widget.tile_size.value = 128
    widget.batch_size.value = 1
    records = []
    widget.start()
    widget.task.worker.yielded.connect(records.append)
    qtbot.waitUntil(lambda: len(records) >= 2, timeout=TIMEOUT_MS)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert records[-1].done < records[-1].total
    assert [lyr.name for lyr in viewer.layers] == ["big"]
    assert widget.status.value.startswith("Cancelled")
    assert errors == []


@pytest.mark.parametrize(
    ("data", "rgb", "message"),
    [
        (np.full((40, 50), np.nan, np.float32), False, "NaN"),
        (np.full((40, 50, 3), np.nan, np.float32), True, "NaN"),
    ],
    ids=["nan", "nan-rgb"],
)
def test_bad_images_give_a_clear_message(qtbot, viewer_and_widget, errors, data, rgb, message):
    viewer, widget = viewer_and_widget
    widget.image.value = viewer.add_image(data, rgb=rgb, name="bad")
    _run(qtbot, widget)
    assert len(errors) == 1 and message in errors[0]
    assert [lyr.name for lyr in viewer.layers] == ["bad"]
    assert widget.run_button.enabled


def test_model_for_other_channels_is_refused(qtbot, viewer_and_widget, errors, tiny_model_file):
    viewer, widget = viewer_and_widget
    widget.model.file.value = tiny_model_file(in_channels=3, name="rgb-model")
    widget.image.value = viewer.add_image(np.zeros((40, 50)), name="gray")
    widget.start()
    assert not widget.running
    assert "3 channels" in errors[0]


def test_damaged_model_file_is_refused(qtbot, viewer_and_widget, errors, tmp_path):
    viewer, widget = viewer_and_widget
    model_json = widget.model.path
    weights = model_json.with_suffix(".safetensors")
    weights.write_bytes(b"not a model" + weights.read_bytes()[100:])
    widget.image.value = viewer.add_image(np.zeros((40, 50)), name="gray")
    widget.start()
    assert not widget.running
    assert "damaged" in errors[0]


def test_no_image_chosen(viewer_and_widget, errors):
    _, widget = viewer_and_widget
    widget.start()
    assert "choose an image" in errors[0].lower()


def test_rgb_image_with_rgb_model(qtbot, viewer_and_widget, errors, tiny_model_file):
    viewer, widget = viewer_and_widget
    widget.model.file.value = tiny_model_file(in_channels=3, name="rgb-model")
    rgb = np.random.default_rng(2).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    widget.image.value = viewer.add_image(rgb, rgb=True, name="colour", scale=(2, 3))
    _run(qtbot, widget)
    assert errors == []
    objects = viewer.layers["colour objects (rgb-model)"]
    assert objects.data.shape == (50, 60)
    np.testing.assert_array_equal(objects.scale, (2, 3))


def test_the_built_in_model_segments_an_rgb_layer_as_its_luminance_and_says_so(
    qtbot, make_napari_viewer, errors
):
    """Issue #12: RGB (stained tissue) for a grayscale model is converted, never refused."""
    from napari_unet_lab.core.images import grayscale

    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    image, _ = load_sample("nuclei_1")
    tint = np.array([0.8, 0.35, 0.9])  # purple nuclei, as a stain colours them
    colours = (image[:160, :200, None] * tint).astype(np.uint8)
    tissue = viewer.add_image(colours, rgb=True, name="tissue", scale=(0.5, 0.5))
    widget.image.value = tissue
    widget.model.choice.value = builtin_models()[DEFAULT_MODEL]  # the user's choice
    name = widget.model.info.name  # the built-in model, grayscale
    assert widget.model.info.config.in_channels == 1
    _run(qtbot, widget)

    assert errors == []
    objects = viewer.layers[f"tissue objects ({name})"]
    assert objects.data.shape == (160, 200)
    np.testing.assert_array_equal(objects.scale, (0.5, 0.5))
    count = int(objects.data.max())
    assert count > 5
    assert widget.status.value.startswith(
        f"Found {count} objects in tissue with {name}. "
        "RGB image converted to grayscale (luminance) for a grayscale model."
    )
    # exactly what the model makes of the luminance as a grayscale layer
    widget.image.value = viewer.add_image(grayscale(colours), name="luminance")
    _run(qtbot, widget)
    assert errors == []
    np.testing.assert_array_equal(viewer.layers[f"luminance objects ({name})"].data, objects.data)
    assert "RGB" not in widget.status.value


def test_stack_is_segmented_slice_by_slice(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    stack = np.random.default_rng(3).random((3, 40, 50)).astype(np.float32)
    widget.image.value = viewer.add_image(stack, name="stack", scale=(4, 1, 1))
    _run(qtbot, widget)
    assert errors == []
    assert viewer.layers["stack objects (tiny)"].data.shape == (3, 40, 50)
    np.testing.assert_array_equal(viewer.layers["stack classes (tiny)"].scale, (4, 1, 1))


def test_each_model_adds_its_own_layers_and_a_painted_layer_stays_put(
    qtbot, viewer_and_widget, errors, tiny_model_file
):
    """Comparing models: each adds layers named after it; the user's corrections are kept."""
    viewer, widget = viewer_and_widget
    image = viewer.add_image(np.random.default_rng(4).random((48, 56)), name="cells")
    alpha, beta = tiny_model_file(name="alpha"), tiny_model_file(name="beta")
    widget.model.choose_file(alpha)
    widget.start()
    assert widget.status.value == "Segmenting cells with alpha…"
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    alpha_layers = list(viewer.layers)[1:]
    assert [layer.name for layer in alpha_layers] == [
        "cells foreground probability (alpha)",
        "cells classes (alpha)",
        "cells objects (alpha)",
    ]
    alpha_objects = alpha_layers[2]
    assert alpha_objects.metadata["napari_unet_lab"]["model"] == "alpha"
    kept = {layer.name: layer.data.copy() for layer in alpha_layers}

    widget.model.choose_file(beta)
    _run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == [
        "cells",
        *kept,
        "cells foreground probability (beta)",
        "cells classes (beta)",
        "cells objects (beta)",
    ]
    for layer in alpha_layers:  # the other model's results are untouched
        np.testing.assert_array_equal(layer.data, kept[layer.name])
    count = int(viewer.layers["cells objects (beta)"].data.max())
    assert widget.status.value == f"Found {count} objects in cells with beta."

    # the user paints over alpha's objects (napari's brush), then runs alpha again
    alpha_objects.paint((3, 3), 9, refresh=True)
    painted = alpha_objects.data.copy()
    assert painted[3, 3] == 9
    order = list(viewer.layers)
    widget.model.choose_file(alpha)
    _run(qtbot, widget)
    assert list(viewer.layers)[: len(order)] == order  # nothing moved, nothing replaced
    np.testing.assert_array_equal(alpha_objects.data, painted)
    assert [layer.name for layer in viewer.layers][len(order) :] == ["cells objects (alpha) [1]"]
    assert widget.status.value.endswith(
        "kept your edited layer; new result in 'cells objects (alpha) [1]'"
    )
    assert errors == [] and image in viewer.layers


def test_automatic_object_diameter_resizes_for_the_model_and_says_so(
    qtbot, make_napari_viewer, errors
):
    """Nuclei twice the built-in model's size: estimated, shown, results on the image grid."""
    from skimage.transform import rescale

    from napari_unet_lab.core.predict.scale import typical_object_diameter

    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model.info.name == DEFAULT_MODEL and widget.diameter_choice.value == "automatic"
    assert widget.object_diameter == "auto" and widget.diameter.native.isHidden()
    image, truth = load_sample("nuclei_1")
    large = rescale(image[:160, :200].astype(np.float32), 2, order=1, preserve_range=True)
    true_diameter = 2 * typical_object_diameter([truth[:160, :200]])
    layer = viewer.add_image(large, name="large", scale=(0.5, 0.5), translate=(3, 4))
    widget.image.value = layer
    _run(qtbot, widget)

    assert errors == []
    objects = viewer.layers[f"large objects ({DEFAULT_MODEL})"]
    size = objects.metadata["object_size"]
    assert size["object_diameter"] == pytest.approx(true_diameter, rel=0.10)
    larger = widget.model.info.shown_larger  # the default model outlines best a little larger
    assert larger > 1 and size["scale"] < 0.6 * larger  # shrunk about 2x, shown larger
    count = int(objects.data.max())
    assert widget.status.value == (
        f"Found {count} objects in large with {DEFAULT_MODEL}. Objects about "
        f"{size['object_diameter']:.0f} pixels across (estimated); the model was trained on 28 "
        f"and outlines best at about {28.25 * larger:.0f}, so the image was resized "
        f"{size['scale']:.2f}× for the "
        "network and the results brought back to its own size."
    )
    for result in viewer.layers[1:]:
        assert result.data.shape == large.shape
        np.testing.assert_array_equal(result.scale, layer.scale)
        np.testing.assert_array_equal(result.translate, layer.translate)
    # a number of pixels: the spin box appears and is what the widget asks for
    widget.diameter_choice.value = "in pixels"
    widget.diameter.value = 40.0
    assert not widget.diameter.native.isHidden() and widget.object_diameter == 40.0
    widget.diameter_choice.value = "as trained"
    assert widget.object_diameter is None and widget.diameter.native.isHidden()


def test_an_rgb_layer_is_offered_the_built_in_model_that_takes_colours(
    qtbot, make_napari_viewer, errors
):
    """Stained tissue gets the three-channel built-in model; a model the user chose stays.

    RGB fluorescence and grayscale images get the default.
    """
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    image, truth = load_sample("nuclei_tissue")
    gray = viewer.add_image(np.zeros((40, 50), np.uint8), name="gray")
    tissue = viewer.add_image(image, rgb=True, name="tissue")
    assert widget.image.value is tissue  # the newest layer is guessed
    assert widget.model.info.name == RGB_MODEL and widget.model.info.config.in_channels == 3
    widget.image.value = gray
    assert widget.model.info.name == DEFAULT_MODEL
    nuclei, _ = load_sample("nuclei_1")
    blue = (nuclei / nuclei.max() * 255).astype(np.uint8)
    dapi = np.stack([np.zeros_like(blue), np.zeros_like(blue), blue], axis=-1)
    widget.image.value = viewer.add_image(dapi, rgb=True, name="fluorescence in blue")
    assert widget.model.info.name == DEFAULT_MODEL  # bright nuclei on black: not tissue
    widget.image.value = tissue
    assert widget.model.info.name == RGB_MODEL
    _run(qtbot, widget)
    assert errors == []
    objects = viewer.layers[f"tissue objects ({RGB_MODEL})"].data
    assert objects.shape == truth.shape
    assert "RGB" not in widget.status.value  # the colours were taken, not converted

    widget.model.choice.value = builtin_models()["nuclei"]  # chosen by the user
    widget.image.value = gray
    widget.image.value = tissue
    assert widget.model.info.name == "nuclei"
    widget.model.choose_file(builtin_models()[DEFAULT_MODEL])  # a file, even a built-in one
    widget.image.value = gray
    widget.image.value = tissue
    assert widget.model.choice.value != builtin_models()[RGB_MODEL]
