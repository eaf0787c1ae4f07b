"""Fine-tuning at the starting model's object size: the user's images resized to it.

A U-Net learns objects of one size. Fine-tuning a model trained on nuclei 28
pixels across with nuclei 45 pixels across asks it to relearn the size as well
as the look; shrinking the user's images so their objects are 28 pixels across
keeps what the model knows about size and lets it learn the look alone, and
prediction with ``object_diameter="auto"`` resizes new images the same way.

`resize_factor` says how much an annotated image is resized (by the median
diameter of its annotated objects); `resized_annotation` resizes labels so they
stay exact; `ResizedTrainingRun` trains on the resized copies while previews and
validation stay on the user's pixel grid, so a live preview lies on its layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.ndimage import map_coordinates
from skimage.transform import resize

from ..predict.scale import resized_back, resized_image, resized_shape, typical_object_diameter
from .run import TrainingRun
from .targets import AnnotationKind
from .validation import (
    Preview,
    ValidationScores,
    class_map,
    pooled_scores,
    predict_probabilities,
    region_preview,
)

# Beyond this the user's objects are not the kind the starting model knows, and resizing
# more only costs memory (4× larger) or detail (4× smaller): resize by at most this much.
MAX_RESIZE = 4.0


def resize_factor(
    annotation: np.ndarray, kind: AnnotationKind, training_diameter: float | None
) -> float:
    """Return how much to resize an annotated image so its objects match the model's.

    Parameters
    ----------
    annotation : (Y, X) int array
        The user's annotation.
    kind : {"objects", "scribbles"}
        What it is. Only instance objects say how large the objects are:
        scribbles (strokes, not whole objects) are never resized.
    training_diameter : float or None
        Typical object diameter the starting model was trained on
        (``ModelInfo.object_diameter``); None: no resizing.

    Returns
    -------
    float
        ``training_diameter / median diameter of the annotated objects``, kept
        within ``[1 / MAX_RESIZE, MAX_RESIZE]``; 1 without objects or diameter.

    Examples
    --------
    >>> disk = (np.hypot(*np.mgrid[-20:21, -20:21]) <= 16).astype(int)  # 31.8 px across
    >>> round(resize_factor(disk, "objects", 15.9), 2)
    0.5
    >>> resize_factor(disk, "scribbles", 15.9)
    1.0
    """
    if kind != "objects" or training_diameter is None:
        return 1.0
    diameter = typical_object_diameter([annotation], kind="objects")
    if diameter is None:
        return 1.0
    return float(np.clip(training_diameter / diameter, 1 / MAX_RESIZE, MAX_RESIZE))


def resized_annotation(labels: np.ndarray, spatial_shape: Sequence[int]) -> np.ndarray:
    """Resize a label image (or a region mask) to ``(Y, X)``, keeping its values exact.

    Nearest neighbour, no smoothing: every output pixel takes the label of one
    input pixel, so no label is blended into a number that means something else.

    Examples
    --------
    >>> resized_annotation(np.array([[0, 7], [3, 0]], dtype=np.uint16), (4, 4))
    array([[0, 0, 7, 7],
           [0, 0, 7, 7],
           [3, 3, 0, 0],
           [3, 3, 0, 0]], dtype=uint16)
    """
    labels = np.asarray(labels)
    shape = tuple(spatial_shape)
    if labels.shape == shape:
        return labels.copy()
    resized = resize(labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    return resized.astype(labels.dtype, copy=False)


def resized_training_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize a training image, (Y, X) or channels first (C, Y, X), by `factor` (float32).

    Linear interpolation, anti-aliased when shrinking (`scale.resized_image`,
    as prediction resizes).
    """
    image = np.asarray(image)
    return resized_image(image, factor, 0 if image.ndim == 3 else None)


def spatial_shape_after(image: np.ndarray, factor: float) -> tuple[int, int]:
    """Return the ``(Y, X)`` shape of an image resized by `factor`."""
    height, width = np.shape(image)[-2:]
    return resized_shape((height, width), factor)  # type: ignore[return-value]


def _sample_positions(start: int, stop: int, user: int, resized: int) -> np.ndarray:
    """Return where user pixels ``start:stop`` lie on the resized grid (pixel centres)."""
    return (np.arange(start, stop) + 0.5) * (resized / user) - 0.5


