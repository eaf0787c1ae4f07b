"""Layer pickers that follow the viewer: a sensible layer chosen, kept up with adds and renames."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox
from magicgui.widgets.bases import ValueWidget
from napari.layers import Image, Labels, Layer

from .docks import qt_deleted
from .layers import PLUGIN_KEY, image_data


def made_by_user(layer: Layer) -> bool:
    """Return True if `layer` is not a result this plugin added."""
    return PLUGIN_KEY not in layer.metadata


def annotation_match(image: Image | None, labels: Labels) -> int:
    """Say how likely `labels` annotates `image`: 2 same size and named after it, 1 same size.

    Used to preselect the annotations of the image chosen for training, such as
    "nuclei_1 ground truth" for "nuclei_1".
    """
    if image is None:
        return 0
    pixels = image_data(image).shape
    rows_columns = pixels[-3:-1] if image.rgb else pixels[-2:]
    annotated = np.shape(labels.data[0] if labels.multiscale else labels.data)[-2:]
    if tuple(annotated) != tuple(rows_columns):
        return 0
    return 2 if labels.name.startswith(image.name) else 1


class LayerPicker(ComboBox):
    """Choose one of the viewer's layers; the choice follows layers added, removed and renamed.

    While the user has not chosen, the picker chooses for them: a layer the user
    made (never a result of this plugin), the best by `prefer`, then the one
    selected in the viewer, then the newest. A layer added later replaces such a
    guess (File ▸ Open Sample, then Segment, just works). A layer the user chose
    stays chosen as long as it exists, renamed or moved.

    Parameters
    ----------
    viewer : napari.Viewer
        Whose layers are offered.
    label : str
        What the choice is called in the dock.
    kinds : layer class or tuple of them
        The kinds of layers offered.
    accept : callable, optional
        Offers only the layers for which it returns True.
    prefer : callable, optional
        Ranks the layers to guess from (higher is better), e.g. `annotation_match`.
    follows : ValueWidget, optional
        A guess is made again when this widget's value changes (the annotations
        follow the image).
    nothing : str, optional
        The text of a choice of no layer, listed first and chosen until the user
        picks a layer ("whole image"). Without it the picker guesses, and holds
        None only when there is no layer to offer.
    """

    def __init__(
        self,
        viewer: Any,
        label: str,
        kinds: type[Layer] | tuple[type[Layer], ...],
        *,
        accept: Callable[[Layer], bool] | None = None,
        prefer: Callable[[Layer], int] | None = None,
        follows: ValueWidget | None = None,
        nothing: str | None = None,
    ):
        # set before ComboBox.__init__, which resets the choices
        self._viewer, self._kinds, self._nothing = viewer, kinds, nothing
        self._accept = accept or (lambda _layer: True)
        self._prefer = prefer or (lambda _layer: 0)
        self._guessed = True  # the value is the picker's guess, free to change
        self._guessing = False
        self._known: weakref.WeakSet[Layer] = weakref.WeakSet()  # offered at the last refresh
        super().__init__(label=label, choices=self._layer_choices, nullable=nothing is None)
        self.changed.connect(self._chosen)
        if follows is not None:
            follows.changed.connect(self._guess_again)
        self._following = [
            getattr(viewer.layers.events, name)
            for name in ("inserted", "removed", "reordered", "renamed")
        ]
        for event in self._following:
            event.connect(self.reset_choices)

    def _layer_choices(self, _widget=None) -> list[tuple[str, Layer | None]]:
        layers = [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, self._kinds) and self._accept(layer)
        ]
        return layers if self._nothing is None else [(self._nothing, None), *layers]

    def _offered(self) -> list[Layer]:
        return [layer for _, layer in self._layer_choices() if layer is not None]

    def _best_guess(self, layers: list[Layer]) -> Layer | None:
        if self._nothing is not None:
            return None  # "nothing" is the sensible choice until the user picks a layer
        active = self._viewer.layers.selection.active
        order = {id(layer): index for index, layer in enumerate(self._viewer.layers)}
        guesses = [layer for layer in layers if made_by_user(layer)]
        return max(
            guesses,
            key=lambda layer: (self._prefer(layer), layer is active, order[id(layer)]),
            default=None,
        )

    def _set_guess(self, layer: Layer | None) -> None:
        self._guessing = True
        try:
            self.value = layer
        finally:
            self._guessing = False
        self._guessed = True

    def _chosen(self, _value=None) -> None:
        if not self._guessing:
            self._guessed = self.value is None

    def _guess_again(self, _value=None) -> None:
        if self._guessed and not qt_deleted(self.native):
            self._set_guess(self._best_guess(self._offered()))

    def reset_choices(self, *_: Any) -> None:
        """Offer the layers there are now, keeping the chosen one (even renamed) or guessing."""
        if qt_deleted(self.native):
            self.stop_following()
            return
        before = self.value
        self._guessing = True
        try:
            super().reset_choices()  # magicgui matches choices by text: a rename loses the value
        finally:
            self._guessing = False
        offered = self._offered()
        new = [layer for layer in offered if layer not in self._known]
        self._known = weakref.WeakSet(offered)
        if self._guessed and self._best_guess(new) is not None:
            self._set_guess(self._best_guess(new))  # a layer just opened replaces a guess
        elif before is not None and before in offered:
            if self.value is not before:
                guessed = self._guessed
                self._set_guess(before)
                self._guessed = guessed
        else:
            self._set_guess(self._best_guess(offered))

    def stop_following(self) -> None:
        """Stop listening to the viewer's layers (when the widget closes)."""
        for event in self._following:
            event.disconnect(self.reset_choices)
        self._following = []
