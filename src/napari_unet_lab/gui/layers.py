"""Between napari layers and the core: arrays out, result layers in, user layers untouched."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer

from ..core.images import channels_first

# Key in a layer's metadata marking the layers this plugin made.
PLUGIN_KEY = "napari_unet_lab"


def image_data(layer: Image) -> Any:
    """Return the full-resolution array of an image layer (level 0 of a pyramid)."""
    return layer.data[0] if layer.multiscale else layer.data


def spatial_placement(layer: Image, channel_axis: int | None, ndim: int) -> dict[str, Any]:
    """Return scale and translate for a result of `ndim` dims laid over `layer`.

    The channel axis of a multichannel image is dropped; RGB layers already
    leave it out of their scale.
    """
    scale, translate = list(layer.scale), list(layer.translate)
    if channel_axis is not None and not layer.rgb and len(scale) > ndim:
        del scale[channel_axis], translate[channel_axis]
    placement = {"scale": scale[-ndim:], "translate": translate[-ndim:]}
    units = getattr(layer, "units", None)
    if units is not None and len(units) >= ndim:
        placement["units"] = [str(unit) for unit in units[-ndim:]]
    return placement


def _checksum(data: Any) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(data)).view(np.uint8)).hexdigest()


def is_plugin_result(layer: Layer, role: str, source: str, model: str | None = None) -> bool:
    """Return True if `layer` is this plugin's `role` result for the image `source`.

    Results made by a model say which (`show_result`'s `model`); they are
    another model's results to keep, never this one's to update.
    """
    mark = layer.metadata.get(PLUGIN_KEY)
    return (
        isinstance(mark, dict)
        and mark.get("role") == role
        and mark.get("source") == source
        and mark.get("model") == model
    )


def was_edited(layer: Layer) -> bool:
    """Return True if the data of a result layer changed since the plugin wrote it."""
    mark = layer.metadata.get(PLUGIN_KEY, {})
    return mark.get("checksum") != _checksum(layer.data)


def show_result(
    viewer: Any,
    data: np.ndarray,
    *,
    kind: type[Layer],
    name: str,
    role: str,
    source: str,
    model: str | None = None,
    **properties: Any,
) -> tuple[Layer, str]:
    """Add a result layer, or update the plugin's own layer from an earlier run.

    `kind` is the layer class: Image, Labels, or Shapes given float32 shapes of 4
    vertices each (rectangles, ellipses): napari stores vertices as float32, and
    the shape types survive an update.

    A layer is only reused if this plugin made it for the same image with the
    same `model` (the name of the model that made the result, recorded in the
    layer's metadata) and nobody edited it since; a user's layer, another
    model's result, or a result the user corrected is kept where it is, and the
    new result goes into a new layer.

    Returns
    -------
    (Layer, str)
        The layer showing `data`, and what happened: "added", "updated" or
        "kept edited" (a new layer was added beside the edited one).
    """
    mark = {"role": role, "source": source, "checksum": _checksum(data)}
    if model is not None:
        mark["model"] = model
    previous = [
        layer
        for layer in viewer.layers
        if isinstance(layer, kind) and is_plugin_result(layer, role, source, model)
    ]
    reusable = [layer for layer in previous if not was_edited(layer)]
    if reusable:
        layer = reusable[-1]
        layer.data = data
        for key in ("scale", "translate"):
            if key in properties:
                setattr(layer, key, properties[key])
        layer.metadata[PLUGIN_KEY] = mark
        return layer, "updated"
    layer = viewer.add_layer(kind(data, name=name, metadata={PLUGIN_KEY: mark}, **properties))
    return layer, "kept edited" if previous else "added"


def refresh_result(
    viewer: Any,
    data: np.ndarray,
    *,
    kind: type[Layer],
    name: str,
    role: str,
    source: str,
    **properties: Any,
) -> tuple[Layer, str]:
    """Like `show_result`, but cheap when the plugin's layer has data of the same shape.

    Meant for results shown again and again (live previews): the layer's array
    is overwritten in place and only the changed labels are repainted, which
    costs napari a fraction of a new array. Everything else (a new shape, a
    user's layer, an edited result) goes through `show_result`.
    """
    mark = {"role": role, "source": source}
    for layer in viewer.layers:
        if not (isinstance(layer, kind) and is_plugin_result(layer, role, source)):
            continue
        if was_edited(layer) or np.shape(layer.data) != np.shape(data):
            break
        if "translate" in properties and not np.allclose(layer.translate, properties["translate"]):
            layer.translate = properties["translate"]
        if isinstance(layer, Labels):
            changed = np.nonzero(layer.data != data)
            layer.data_setitem(changed, data[changed], refresh=True)  # napari's painting path
        else:
            layer.data[...] = data
            layer.refresh()
        layer.metadata[PLUGIN_KEY] = {**mark, "checksum": _checksum(data)}
        return layer, "updated"
    return show_result(viewer, data, kind=kind, name=name, role=role, source=source, **properties)


def image_axes(layer: Image, channel_axis: int | None) -> tuple[list[int], tuple[int, int]]:
    """Return the stack axes (slices, time points) and the (Y, X) axes of an image's data.

    For RGB layers the colour axis is last and neither; a channel axis is neither.
    """
    ndim = image_data(layer).ndim
    spatial = (ndim - 3, ndim - 2) if layer.rgb else (ndim - 2, ndim - 1)
    stack = [axis for axis in range(spatial[0]) if axis != channel_axis]
    return stack, spatial


def current_stack_index(viewer: Any, layer: Image, channel_axis: int | None) -> list[int]:
    """Return the index along each stack axis of the plane the viewer shows now."""
    data = image_data(layer)
    stack, _ = image_axes(layer, channel_axis)
    position = layer.world_to_data(viewer.dims.point)  # over the layer's dims (RGB: no colour)
    return [int(np.clip(np.round(position[axis]), 0, data.shape[axis] - 1)) for axis in stack]


def image_plane(layer: Image, channel_axis: int | None, stack_index: list[int]) -> Any:
    """Return one 2D plane of an image, ``(Y, X)`` or channels first ``(C, Y, X)``, lazily.

    `stack_index` gives the index along each stack axis (see `image_axes`).
    """
    data = image_data(layer)
    stack, _ = image_axes(layer, channel_axis)
    index: list[Any] = [slice(None)] * data.ndim
    for axis, step in zip(stack, stack_index, strict=True):
        index[axis] = step
    plane = data[tuple(index)]
    return channels_first(plane, channel_axis=-1) if layer.rgb else plane


def visible_region(layer: Image) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Return the rows and columns of an image in view, half-open; None if unknown.

    Read from the layer's `corner_pixels`, which napari keeps up to date with the
    canvas (in the coordinates of the level shown, for pyramids).
    """
    corners = np.asarray(layer.corner_pixels, dtype=float)
    if corners.size == 0 or not corners.any():
        return None
    if layer.multiscale:
        corners = corners * np.asarray(layer.downsample_factors[layer.data_level])
    ndim = corners.shape[1]
    rows, columns = (ndim - 2, ndim - 1)
    top, left = corners[0, rows], corners[0, columns]
    bottom, right = corners[1, rows], corners[1, columns]
    if bottom < top or right < left:
        return None
    return (int(top), int(bottom) + 1), (int(left), int(right) + 1)
