"""Between napari layers and the core: arrays out, result layers in, user layers untouched."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer

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


def is_plugin_result(layer: Layer, role: str, source: str) -> bool:
    """Return True if `layer` is this plugin's `role` result for the image `source`."""
    mark = layer.metadata.get(PLUGIN_KEY)
    return isinstance(mark, dict) and mark.get("role") == role and mark.get("source") == source


def was_edited(layer: Layer) -> bool:
    """Return True if the data of a result layer changed since the plugin wrote it."""
    mark = layer.metadata.get(PLUGIN_KEY, {})
    return mark.get("checksum") != _checksum(layer.data)


def show_result(
    viewer: Any,
    data: np.ndarray,
    *,
    kind: type[Image] | type[Labels],
    name: str,
    role: str,
    source: str,
    **properties: Any,
) -> tuple[Layer, str]:
    """Add a result layer, or update the plugin's own layer from an earlier run.

    A layer is only reused if this plugin made it for the same image and nobody
    edited it since; a user's layer, or a result the user corrected, is kept and
    the new result goes into a new layer.

    Returns
    -------
    (Layer, str)
        The layer showing `data`, and what happened: "added", "updated" or
        "kept edited" (a new layer was added beside the edited one).
    """
    mark = {"role": role, "source": source, "checksum": _checksum(data)}
    previous = [
        layer
        for layer in viewer.layers
        if isinstance(layer, kind) and is_plugin_result(layer, role, source)
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
