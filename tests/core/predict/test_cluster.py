"""On a dask.distributed cluster, prediction gives exactly what one process gives."""

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from napari_unet_lab.core.model.files import builtin_models, load_model
from napari_unet_lab.core.predict import larger_than_memory as large
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
    built = client.run(lambda: len(large._worker_models))
    assert sum(built.values()) >= 1
