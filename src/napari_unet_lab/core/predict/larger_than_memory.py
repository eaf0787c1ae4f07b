"""Segment images larger than memory: tile by tile from lazy arrays into an OME-Zarr store.

The image is read one tile at a time (NumPy, dask, zarr, or an OME-Zarr path) and
every result is written to disk as soon as it exists, so memory holds one batch of
tiles and one band of rows, never the whole image. The store is an OME-Zarr image
(version 0.4) with labels::

    prediction.zarr/          class probabilities, (class, [stack], Y, X) float32
      0/ 1/ ...               full resolution, then every second pixel in Y and X
      labels/classes/0 ...    the most likely class of each pixel
      labels/objects/0 ...    separated objects, one label each (optional)

so that napari (through this plugin's reader), napari-ome-zarr, Fiji and others
open it as lazy, multiscale layers.

The probabilities and classes are bit-identical to `predict_tiled` on the same
image in memory: the same tiles go through the same network, and the softmax is
taken over the same blocks of rows. The objects are found block by block with an
overlap (see `iter_object_labels_blockwise`).

With an object diameter (`object_diameter`), the image is resized so its objects
match the model's training objects, block by block (`resized_blocks`), and every
result comes back on the image's own grid: the same as `segment` up to float
rounding. The store records the diameter used (given, or estimated on a central
block) and a sentence for the user in its settings.

With a dask.distributed ``client``, the network runs on the cluster's workers,
each building the model once from its safetensors weights; the client reads the
image, writes the store, and gets the same result as one process.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..formats.atomic import folder_written_atomically
from ..formats.ome_zarr import (
    PLUGIN_KEY,
    STORE_FORMAT_VERSION,
    Axis,
    Multiscale,
    create_multiscale,
    iter_fill_pyramid,
    ome_unit,
    read_ome_zarr,
)
from ..images import check_image, image_channel_axis, intensity_range_for
from ..model.files import ModelInfo
from ..model.unet import UNet
from ..progress import Progress, run_to_end
from .cluster import ClusterRunner, iter_predict_tiled_on_cluster, read_here
from .lazy_images import open_image
from .objects import DEFAULT_OBJECTS, OBJECT_THRESHOLD, class_labels, iter_object_labels_blockwise
from .resized_blocks import BLOCK_SIZE, ESTIMATE_SIZE, iter_object_size, iter_predict_resized
from .scale import ObjectDiameter
from .tile_plan import TileSize
from .tiling import SOFTMAX_ROWS, iter_predict_tiled, scores_to_probabilities


@dataclass
class Prediction:
    """A prediction store, opened lazily (see `open_prediction`).

    Attributes
    ----------
    probabilities : Multiscale
        Class probabilities, ``(class, [stack], Y, X)``.
    classes : Multiscale
        The most likely class of each pixel, ``([stack], Y, X)``; 0 is the background.
    objects : Multiscale or None
        Separated objects, one label each, if they were computed.
    class_names : list of str
        One per class.
    settings : dict
        How the prediction was made (model, tiles, object settings).
    """

    probabilities: Multiscale
    classes: Multiscale
    objects: Multiscale | None
    class_names: list[str]
    settings: dict[str, Any] = field(default_factory=dict)


def open_prediction(path: str | os.PathLike) -> Prediction:
    """Open a store written by `predict_to_zarr`; every level is a dask array.

    Raises
    ------
    ValueError
        If `path` is not such a store.
    """
    root = zarr.open_group(path, mode="r")
    ours = dict(root.attrs).get(PLUGIN_KEY)
    if not isinstance(ours, dict) or ours.get("kind") != "prediction":
        raise ValueError(f"{path} is not a napari-unet-lab prediction store")
    labels = root["labels"]
    return Prediction(
        probabilities=read_ome_zarr(root),
        classes=read_ome_zarr(labels["classes"]),
        objects=read_ome_zarr(labels["objects"]) if "objects" in labels else None,
        class_names=list(ours.get("class_names", [])),
        settings=dict(ours.get("settings", {})),
    )


def iter_predict_to_zarr(
    model: UNet,
    info: ModelInfo,
    source: Any,
    store: str | os.PathLike,
    *,
    client: Any = None,
    rgb: bool = False,
    tile_size: TileSize = "auto",
    batch_size: int | None = None,
    device: str = "auto",
    mixed_precision: bool | None = None,
    objects: bool = True,
    threshold: float = OBJECT_THRESHOLD,
    min_size: int = DEFAULT_OBJECTS.min_size,
    split_touching: bool = DEFAULT_OBJECTS.split_touching,
    object_diameter: ObjectDiameter = None,
    block_size: int = BLOCK_SIZE,
    estimate_size: int = ESTIMATE_SIZE,
    object_block_size: int = 1024,
    object_margin: int = 128,
    chunk_size: int = 512,
    levels: int | None = None,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    translate: Sequence[float] | None = None,
    overwrite: bool = False,
) -> Generator[Progress, None, Path]:
    """Segment an image of any size into an OME-Zarr store, yielding progress.

    Parameters
    ----------
    model, info : UNet, ModelInfo
        The trained network and its description (normalisation, classes).
    source : array-like, zarr.Array, str or path-like
        The image; see `open_image`. Only the tiles being predicted are read.
    store : str or path-like
        The store to create, conventionally ending in ``.zarr``. It appears only
        once complete (written beside it, then renamed); closing the generator
        (cancel) removes the unfinished one.
    client : distributed.Client, optional
        Run the network on this dask.distributed cluster's workers; the result is
        identical. Workers need napari-unet-lab installed, not the image's files.
    rgb, tile_size, batch_size, device, mixed_precision
        As for `iter_segment` / `iter_predict_tiled`; with a `client`, `device` is
        chosen on each worker, each task predicts `batch_size` tiles (1 by default),
        and ``tile_size="auto"`` follows the CPU rule of `auto_tile_size` (512 px).
    objects : bool
        Also separate objects (`iter_object_labels_blockwise`).
    threshold, min_size, split_touching
        Passed to `object_labels`.
    object_diameter : None, "auto" or float
        Typical object diameter in pixels, as for `iter_segment`: the image is
        resized so its objects match the model's training objects, block by
        block (`resized_blocks`), and every result comes back on its own grid.
        ``"auto"`` estimates it on the central `estimate_size` square. The store's
        settings record the diameter used, the resizing and a note for the user.
    block_size, estimate_size : int
        Edge of the blocks resized and predicted at once; of the estimate's block.
    object_block_size, object_margin : int
        Blocks the objects are found in, and the overlap each block reads around
        itself: objects up to `object_margin` pixels across are never cut.
    chunk_size : int
        Zarr chunk edge in Y and X.
    levels : int or None
        Resolution levels for viewing, each half the size of the one before;
        None: until the image fits in one chunk.
    scale, units, translate : optional
        Pixel size, unit (one for all, or one each) and position of the first
        pixel per axis of the result, ``([stack], Y, X)``; by default those of an
        OME-Zarr source, else 1 pixel at 0.
    overwrite : bool
        Replace an existing store; without it nothing existing is touched.

    Yields
    ------
    Progress
        Per batch of tiles, then per band of rows, block of objects and pyramid band.

    Returns
    -------
    Path
        The store.

    Notes
    -----
    Peak memory is one batch of tiles and its network activations, plus one band
    of ``chunk_size`` rows (rounded to a multiple of 256) across the whole image
    width while probabilities are computed, and one object block with its margin.
    The logits are first written where the probabilities go, and turned into
    probabilities band by band: the softmax blocks are those `predict_tiled` uses.
    """
    if model.config != info.config:
        raise ValueError("the model does not match its description")
    config = model.config
    image = open_image(source)
    data = read_here(image.data, client)  # the image's files need not be on the cluster
    check_image(data)
    if image.channel_axis is not None and config.in_channels > 1:
        channel_axis = image.channel_axis
    else:
        channel_axis = image_channel_axis(tuple(data.shape), config.in_channels, rgb)
    intensity_range = intensity_range_for(data, info.normalization)
    image_axes = [
        axis
        for axis in range(data.ndim)
        if channel_axis is None or axis != channel_axis % data.ndim
    ]
    shape = tuple(int(data.shape[axis]) for axis in image_axes)  # ([stack], Y, X)
    if image.axes is not None and units is None:
        axes = tuple(image.axes[axis] for axis in image_axes)
    else:
        axes = _default_axes(len(shape), units)
    if scale is not None:
        pixel_size = tuple(float(s) for s in scale)
    elif image.scale is not None:
        pixel_size = tuple(image.scale[axis] for axis in image_axes)
    else:
        pixel_size = (1.0,) * len(shape)
    if len(pixel_size) != len(shape):
        raise ValueError(f"got {len(pixel_size)} pixel sizes for a result of shape {shape}")
    if translate is None and image.translate is not None:
        translate = [image.translate[axis] for axis in image_axes]
    position = tuple(float(t) for t in translate) if translate is not None else (0.0,) * len(shape)
    if len(position) != len(shape):
        raise ValueError(f"got {len(position)} positions for a result of shape {shape}")
    n_classes, stack = config.n_classes, len(shape) - 2
    chunks = (1,) * stack + (chunk_size, chunk_size)
    settings = {
        "model": info.name,
        "source": str(source) if isinstance(source, (str, os.PathLike)) else image.name,
        "tile_size": tile_size,
        "intensity_range": list(intensity_range),
        "objects": objects,
        "threshold": threshold,
        "min_size": min_size,
        "split_touching": split_touching,
        "object_block_size": object_block_size,
        "object_margin": object_margin,
        "object_diameter_setting": object_diameter,
    }

    with folder_written_atomically(store, overwrite=overwrite) as folder:
        size = yield from iter_object_size(
            model,
            info,
            data,
            object_diameter,
            channel_axis=channel_axis,
            block_size=block_size,
            estimate_size=estimate_size,
            tile_size=tile_size,
            batch_size=batch_size,
            device=device if client is None else "cpu",
        )
        if size.note:
            yield Progress(0, 1, size.note)
        settings.update(object_diameter=size.diameter, scale=size.factor, size_note=size.note)
        root = zarr.open_group(folder, mode="w", zarr_format=2)
        probabilities = create_multiscale(
            root,
            (n_classes, *shape),
            np.float32,
            (Axis("c", "channel"), *axes),
            (1.0, *pixel_size),
            name="probabilities",
            chunks=(1, *chunks),
            levels=levels,
        )
        label_group = root.create_group("labels")
        label_group.attrs["labels"] = ["classes", "objects"] if objects else ["classes"]
        as_label = {"source": {"image": "../../"}}
        classes = create_multiscale(
            label_group.create_group("classes"),
            shape,
            np.uint8 if n_classes <= 256 else np.uint16,
            axes,
            pixel_size,
            name="classes",
            chunks=chunks,
            levels=levels,
            label=as_label,
        )
        pyramids = [probabilities, classes]
        if objects:
            pyramids.append(
                create_multiscale(
                    label_group.create_group("objects"),
                    shape,
                    np.uint32,
                    axes,
                    pixel_size,
                    name="objects",
                    chunks=chunks,
                    levels=levels,
                    label=as_label,
                )
            )
        root.attrs[PLUGIN_KEY] = {
            "kind": "prediction",
            "format_version": STORE_FORMAT_VERSION,
            "class_names": list(info.class_names),
            "settings": settings,
        }

        if any(position):
            _place(root, (0.0, *position))
            for name in label_group.attrs["labels"]:
                _place(label_group[name], position)
        logits = _ClassAxisFirst(probabilities[0], stack)
        if size.factor != 1:
            runner = (
                None if client is None else ClusterRunner(client, model, device, mixed_precision)
            )
            yield from iter_predict_resized(
                model,
                data,
                size.factor,
                probabilities[0],
                classes[0],
                channel_axis=channel_axis,
                intensity_range=intensity_range,
                block_size=block_size,
                tile_size=tile_size,
                batch_size=batch_size,
                device=device,
                mixed_precision=mixed_precision,
                runner=runner,
                in_flight=1 if runner is None else runner.in_flight,
            )
        elif client is None:
            yield from iter_predict_tiled(
                model,
                data,
                tile_size=tile_size,
                batch_size=batch_size,
                device=device,
                mixed_precision=mixed_precision,
                channel_axis=channel_axis,
                intensity_range=intensity_range,
                output="logits",
                out=logits,
            )
        else:
            yield from iter_predict_tiled_on_cluster(
                client,
                model,
                data,
                out=logits,
                tile_size=tile_size,
                batch_size=batch_size,
                device=device,
                mixed_precision=mixed_precision,
                channel_axis=channel_axis,
                intensity_range=intensity_range,
            )
        if size.factor == 1:
            yield from _iter_probabilities_and_classes(probabilities[0], classes[0])
        if objects:
            count = yield from iter_object_labels_blockwise(
                _Foreground(probabilities[0]),
                pyramids[2][0],
                threshold=threshold,
                min_size=min_size,
                split_touching=split_touching,
                block_size=object_block_size,
                margin=object_margin,
            )
            root.attrs[PLUGIN_KEY] = {**root.attrs[PLUGIN_KEY], "object_count": count}
        for pyramid in pyramids:
            yield from iter_fill_pyramid(pyramid)
    return Path(store)


def predict_to_zarr(
    model: UNet, info: ModelInfo, source: Any, store: str | os.PathLike, **settings: Any
) -> Path:
    """Segment an image of any size into an OME-Zarr store; see `iter_predict_to_zarr`."""
    return run_to_end(iter_predict_to_zarr(model, info, source, store, **settings))


# ------------------------------------------------------------------------- internals
def _default_axes(ndim: int, units: str | Sequence[str | None] | None) -> tuple[Axis, ...]:
    """Axes ``(..., z, y, x)`` for images whose file does not name them."""
    if units is None or isinstance(units, str):
        units = [units] * ndim
    if len(units) != ndim:
        raise ValueError(f"got {len(units)} units for {ndim} axes")
    names = [f"dim_{i}" for i in range(ndim - 3)] + ["z", "y", "x"][-min(ndim, 3) :]
    return tuple(
        Axis(name, "space" if name in ("z", "y", "x") else None, ome_unit(unit))
        for name, unit in zip(names, units, strict=True)
    )


def _place(group: zarr.Group, position: tuple[float, ...]) -> None:
    """Give every level of a multiscale image the position of its first pixel (OME-Zarr 0.4)."""
    [multiscale] = group.attrs["multiscales"]
    for dataset in multiscale["datasets"]:  # a translation after each level's scale
        translation = {"type": "translation", "translation": list(position)}
        dataset["coordinateTransformations"].append(translation)
    group.attrs["multiscales"] = [multiscale]


class _ClassAxisFirst:
    """Index an array stored (C, ..., Y, X) as (..., C, Y, X), as tiles are written.

    Stack indices are single positions (as the tiler writes), so values keep their shape.
    """

    def __init__(self, array: Any, stack_ndim: int):
        self.array, self.stack_ndim = array, stack_ndim
        shape = tuple(array.shape)
        self.shape = (*shape[1 : 1 + stack_ndim], shape[0], *shape[-2:])

    def _key(self, key: tuple) -> tuple:
        n = self.stack_ndim
        return (key[n], *key[:n], *key[n + 1 :])

    def __getitem__(self, key: tuple) -> np.ndarray:
        return self.array[self._key(key)]

    def __setitem__(self, key: tuple, value: np.ndarray) -> None:
        self.array[self._key(key)] = value


class _Foreground:
    """``1 - p(background)`` of a (C, ..., Y, X) probability array, read on demand."""

    def __init__(self, probabilities: Any):
        self.probabilities = probabilities
        self.shape = tuple(probabilities.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: tuple) -> np.ndarray:
        # the same float32 arithmetic as `iter_segment` on an image in memory
        return 1.0 - np.asarray(self.probabilities[(0, *key)])


def _iter_probabilities_and_classes(scores: Any, classes: Any) -> Generator[Progress, None, None]:
    """Turn logits (C, ..., Y, X) into probabilities in place, and write the classes.

    Bands of rows start on multiples of `SOFTMAX_ROWS`, so `scores_to_probabilities`
    rounds every pixel as `predict_tiled` does on the whole image.
    """
    *stack_shape, height, _ = classes.shape
    band_rows = SOFTMAX_ROWS * max(1, round(classes.chunks[-2] / SOFTMAX_ROWS))
    bands = [
        (stack_index, slice(top, min(top + band_rows, height)))
        for stack_index in np.ndindex(*stack_shape)
        for top in range(0, height, band_rows)
    ]
    for done, (stack_index, rows) in enumerate(bands, 1):
        key = (slice(None), *stack_index, rows)
        band = np.asarray(scores[key])  # (C, rows, X)
        scores_to_probabilities(band)
        scores[key] = band
        classes[(*stack_index, rows)] = class_labels(band)
        yield Progress(done, len(bands), f"class probabilities: band {done} of {len(bands)}")
