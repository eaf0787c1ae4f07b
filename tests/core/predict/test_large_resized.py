"""Scale-aware prediction into a zarr store: block by block, it is `segment` with the same diameter.

The blocks are forced small (`block_size`) so that every image here is cut into
several; the promise is that the cuts do not show.
"""

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from napari_unet_lab.core.formats.ome_zarr import write_labels_ome_zarr
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.larger_than_memory import (
    iter_predict_to_zarr,
    open_prediction,
    predict_to_zarr,
)
from napari_unet_lab.core.predict.resized_blocks import resampled_window
from napari_unet_lab.core.predict.scale import resized_back, resized_image
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.readers import read_zarr_store
from napari_unet_lab.samples import load_sample

SETTINGS = dict(tile_size=200, chunk_size=64, object_block_size=64, object_margin=48)


@pytest.fixture(scope="module")
def nuclei_model():
    return load_model(builtin_models()["nuclei"])


@pytest.fixture(scope="module")
def nuclei():
    return np.ascontiguousarray(load_sample("nuclei_1")[0][130:240, 230:350])  # (110, 120)


def same_objects(a, b):
    """Whether two label images separate the same objects, whatever their numbers."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("factor", [1.41, 0.63, 2.3, 0.37])
@pytest.mark.parametrize("shape", [(150, 170), (97, 33)])
def test_a_window_of_the_resized_image_is_that_window_of_skimage_resize(shape, factor):
    """Read from a crop, sampled on the whole image's grid: within one float32 rounding."""
    image = np.random.default_rng(0).random(shape).astype(np.float32) * 1000
    whole = resized_image(image, factor, None)
    window = (slice(whole.shape[0] // 3, whole.shape[0] - 2), slice(5, whole.shape[1] // 2 + 1))

    part = resampled_window(
        lambda ys, xs: image[ys, xs], shape, whole.shape, window, beyond="mirror", smooth=factor < 1
    )
    np.testing.assert_allclose(part, whole[window], rtol=1e-6, atol=1e-4)

    probabilities = np.stack([whole, 1000 - whole]) / 1000  # (2, y, x), on the resized grid
    back = resized_back(probabilities, shape)
    rows = (slice(3, shape[0] - 7), slice(0, shape[1]))
    part = resampled_window(
        lambda ys, xs: probabilities[:, ys, xs],
        whole.shape,
        shape,
        rows,
        beyond="edge",
        smooth=False,
    )
    np.testing.assert_allclose(part, back[(slice(None), *rows)], rtol=0, atol=1e-7)


@pytest.mark.parametrize("larger", [True, False])
def test_a_given_diameter_gives_what_segment_gives_in_memory(
    tmp_path, nuclei_model, nuclei, larger
):
    """Resized block by block (4 blocks of 64 px), the store holds the whole-image result."""
    model, info = nuclei_model
    # objects 0.7 times the training size (enlarged), or 1.6 times (shrunk)
    image = nuclei if larger else resized_image(nuclei, 1.6, None)
    diameter = info.object_diameter * (0.7 if larger else 1.6)
    expected = segment(model, info, image, tile_size=200, object_diameter=diameter)
    assert expected.scale != 1

    work = iter_predict_to_zarr(
        model,
        info,
        image,
        tmp_path / "p.zarr",
        object_diameter=diameter,
        block_size=64 if larger else 100,
        **SETTINGS,
    )
    messages = []
    try:
        while True:
            messages.append(next(work).message)
    except StopIteration as stop:
        store = stop.value

    prediction = open_prediction(store)
    probabilities = prediction.probabilities.levels[0].compute()
    assert probabilities.shape == expected.probabilities.shape == (2, *image.shape)
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=1e-6)
    assert np.array_equal(prediction.classes.levels[0].compute(), expected.classes)
    assert same_objects(prediction.objects.levels[0].compute(), expected.objects)
    assert any(m.startswith("block 4 of 4, resized ") for m in messages)
    assert prediction.settings["object_diameter"] == diameter
    assert prediction.settings["scale"] == expected.scale
    assert prediction.settings["size_note"] == expected.size_note  # the same sentence
    assert expected.size_note in messages


def test_the_training_diameter_is_the_exact_path(tmp_path, nuclei_model, nuclei):
    """Factor 1: not resized, bit-identical to `segment` as trained."""
    model, info = nuclei_model
    expected = segment(model, info, nuclei, tile_size=200)
    store = predict_to_zarr(
        model,
        info,
        nuclei,
        tmp_path / "p.zarr",
        object_diameter=info.object_diameter,
        block_size=80,
        **SETTINGS,
    )
    prediction = open_prediction(store)
    assert prediction.settings["scale"] == 1
    assert np.array_equal(prediction.probabilities.levels[0].compute(), expected.probabilities)
    assert np.array_equal(prediction.classes.levels[0].compute(), expected.classes)


def test_a_resized_stack_keeps_its_shape_pixel_size_and_position(tmp_path, nuclei_model):
    """OME-Zarr in, OME-Zarr out: every result on the input's grid, where the input lies."""
    model, info = nuclei_model
    stack = np.stack([load_sample(f"nuclei_{i}")[0][:72, :80] for i in (1, 2)])  # (2, 72, 80)
    path = write_labels_ome_zarr(tmp_path / "stack.zarr", stack, (3.0, 0.65, 0.65), "µm")
    group = zarr.open_group(path, mode="r+")  # place it away from the origin
    multiscales = group.attrs["multiscales"]
    for dataset in multiscales[0]["datasets"]:
        translation = {"type": "translation", "translation": [6.0, 13.0, -2.6]}
        dataset["coordinateTransformations"].append(translation)
    group.attrs["multiscales"] = multiscales
    diameter = info.object_diameter * 0.7

    store = predict_to_zarr(
        model, info, path, tmp_path / "p.zarr", object_diameter=diameter, **SETTINGS
    )

    prediction = open_prediction(store)
    assert prediction.probabilities.levels[0].shape == (2, 2, 72, 80)
    assert prediction.probabilities.scale == (1.0, 3.0, 0.65, 0.65)
    assert prediction.probabilities.translate == (0.0, 6.0, 13.0, -2.6)
    for labels in (prediction.classes, prediction.objects):
        assert labels.levels[0].shape == (2, 72, 80)
        assert labels.scale == (3.0, 0.65, 0.65)
        assert labels.translate == (6.0, 13.0, -2.6)
    expected = segment(model, info, stack, tile_size=200, object_diameter=diameter)
    np.testing.assert_allclose(
        prediction.probabilities.levels[0].compute(),
        np.moveaxis(expected.probabilities, 1, 0),
        rtol=0,
        atol=1e-6,
    )


def test_auto_records_the_estimate_of_the_central_block(tmp_path, nuclei_model, nuclei):
    """Auto is `segment`'s auto on the central block, used for the whole image."""
    model, info = nuclei_model
    large = resized_image(nuclei, 1.5, None)  # (165, 180): objects larger than the sample's
    central = large[18:146, 26:154]  # the central 128 × 128 pixels
    expected = segment(model, info, central, tile_size=200, object_diameter="auto")

    store = predict_to_zarr(
        model,
        info,
        large,
        tmp_path / "p.zarr",
        object_diameter="auto",
        estimate_size=128,
        block_size=96,
        objects=False,
        **SETTINGS,
    )

    settings = open_prediction(store).settings
    assert settings["object_diameter_setting"] == "auto"
    assert settings["object_diameter"] == expected.object_diameter
    assert settings["scale"] == expected.scale
    assert settings["size_note"].startswith(
        f"Objects about {expected.object_diameter:.0f} pixels across (from the central "
        "128 × 128 pixels); the model was trained on "
    )
    # napari's layers of the store carry the same record
    layers = read_zarr_store(str(store))
    assert all(meta["metadata"]["settings"] == settings for _, meta, _ in layers)


def test_auto_without_objects_predicts_as_trained_and_says_so(tmp_path, nuclei_model):
    model, info = nuclei_model
    blank = np.zeros((100, 120), np.uint16)
    store = predict_to_zarr(
        model, info, blank, tmp_path / "p.zarr", object_diameter="auto", **SETTINGS
    )
    settings = open_prediction(store).settings
    assert settings["object_diameter"] is None and settings["scale"] == 1
    assert settings["size_note"] == (
        "No objects were found in the central 100 × 120 pixels to estimate the object size "
        "from, so the image was segmented at its own size, as the model was trained."
    )


def test_a_diameter_the_network_cannot_take_is_refused_before_the_store(
    tmp_path, nuclei_model, nuclei
):
    model, info = nuclei_model
    needs = f"smaller than the {model.min_input_size} pixels the network needs"
    with pytest.raises(ValueError, match=needs):
        predict_to_zarr(model, info, nuclei, tmp_path / "p.zarr", object_diameter=500.0)
    assert not (tmp_path / "p.zarr").exists()


def test_a_given_diameter_on_a_cluster_gives_what_one_process_gives(tmp_path, nuclei_model, nuclei):
    model, info = nuclei_model
    image = da.from_array(nuclei, chunks=64)
    settings = dict(SETTINGS, object_diameter=info.object_diameter * 0.7, block_size=64)
    one = open_prediction(predict_to_zarr(model, info, image, tmp_path / "one.zarr", **settings))
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        store = predict_to_zarr(
            model, info, image, tmp_path / "many.zarr", client=client, **settings
        )
    many = open_prediction(store)
    np.testing.assert_allclose(
        many.probabilities.levels[0].compute(), one.probabilities.levels[0].compute(), atol=1e-6
    )
    assert many.settings["scale"] == one.settings["scale"] != 1
