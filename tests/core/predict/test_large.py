"""Prediction into a zarr store is exactly prediction in memory, read and written tile by tile."""

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet_lab.core.formats.ome_zarr import write_labels_ome_zarr
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.larger_than_memory import (
    iter_predict_to_zarr,
    open_image,
    open_prediction,
    predict_to_zarr,
)
from napari_unet_lab.core.predict.objects import iter_object_labels_blockwise, object_labels
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.core.predict.tile_plan import read_tile
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.samples import load_sample

# Small enough to run in seconds, large enough for several tiles, bands and object blocks.
SETTINGS = dict(tile_size=260, chunk_size=128, object_block_size=128, object_margin=64)


@pytest.fixture(scope="module")
def nuclei_model():
    """The shipped nuclei model: real objects to separate, on real nuclei."""
    return load_model(builtin_models()["nuclei"])


@pytest.fixture(scope="module")
def nuclei():
    return np.ascontiguousarray(load_sample("nuclei_1")[0][100:360, 200:440])  # (260, 240)


@pytest.fixture(scope="module")
def in_memory(nuclei_model, nuclei):
    model, info = nuclei_model
    return segment(model, info, nuclei, tile_size=SETTINGS["tile_size"])


def same_objects(a, b):
    """Whether two label images separate the same objects, whatever their numbers."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def _as_source(kind, image, folder):
    if kind == "numpy":
        return image
    if kind == "dask":
        return da.from_array(image, chunks=(64, 100))
    if kind == "zarr array":
        array = zarr.create_array(
            folder / "image.zarr", shape=image.shape, chunks=(50, 50), dtype=image.dtype
        )
        array[:] = image
        return folder / "image.zarr"
    # an OME-Zarr image; any OME-Zarr image would do, ours are at hand
    return write_labels_ome_zarr(
        folder / "image.ome.zarr", image, (0.65, 0.65), "µm", chunk_size=64
    )


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr array", "ome-zarr"])
def test_zarr_store_is_bit_identical_to_prediction_in_memory(
    tmp_path, nuclei_model, nuclei, in_memory, kind
):
    """Same tiles, same network, same softmax blocks: not a bit differs."""
    model, info = nuclei_model
    source = _as_source(kind, nuclei, tmp_path)

    store = predict_to_zarr(model, info, source, tmp_path / "prediction.zarr", **SETTINGS)

    prediction = open_prediction(store)
    probabilities = prediction.probabilities.levels[0]
    assert isinstance(probabilities, da.Array)
    assert np.array_equal(probabilities.compute(), in_memory.probabilities)
    assert np.array_equal(prediction.classes.levels[0].compute(), in_memory.classes)
    objects = prediction.objects.levels[0].compute()
    assert objects.max() > 20
    assert same_objects(objects, in_memory.objects)
    assert prediction.class_names == info.class_names
    if kind == "ome-zarr":
        assert prediction.probabilities.scale == (1.0, 0.65, 0.65)
        assert prediction.objects.units == ("micrometer", "micrometer")
    # the pyramid for viewing: every second pixel
    assert np.array_equal(prediction.classes.levels[1].compute(), in_memory.classes[::2, ::2])


def test_softmax_bands_follow_the_whole_image_blocks(tmp_path, nuclei_model):
    """Bands of 512 rows hold two 256-row softmax blocks; a 600-row image ends in a short one."""
    model, info = nuclei_model
    image = load_sample("nuclei_2")[0][:600, :100]
    store = predict_to_zarr(
        model, info, image, tmp_path / "p.zarr", tile_size=300, chunk_size=512, objects=False
    )
    expected = segment(model, info, image, tile_size=300)
    prediction = open_prediction(store)
    assert prediction.objects is None
    assert np.array_equal(prediction.probabilities.levels[0].compute(), expected.probabilities)


def test_stack_from_ome_zarr_keeps_axes_and_pixel_size(tmp_path, nuclei_model):
    model, info = nuclei_model
    stack = np.stack([load_sample(f"nuclei_{i}")[0][:120, :150] for i in (1, 2)])
    path = write_labels_ome_zarr(tmp_path / "stack.zarr", stack, (3.0, 0.65, 0.65), "µm")

    store = predict_to_zarr(model, info, path, tmp_path / "p.zarr", tile_size=None)

    prediction = open_prediction(store)
    expected = segment(model, info, stack, tile_size=None)
    assert np.array_equal(
        prediction.probabilities.levels[0].compute(), np.moveaxis(expected.probabilities, 1, 0)
    )
    assert prediction.probabilities.scale == (1.0, 3.0, 0.65, 0.65)
    assert [axis.name for axis in prediction.probabilities.axes] == ["c", "z", "y", "x"]
    assert same_objects(prediction.objects.levels[0].compute(), expected.objects)


def test_blockwise_objects_are_the_whole_image_objects(in_memory):
    """Objects narrower than the margin are found whole, once, by the block holding their start."""
    foreground = in_memory.foreground
    whole = object_labels(foreground)
    for block_size, margin in [(64, 64), (100, 48), (1000, 0)]:
        out = np.zeros(foreground.shape, np.uint32)
        count = run_to_end(
            iter_object_labels_blockwise(foreground, out, block_size=block_size, margin=margin)
        )
        assert count == whole.max() == out.max()
        assert same_objects(out, whole)


def test_reading_a_tile_from_dask_computes_only_the_chunks_under_it():
    computed = []

    def record(block, block_info=None):
        computed.append(tuple(block_info[0]["chunk-location"]))
        return block

    image = da.from_array(np.arange(400 * 400, dtype=np.float32).reshape(400, 400), chunks=50)
    lazy = image.map_blocks(record, dtype=np.float32)
    ys, xs = np.arange(120, 190), np.arange(260, 330)

    tile = read_tile(lazy, ys, xs)

    assert np.array_equal(tile, image[120:190, 260:330].compute())
    assert sorted(set(computed)) == [(y, x) for y in (2, 3) for x in (5, 6)]


def test_cancelling_leaves_no_store_and_an_existing_store_is_kept(tmp_path, nuclei_model, nuclei):
    model, info = nuclei_model
    store = tmp_path / "prediction.zarr"
    work = iter_predict_to_zarr(model, info, nuclei, store, **SETTINGS)
    next(work)
    next(work)
    work.close()  # what the widget's cancel does
    assert list(tmp_path.iterdir()) == []

    store.mkdir()
    (store / "precious").write_text("keep me")
    with pytest.raises(FileExistsError):
        predict_to_zarr(model, info, nuclei, store, **SETTINGS)
    assert (store / "precious").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction.zarr"]


def test_open_image_drops_singleton_axes_and_stays_lazy(tmp_path):
    image = np.arange(2 * 30 * 40, dtype=np.uint16).reshape(1, 2, 30, 40)
    path = write_labels_ome_zarr(tmp_path / "i.zarr", image[0, :1], (1.0, 0.5, 0.25), "µm")

    opened = open_image(path)

    assert isinstance(opened.data, da.Array)
    assert opened.data.shape == (30, 40)
    assert opened.scale == (0.5, 0.25)
