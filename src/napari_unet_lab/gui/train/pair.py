"""One training pair: an image layer and its annotations, turned into arrays for the core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels, Shapes

from ...core.images import channels_first
from ...core.train import AnnotatedImage, rectangles_mask
from ..layers import image_data


def training_image(layer: Image) -> np.ndarray:
    """Return a layer's pixels as (Y, X), or (C, Y, X) for RGB(A); refuse stacks."""
    data = np.asarray(image_data(layer))
    if layer.rgb:
        data = channels_first(data, channel_axis=-1)  # RGB(A): the rule prediction uses
    elif data.ndim != 2:
        raise ValueError(
            f"{layer.name!r} has {data.ndim} dimensions {data.shape}; training takes 2D "
            "images (or RGB): open single planes as their own layers"
        )
    return data


def region_mask(shapes: Shapes | None, labels: Labels) -> np.ndarray | None:
    """Return the pixels inside the rectangles of a Shapes layer, in the labels' pixel grid."""
    if shapes is None:
        return None
    boxes = []
    for corners in shapes.data:
        # shapes' data coordinates → world → the labels layer's pixels
        pixels = [labels.world_to_data(shapes.data_to_world(c)) for c in corners]
        pixels = np.asarray(pixels)[:, -2:]
        (top, left), (bottom, right) = pixels.min(axis=0), pixels.max(axis=0)
        boxes.append((top, left, bottom, right))
    if not boxes:
        raise ValueError(f"{shapes.name!r} has no rectangles: draw some, or train on everything")
    return rectangles_mask(labels.data.shape[-2:], boxes)


@dataclass(frozen=True)
class Pair:
    """An image layer, the Labels layer annotating it, and where the annotations hold."""

    image: Image
    annotations: Labels
    kind: str  # "objects" or "scribbles"
    region: Shapes | None = None  # only inside its rectangles; None: the whole image

    @property
    def name(self) -> str:
        """How the pair is listed, and recorded in a model file's provenance."""
        where = f", inside {self.region.name}" if self.region is not None else ""
        return f"{self.image.name} ← {self.annotations.name} ({self.kind}{where})"

    def annotated_image(self) -> AnnotatedImage:
        """Return the pair as arrays for the core; the annotations copied, as painting goes on."""
        return AnnotatedImage(
            image=training_image(self.image),
            annotation=np.array(self.annotations.data),
            kind=self.kind,
            region=region_mask(self.region, self.annotations),
            name=f"{self.annotations.name!r}",
            rgb=self.image.rgb,  # a grayscale model trains on its luminance
        )
