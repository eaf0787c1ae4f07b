"""Prediction with the network on the workers of a dask.distributed cluster.

The tiling engine (`iter_predict_tiled`) stays in this process: it reads each
batch of tiles here, hands it to a `ClusterRunner`, which submits it to a
worker, and writes the scores as they come back; a few batches per worker
thread are in flight at once, so memory stays bounded. Each worker builds the
model once, from its architecture and safetensors weights (no pickle), and
needs napari-unet-lab installed, not the image's files: the result is
bit-identical to prediction in one process.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator
from typing import Any

import dask.array as da
import numpy as np
import torch

from ..config import UNetConfig
from ..device import select_device
from ..model.unet import UNet
from ..progress import Progress
from .tile_plan import TileSize, auto_tile_size
from .tiling import iter_predict_tiled, run_network

# The model each worker process has built: (weights checksum, device) -> (network, device).
_worker_models: dict[tuple[str, str], tuple[UNet, torch.device]] = {}
_worker_lock = threading.Lock()


class ReadHere:
    """A dask array whose pixels are computed in this process, never on the cluster.

    With a distributed client as dask's default scheduler, reading a tile would
    ship the read to the workers, which need not see the image's files. Slicing
    and transposing stay lazy; NumPy conversion computes with local threads.

    Parameters
    ----------
    array : dask.array.Array
        The image.
    """

    def __init__(self, array: da.Array):
        self.array = array
        self.shape, self.ndim, self.dtype = tuple(array.shape), array.ndim, array.dtype

    def __getitem__(self, key: Any) -> ReadHere:
        return ReadHere(self.array[key])

    def transpose(self, *axes: Any) -> ReadHere:
        """Return the array with its axes reordered, still lazy (as `numpy.moveaxis` asks)."""
        return ReadHere(self.array.transpose(*axes))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array.compute(scheduler="threads"), dtype=dtype)


def read_here(image: Any, client: Any) -> Any:
    """Return `image` so that it is read in this process when a `client` is in use."""
    return ReadHere(image) if client is not None and isinstance(image, da.Array) else image


def model_payload(model: UNet) -> tuple[str, dict[str, Any], bytes]:
    """Return (checksum, architecture, safetensors weights): all a worker needs, no pickle."""
    from safetensors.torch import save

    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    weights = save(state)
    return hashlib.sha256(weights).hexdigest(), model.config.to_dict(), weights


def predict_on_worker(
    payload: tuple[str, dict[str, Any], bytes],
    inputs: np.ndarray,
    device: str,
    mixed_precision: bool | None,
) -> np.ndarray:
    """Run the network on a batch of tiles on a dask worker; the model is built once per worker."""
    from safetensors.torch import load

    checksum, architecture, weights = payload
    with _worker_lock:
        if (checksum, device) not in _worker_models:
            model = UNet(UNetConfig.from_dict(architecture))
            model.load_state_dict(load(weights))
            target = select_device(device)
            _worker_models.clear()  # one model at a time
            _worker_models[checksum, device] = (model.for_inference().to(target), target)
        model, target = _worker_models[checksum, device]
    return run_network(model, inputs, target, mixed_precision)


def models_built_here() -> int:
    """Return how many models this process has built as a worker (0 or 1)."""
    return len(_worker_models)


class ClusterRunner:
    """A runner for `iter_predict_tiled` that submits each batch to a dask cluster.

    Calling it returns a future of the batch's scores. The model's weights are
    sent to every worker once, when the runner is made.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    model : UNet
        The network.
    device : str
        Chosen on each worker (``"auto"``: CUDA, then MPS, then the CPU).
    mixed_precision : bool or None
        As for `iter_predict_tiled`.
    """

    def __init__(
        self, client: Any, model: UNet, device: str = "auto", mixed_precision: bool | None = None
    ):
        self.client, self.device, self.mixed_precision = client, str(device), mixed_precision
        [self.payload] = client.scatter([model_payload(model)], broadcast=True)

    @property
    def in_flight(self) -> int:
        """Batches worth having in flight at once: two per worker thread."""
        return 2 * max(1, sum(self.client.nthreads().values()))

    def __call__(self, inputs: np.ndarray) -> Any:
        """Submit a batch of input tiles; return the future of its scores."""
        return self.client.submit(
            predict_on_worker, self.payload, inputs, self.device, self.mixed_precision, pure=False
        )


def iter_predict_tiled_on_cluster(
    client: Any,
    model: UNet,
    image: Any,
    *,
    out: Any,
    tile_size: TileSize = "auto",
    batch_size: int | None = None,
    device: str = "auto",
    mixed_precision: bool | None = None,
    channel_axis: int | None = None,
    intensity_range: tuple[float, float] | None = None,
) -> Generator[Progress, None, Any]:
    """`iter_predict_tiled` (logits) with the network on the workers of a dask cluster.

    The same tiles, read and scaled by the same engine, in this process; only
    the network runs on the workers. Parameters are those of
    `iter_predict_tiled`, except that each task predicts `batch_size` tiles (1
    by default) and ``tile_size="auto"`` follows the CPU rule of `auto_tile_size`.

    Returns
    -------
    array-like
        `out`, holding the class scores.
    """
    if tile_size == "auto":  # the workers' devices are unknown here
        tile_size = auto_tile_size(model, "cpu")
    runner = ClusterRunner(client, model, device, mixed_precision)
    return (
        yield from iter_predict_tiled(
            model,
            read_here(image, client),
            tile_size=tile_size,
            batch_size=batch_size or 1,
            channel_axis=channel_axis,
            intensity_range=intensity_range,
            output="logits",
            out=out,
            runner=runner,
            in_flight=runner.in_flight,
        )
    )