class ResizedTrainingRun(TrainingRun):
    """A `TrainingRun` on resized copies of the user's images.

    Patches, steps, saving and resuming are those of `TrainingRun`, on the
    resized images (``images``, ``targets``). What the user sees stays on the
    user's pixel grid: `preview_training_image` takes and returns regions of
    the image as the user has it, and `validate` predicts each validation
    image resized by its factor, brings the probabilities back
    (`scale.resized_back`) and compares them with the annotation as painted.

    Parameters
    ----------
    *args
        Those of `TrainingRun`, with the resized training images and targets
        and the validation pairs as the user has them.
    factors : sequence of float
        How much each training image was resized.
    user_shapes : sequence of (int, int)
        ``(Y, X)`` of each training image as the user has it.
    validation_factors : sequence of float
        How much to resize each validation image for the network.
    trained_diameter : float
        Object diameter the images were resized to (the starting model's).
    annotation_diameter : float or None
        Median diameter of the user's annotated objects, as painted.
    """

    def __init__(
        self,
        *args,
        factors: Sequence[float],
        user_shapes: Sequence[tuple[int, int]],
        validation_factors: Sequence[float] = (),
        trained_diameter: float,
        annotation_diameter: float | None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.factors = [float(f) for f in factors]
        self.user_shapes = [tuple(map(int, s)) for s in user_shapes]
        self.validation_factors = [float(f) for f in validation_factors]
        self.trained_diameter = float(trained_diameter)
        self.annotation_diameter = annotation_diameter

    def preview_training_image(
        self, index: int, region: tuple[slice, slice] | None = None
    ) -> Preview:
        """Predict a region of training image `index`, in the user's pixels.

        `region` is in the image as the user has it; the network predicts the
        matching part of the resized image (with its context, as
        `validation.region_preview` does), and the classes (nearest) and the
        uncertainty (linear) are sampled back at the user's pixel centres.
        """
        if not 0 <= index < len(self.images):
            raise ValueError(f"there is no training image {index} (there are {len(self.images)})")
        height, width = self.user_shapes[index]
        resized_height, resized_width = self.images[index].shape[-2:]
        if region is None:
            region = (slice(0, height), slice(0, width))
        rows = slice(*region[0].indices(height)[:2])
        cols = slice(*region[1].indices(width)[:2])
        if rows.stop <= rows.start or cols.stop <= cols.start:
            raise ValueError("the preview region is empty")
        ys = _sample_positions(rows.start, rows.stop, height, resized_height)
        xs = _sample_positions(cols.start, cols.stop, width, resized_width)
        # the resized pixels the samples fall between, one more each side
        top = max(int(np.floor(ys[0])), 0)
        left = max(int(np.floor(xs[0])), 0)
        bottom = min(int(np.ceil(ys[-1])) + 1, resized_height)
        right = min(int(np.ceil(xs[-1])) + 1, resized_width)
        shown = region_preview(
            self.model,
            self.images[index],
            (slice(top, bottom), slice(left, right)),
            None,
            self.step,
            index,
        )
        grid = np.meshgrid(ys - top, xs - left, indexing="ij")
        classes = map_coordinates(shown.classes, grid, order=0, mode="nearest")
        uncertainty = map_coordinates(shown.uncertainty, grid, order=1, mode="nearest")
        return Preview(self.step, index, (rows, cols), classes, uncertainty)

    def validate(self) -> ValidationScores | None:
        """Return the scores on the validation images, on their own pixel grid (None without)."""
        if not self.validation:
            return None
        factors = self.validation_factors or [1.0] * len(self.validation)

        def predictions() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for (image, target), factor in zip(self.validation, factors, strict=True):
                truth = class_map(target)
                resized = image if factor == 1 else resized_training_image(image, factor)
                normalization = self.settings.normalization
                probabilities = predict_probabilities(self.model, resized, normalization)
                yield resized_back(probabilities, truth.shape).argmax(axis=0), truth

        return pooled_scores(predictions(), self.model.config.n_classes)


def resized_target_shape(run: TrainingRun, index: int) -> tuple[int, int] | None:
    """Return the ``(Y, X)`` the annotations of training image `index` are resized to.

    None when the run trains on the image as the user has it.
    """
    if not isinstance(run, ResizedTrainingRun) or run.factors[index] == 1:
        return None
    return tuple(run.images[index].shape[-2:])  # type: ignore[return-value]


__all__ = [
    "MAX_RESIZE",
    "ResizedTrainingRun",
    "resize_factor",
    "resized_annotation",
    "resized_target_shape",
    "resized_training_image",
    "spatial_shape_after",
]
