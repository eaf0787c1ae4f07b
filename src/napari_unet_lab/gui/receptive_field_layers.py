"""Layers that show how far a U-Net looks: input gradients, receptive-field rectangles, circles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Shapes

from ..core.look_inside.receptive_field import EffectiveReceptiveField, PixelGradient
from .layers import show_result


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
