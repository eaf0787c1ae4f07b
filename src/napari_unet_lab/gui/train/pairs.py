"""What to train on: (image, annotations) pairs of layers, and the pair held out for validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, PushButton, Select
from napari.layers import Image, Labels, Shapes

from ..pickers import LayerPicker, annotation_match
from .pair import Pair

KINDS = [
    ("objects (each its own label)", "objects"),
    ("scribbles (1 = background, 2… = classes)", "scribbles"),
]


class TrainingPairs(Container):
    """Choose image and annotation layers, add them as pairs, and hold one out to validate on.

    Parameters
    ----------
    viewer : napari.Viewer
        Whose layers are offered.
    tell : callable
        Shows the user a problem (a missing layer), in plain words.
    """

    def __init__(self, viewer: Any, tell: Callable[[str], None]):
        self._viewer, self._tell = viewer, tell
        self._pairs: list[Pair] = []
        self.image = LayerPicker(viewer, "Image", Image)
        self.annotations = LayerPicker(
            viewer, "Annotations", Labels,
            prefer=lambda labels: annotation_match(self.image.value, labels), follows=self.image,
        )  # fmt: skip
        self.kind = ComboBox(label="Annotations are", choices=KINDS, value="objects")
        self.region = LayerPicker(viewer, "Only inside", Shapes, nothing="whole image")
        self.add_button = PushButton(text="Add pair")
        self.added = Select(label="Training pairs", choices=self._pair_choices)
        self.remove_button = PushButton(text="Remove selected pairs")
        self.validation = ComboBox(label="Validate on", choices=self._validation_choices)
        super().__init__(
            widgets=[self.image, self.annotations, self.kind, self.region, self.add_button,
                     self.added, self.remove_button, self.validation],
            labels=True, label="",
        )  # fmt: skip
        self.margins = (0, 0, 0, 0)
        self.kind.tooltip = (
            "Objects: every object its own label, everything else background. "
            "Scribbles: paint 1 on background and 2, 3… on each class; 0 is ignored."
        )
        self.region.tooltip = "Draw rectangles in a Shapes layer: only inside them counts."
        self.validation.tooltip = "A pair held out from training to measure IoU and Dice on."
        self.add_button.changed.connect(self.add)
        self.remove_button.changed.connect(self.remove_selected)

    # ---------------------------------------------------------------- choices
    def _pair_choices(self, _widget=None):
        return [(pair.name, index) for index, pair in enumerate(self._pairs)]

    def _validation_choices(self, _widget=None):
        return [("nothing (train on all)", None), *self._pair_choices()]

    def reset_choices(self, *_: Any) -> None:
        """Forget pairs whose layers are gone, and offer the layers there are now."""
        layers = self._viewer.layers
        self._pairs = [
            pair
            for pair in self._pairs
            if pair.image in layers
            and pair.annotations in layers
            and (pair.region is None or pair.region in layers)
        ]
        super().reset_choices()

    # ---------------------------------------------------------------- editing
    def add(self) -> None:
        """Add the image and annotations chosen now as a training pair."""
        if self.image.value is None or self.annotations.value is None:
            self._tell("choose an image and its annotations (a Labels layer) first")
            return
        pair = Pair(self.image.value, self.annotations.value, self.kind.value, self.region.value)
        if pair not in self._pairs:
            self._pairs.append(pair)
        self.added.reset_choices()
        self.validation.reset_choices()

    def remove_selected(self) -> None:
        """Remove the pairs selected in the list."""
        chosen = set(self.added.value)
        self._pairs = [pair for index, pair in enumerate(self._pairs) if index not in chosen]
        self.added.reset_choices()
        self.validation.reset_choices()

    def chosen(self) -> tuple[list[Pair], list[Pair]]:
        """Return the pairs to train on and the pair (if any) to validate on.

        Without added pairs, the image and annotations chosen now are the one pair.
        """
        pairs = list(self._pairs)
        if not pairs:
            if self.image.value is None or self.annotations.value is None:
                raise ValueError(
                    "choose an image and its annotations (a Labels layer; paint some first)"
                )
            pairs = [Pair(self.image.value, self.annotations.value, self.kind.value,
                          self.region.value)]  # fmt: skip
        held_out = self.validation.value
        validation = [pairs[held_out]] if held_out is not None and held_out < len(pairs) else []
        training = [pair for index, pair in enumerate(pairs) if index != held_out]
        if not training:
            raise ValueError("keep at least one pair for training, not only for validation")
        return training, validation
