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
        if added:
            self._annotations_on_top(pair)
        return added

    def show(self, preview: Preview, pair: Pair) -> None:
        """Show a preview: one layer per turn of the event loop, so napari never waits long."""
        if pair.image not in self._viewer.layers:
            return
        _, outcome = self._refresh("preview", preview.classes, pair.image, preview.region)

        def show_uncertainty() -> None:
            self._refresh("uncertainty", preview.uncertainty, pair.image, preview.region)

        if outcome != "added":
            QTimer.singleShot(0, show_uncertainty)
            return
        show_uncertainty()  # the user removed the layers: add both, as Start does
        self._annotations_on_top(pair)

    def _refresh(self, role: str, data: np.ndarray, image: Image, region) -> tuple[Layer, str]:
        kind, suffix, style = STYLES[role]
        rows, cols = region
        scale = np.asarray(image.scale)[-2:]
        translate = np.asarray(image.translate)[-2:] + scale * (rows.start, cols.start)
        return refresh_result(
            self._viewer, data, kind=kind, name=f"{image.name} {suffix}", role=role,
            source=image.name, scale=scale, translate=translate, **style,
        )  # fmt: skip

    def _annotations_on_top(self, pair: Pair) -> None:
        # new layers land on top: put the annotations back above them, selected, so
        # painting goes on undisturbed
        annotations, layers = pair.annotations, self._viewer.layers
        if annotations in layers:
            layers.move(layers.index(annotations), len(layers))
            layers.selection.active = annotations

    def remove(self, added: list[Layer]) -> None:
        """Remove layers `make_room` added (a Start that failed leaves nothing behind)."""
        for layer in added:
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
