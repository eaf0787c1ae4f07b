"""Watching the network learn: the loss plot, and its prediction where the user looks."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QTimer

from ...core.train import Preview, PreviewRequest
from ..layers import image_data, is_plugin_result, refresh_result, visible_region
from ..training_plot import TrainingPlot
from .pair import Pair

PREVIEW_PIXELS = 512  # edge of the largest preview, so it refreshes in well under a second


def capped(start: int, stop: int, length: int) -> slice:
    """Return the rows (or columns) start:stop inside 0:length, at most `PREVIEW_PIXELS` long.

    Examples
    --------
    >>> capped(-5, 2000, 1000)
    slice(244, 756, None)
    """
    start, stop = max(start, 0), min(stop, length)
    if stop <= start:
        start, stop = 0, length
    if stop - start > PREVIEW_PIXELS:  # keep the middle of the view
        start = (start + stop - PREVIEW_PIXELS) // 2
        stop = start + PREVIEW_PIXELS
    return slice(start, stop)


def preview_labels(classes: np.ndarray) -> np.ndarray:
    """Return predicted classes numbered as scribbles are, so one label is one class everywhere.

    Class c (1 and up) becomes label c + 1, as scribbles paint it; the
    background (class 0) stays 0, clear, so the image shows through.

    Examples
    --------
    >>> preview_labels(np.array([[0, 1, 2]], np.uint8))
    array([[0, 2, 3]], dtype=uint8)
    """
    return np.where(classes > 0, classes.astype(np.uint8) + 1, 0).astype(np.uint8)


STYLES = {  # role: (layer kind, name after the image's, look)
    "preview": (Labels, "preview", {"opacity": 0.5}),
    "uncertainty": (Image, "uncertainty", {
        "colormap": "inferno", "opacity": 0.6, "contrast_limits": (0.0, 1.0),
        "blending": "additive"}),
}  # fmt: skip


class LiveView:
    """The loss plot, and preview and uncertainty layers over the training image in view.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the preview layers go.
    """

    def __init__(self, viewer: Any):
        self._viewer = viewer
        self.plot = TrainingPlot()
        self._forward: list[Pair] = []  # pairs whose previews are on top while training

    def request(self, pairs: list[Pair]) -> PreviewRequest:
        """Ask for a preview where the user looks: the visible part of a training image, capped.

        The selected layer's image if it is one being trained on, else the first.
        """
        shown = [pair.image for pair in pairs]
        current = self._viewer.layers.selection.active
        index = shown.index(current) if current in shown else 0
        height, width = np.shape(image_data(shown[index]))[:2]  # training images are 2D or RGB
        region = visible_region(shown[index]) or ((0, height), (0, width))
        (top, bottom), (left, right) = region
        return PreviewRequest(index, (capped(top, bottom, height), capped(left, right, width)))

    def make_room(self, request: PreviewRequest, pair: Pair) -> list[Layer]:
        """Add empty preview layers where there are none yet, and return those added.

        napari draws a new layer slowly the first time; done before training,
        it never stalls the live preview. Existing previews are left as they are.
        """
        rows, cols = request.region
        empty = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.float32)
        data = {"preview": empty.astype(np.uint8), "uncertainty": empty}
        source = pair.image.name
        added = [
            self._refresh(role, data[role], pair.image, request.region)[0]
            for role in STYLES
            if not any(is_plugin_result(layer, role, source) for layer in self._viewer.layers)
        ]
        return added

    def bring_forward(self, pairs: list[Pair]) -> None:
        """Put the previews of `pairs` on top, shown, until `put_back`: what training shows."""
        self._forward = list(pairs)
        for pair in pairs:
            self._on_top(pair)

    def put_back(self) -> None:
        """Put the previews under their annotations again, which are the user's order.

        Only the plugin's layers ever moved, so the user's layers keep their order.
        """
        layers = self._viewer.layers
        for pair in self._forward:
            if pair.annotations not in layers:
                continue
            for layer in self._previews_of(pair):
                here, annotations = layers.index(layer), layers.index(pair.annotations)
                if here > annotations:
                    layers.move(here, annotations)  # just below the annotations
        self._forward = []

    def show(self, preview: Preview, pair: Pair) -> None:
        """Show a preview: one layer per turn of the event loop, so napari never waits long."""
        if pair.image not in self._viewer.layers:
            return
        labels = preview_labels(preview.classes)
        _, outcome = self._refresh("preview", labels, pair.image, preview.region)

        def show_uncertainty() -> None:
            self._refresh("uncertainty", preview.uncertainty, pair.image, preview.region)

        if outcome != "added":
            QTimer.singleShot(0, show_uncertainty)
            return
        show_uncertainty()  # the user removed the layers: add both, as Start does
        self._on_top(pair)

    def _refresh(self, role: str, data: np.ndarray, image: Image, region) -> tuple[Layer, str]:
        kind, suffix, style = STYLES[role]
        rows, cols = region
        scale = np.asarray(image.scale)[-2:]
        translate = np.asarray(image.translate)[-2:] + scale * (rows.start, cols.start)
        return refresh_result(
            self._viewer, data, kind=kind, name=f"{image.name} {suffix}", role=role,
            source=image.name, scale=scale, translate=translate, **style,
        )  # fmt: skip

    def _previews_of(self, pair: Pair) -> list[Layer]:
        source = pair.image.name
        return [
            layer
            for role in STYLES
            for layer in self._viewer.layers
            if is_plugin_result(layer, role, source)
        ]

    def _on_top(self, pair: Pair) -> None:
        """Show a pair's previews on top, coloured as its annotations; keep painting these."""
        layers = self._viewer.layers
        for layer in self._previews_of(pair):  # preview, then uncertainty over it
            layers.move(layers.index(layer), len(layers))
            layer.visible = True
            if isinstance(layer, Labels):  # one colour per class, as the user paints it
                layer.colormap = pair.annotations.colormap
        if pair.annotations in layers:
            layers.selection.active = pair.annotations  # new layers took the selection

    def remove(self, added: list[Layer]) -> None:
        """Remove layers `make_room` added (a Start that failed leaves nothing behind)."""
        for layer in added:
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
