"""On a dask.distributed cluster, prediction gives exactly what one process gives."""

import os

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.predict.cluster import models_built_here, read_here
from napari_unet_lab.core.predict.larger_than_memory import predict_to_zarr
from napari_unet_lab.samples import load_sample

SETTINGS = dict(tile_size=260, batch_size=1, chunk_size=128, object_block_size=128)


@pytest.fixture(scope="module")
def client():
    # Worker processes, as on a real cluster: each builds the model from its weights.
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _arrays(store):
    members = zarr.open_group(store, mode="r").members(max_depth=None)
    return {name: node[...] for name, node in members if isinstance(node, zarr.Array)}


def test_cluster_result_is_bit_identical_to_one_process(tmp_path, client):
    model, info = load_model(builtin_models()["nuclei"])
    image = da.from_array(load_sample("nuclei_3")[0][:300, :420], chunks=128)

    one = predict_to_zarr(model, info, image, tmp_path / "one.zarr", **SETTINGS)
    many = predict_to_zarr(model, info, image, tmp_path / "many.zarr", client=client, **SETTINGS)

    expected, got = _arrays(one), _arrays(many)
    assert sorted(got) == sorted(expected)  # every level of probabilities, classes, objects
    for name, array in expected.items():
        assert np.array_equal(got[name], array), name
    assert got["labels/objects/0"].max() > 10
    # the network ran in the workers, each with the model built from its safetensors weights
    built = client.run(models_built_here)
    assert sum(built.values()) >= 1


def test_the_image_is_read_in_this_process_not_on_the_workers(client):
    """The client is dask's default scheduler, yet tiles are read here: workers need no files."""
    here = os.getpid()
    lazy = da.zeros((64, 64), chunks=32).map_blocks(lambda block: np.full_like(block, os.getpid()))
    assert here not in np.asarray(lazy[:8, :8])  # plain dask computes on the workers
    image = read_here(lazy, client)
    assert image.shape == (64, 64)
    assert (np.asarray(image[..., None, :8, :8]) == here).all()  # as the engine slices it
    moved = np.moveaxis(read_here(lazy[None], client), 0, -1)  # transposing stays lazy
    assert moved.shape == (64, 64, 1) and (np.asarray(moved[:4, :4]) == here).all()
    assert read_here(lazy, None) is lazy
