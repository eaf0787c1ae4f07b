"""Layers that show inside a U-Net: feature maps, input gradients, receptive fields."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.layers import Image, Shapes

from ..core.look_inside.feature_maps import FeatureMap
from ..core.look_inside.receptive_field import EffectiveReceptiveField, PixelGradient
from ..core.model.unet import UNet
from .layers import show_result, spatial_placement

# Roles of the layers Look inside makes from a model: stale once the model changes.
LOOK_INSIDE_ROLES = (
    "feature maps",
    "input gradient",
    "receptive field",
    "effective receptive field trained",
    "effective receptive field untrained",
    "receptive field sizes",
)


@contextmanager
def keeping_the_view(viewer: Any) -> Iterator[None]:
    """Keep the camera's centre and zoom while layers are added or changed.

    napari refits the view to all layers whenever the number of dimensions
    changes (feature maps add a channel axis); the user's place is kept instead.
    """
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    centre, zoom = tuple(camera.center), camera.zoom
    try:
        yield
    finally:
        camera.center, camera.zoom = centre, zoom


def reading_of_radius(fields: Sequence[EffectiveReceptiveField]) -> str:
    """Say in a line how far around each pixel the network looks, trained first.

    The radius holding 86 % of the gradient: it needs no model of the shape
    (see `EffectiveReceptiveField.radius_holding`).
    """
    radii = [erf.radius_holding() if np.abs(erf.gradient).any() else None for erf in fields]
    if radii[0] is None:
        return "No gradient reached the image: this network ignores it here."
    text = f"This network uses about {radii[0]:.0f} px around each pixel"
    if len(radii) > 1 and radii[1] is not None:
        text += f" (untrained, it would use about {radii[1]:.0f} px)"
    return text + "."


def why_the_rectangles_differ(model: UNet, erf: EffectiveReceptiveField) -> str:
    """Say in a line how the averaged rectangle relates to the rectangle of a clicked pixel.

    A clicked pixel's rectangle is its own theoretical receptive field; the
    average lays every pixel's field over one another, and the pooling grid
    shifts them by a few pixels depending on where each pixel lies.
    """
    (first, last), _ = erf.theoretical
    union, single = last - first + 1, model.receptive_field
    if union == single:
        return f"The rectangle spans {union} px, as for a clicked pixel."
    return (
        f"The rectangle spans {union} px, more than a clicked pixel's ({single} px at most): "
        f"where a pixel lies on the pooling grid shifts its field, so together they span "
        f"{union - single} px more."
    )


def show_feature_map(
    viewer: Any, feature: FeatureMap, image: Image, channel_axis: int | None, stack_index: list[int]
) -> Image:
    """Show one stage's feature maps in the image's one feature-map layer, over what each sees.

    One layer for all stages, so the channel slider spans the stage shown only
    (napari's sliders span every layer). Channels go on the first axis, then
    one axis of length 1 per stack axis, at the plane the maps were taken from.
    """
    placement = spatial_placement(image, channel_axis, len(stack_index) + 2)
    stack_scale = np.asarray(placement["scale"][:-2], float)
    stack_translate = np.asarray(placement["translate"][:-2], float)
    scale = np.asarray(placement["scale"][-2:], float)
    translate = np.asarray(placement["translate"][-2:], float)
    activations = feature.activations  # (C, Y, X)
    data = activations.reshape(
        (len(activations),) + (1,) * len(stack_index) + activations.shape[1:]
    )
    low, high = np.percentile(activations, [0.5, 99.5])
    limits = (float(low), float(high) if high > low else float(low) + 1.0)
    name = f"{image.name} {feature.stage}"
    shown, _ = show_result(
        viewer,
        data,
        kind=Image,
        name=name,
        role="feature maps",
        source=image.name,
        scale=[1.0, *stack_scale, *(scale * feature.step)],
        translate=[
            0.0,
            *(stack_translate + stack_scale * np.asarray(stack_index)),
            *(translate + scale * np.asarray(feature.origin)),
        ],
        colormap="viridis",
    )
    shown.name = name  # an updated layer keeps its name otherwise
    shown.contrast_limits_range = limits
    shown.contrast_limits = limits
    return shown


def show_input_gradients(
    viewer: Any,
    results: Sequence[PixelGradient],
    source: str,
    scale: np.ndarray,
    translate: np.ndarray,
) -> None:
    """Show the input gradients at probed pixels as one heat map, with their receptive fields.

    Each gradient is scaled to its own peak; where they overlap the larger
    value shows. `scale` and `translate` place the image's (Y, X) pixels.
    """
    top = min(r.origin[0] for r in results)
    left = min(r.origin[1] for r in results)
    bottom = max(r.origin[0] + r.gradient.shape[1] for r in results)
    right = max(r.origin[1] + r.gradient.shape[2] for r in results)
    heat = np.zeros((bottom - top, right - left), np.float32)
    for result in results:
        magnitude = result.magnitude
        peak = magnitude.max()
        rows = slice(result.origin[0] - top, result.origin[0] - top + magnitude.shape[0])
        columns = slice(result.origin[1] - left, result.origin[1] - left + magnitude.shape[1])
        if peak > 0:
            heat[rows, columns] = np.maximum(heat[rows, columns], magnitude / peak)
    show_result(
        viewer,
        heat,
        kind=Image,
        name=f"{source} input gradient",
        role="input gradient",
        source=source,
        scale=list(scale),
        translate=list(translate + scale * np.array([top, left])),
        colormap="inferno",
        blending="additive",
        contrast_limits=(0.0, 1.0),
    )
    windows = [result.window for result in results]
    rectangles = [_rectangle(rows, columns, scale, translate) for rows, columns in windows]
    show_result(
        viewer,
        rectangles,
        kind=Shapes,
        name=f"{source} receptive field",
        role="receptive field",
        source=source,
        shape_type="rectangle",
        edge_color="yellow",
        face_color="transparent",
        edge_width=max(scale) * 1.5,
    )


def show_effective_receptive_fields(
    viewer: Any,
    fields: Sequence[EffectiveReceptiveField],
    source: str,
    scale: np.ndarray,
    corner: np.ndarray,
) -> list[str]:
    """Show averaged receptive fields side by side from `corner` (world), trained first.

    Each comes with its theoretical extent (a rectangle), the fitted Gaussian's
    2 sigma (yellow circle) and the circle holding 86 % of the gradient (cyan).

    Returns
    -------
    list of str
        The effective radii, one line per network, for the status line.
    """
    labels = ["trained", "untrained"][: len(fields)]
    shapes, shape_types, texts, colours, radii = [], [], [], [], []
    for erf, label in zip(fields, labels, strict=True):
        size = erf.gradient.shape[0]
        show_result(
            viewer,
            np.abs(erf.gradient).astype(np.float32),
            kind=Image,
            name=f"{source} effective receptive field ({label})",
            role=f"effective receptive field {label}",
            source=source,
            scale=list(scale),
            translate=list(corner),
            colormap="inferno",
        )
        shapes.append(_rectangle((0, size - 1), (0, size - 1), scale, corner))
        shape_types.append("rectangle")
        texts.append(label)
        colours.append("yellow")
        if erf.fit is not None:
            fitted = np.array(erf.centre) + np.array(erf.fit.centre)
            radius, held = erf.fit.effective_radius, erf.radius_holding()
            radii.append(f"{label} {radius:.1f} px (86 % of the gradient within {held:.1f} px)")
            circles = ((fitted, radius, "yellow"), (erf.centre, held, "cyan"))
            for centre, circle_radius, colour in circles:
                shapes.append(_circle(centre, circle_radius, scale, corner))
                shape_types.append("ellipse")
                texts.append("")
                colours.append(colour)
        corner = corner + scale * np.array([0.0, 1.5 * size + 10.0])  # room for the labels
    show_result(
        viewer,
        shapes,
        kind=Shapes,
        name=f"{source} receptive field sizes",
        role="receptive field sizes",
        source=source,
        shape_type=shape_types,
        edge_color=colours,
        face_color="transparent",
        edge_width=max(scale) * 1.5,
        features={"label": texts},
        text={"string": "{label}", "anchor": "upper_left", "color": "yellow", "size": 9},
    )
    return radii


def _rectangle(rows, columns, scale, translate) -> np.ndarray:
    """Corners, in world coordinates, of the pixels rows[0]..rows[1] x columns[0]..columns[1].

    float32, as napari stores shapes, so `show_result` sees an unedited layer.
    """
    top, bottom = rows[0] - 0.5, rows[1] + 0.5  # pixel edges, not centres
    left, right = columns[0] - 0.5, columns[1] + 0.5
    corners = np.array([[top, left], [top, right], [bottom, right], [bottom, left]], float)
    return (translate + scale * corners).astype(np.float32)


def _circle(centre, radius, scale, translate) -> np.ndarray:
    """Bounding-box corners, in world coordinates, of a circle about an image position."""
    rows = (centre[0] - radius + 0.5, centre[0] + radius - 0.5)  # _rectangle adds the half pixels
    columns = (centre[1] - radius + 0.5, centre[1] + radius - 0.5)
    return _rectangle(rows, columns, scale, translate)
