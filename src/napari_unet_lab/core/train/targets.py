"""Training targets from instance annotations: class maps and border weight maps.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
       Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

# The separation term is left out where it is below this share of w0.
NEGLIGIBLE = 1e-4

BACKGROUND, NUCLEUS = 0, 1

# Target value of pixels the loss ignores: not annotated, or outside the annotated rectangles.
UNANNOTATED = -1

AnnotationKind = Literal["objects", "scribbles"]

# Most classes a network may learn from scribbles, background included: previews hold
# classes as uint8, and a stray label (say 70000) must not build a 69,999-class network.
MAX_CLASSES = 256


def sequential_labels(labels: np.ndarray) -> np.ndarray:
    """Return instance labels renumbered 1, 2, 3, … in the order of their ids, as int64.

    Object ids can be anything (2**40, 1e8); the per-object work of border
    weights is sized by the largest id, so ids are made consecutive first.
    The order is kept, so which of two touching objects gives way to the gap
    (`semantic_target_from_instances`) does not change.

    Examples
    --------
    >>> sequential_labels(np.array([[0, 2**40, 7, 7]], dtype=np.uint64))
    array([[0, 2, 1, 1]])
    """
    labels = np.asarray(labels)
    if labels.size and labels.max(initial=0) <= labels.size:
        return labels.astype(np.int64, copy=False)  # already cheap: ids bounded by pixels
    return relabel_sequential(labels)[0].astype(np.int64)


def semantic_target_from_instances(labels: np.ndarray) -> np.ndarray:
    """Return a background/object class map with a gap between touching objects.

    Parameters
    ----------
    labels : (Y, X) array of int
        Instance ids: 0 is background, each other value one object.

    Returns
    -------
    (Y, X) uint8 array
        0 for background, 1 for objects. An object pixel that has a pixel of
        another object with a larger id among its 8 neighbours is set to 0, so
        touching objects are separated by a gap one pixel wide and no two
        objects touch, even diagonally. The network learns to leave that gap,
        which lets connected components of its prediction separate the objects
        again, as in [1]_.

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
           for Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.

    Examples
    --------
    >>> labels = np.array([[1, 1, 2, 2]])
    >>> semantic_target_from_instances(labels)
    array([[1, 0, 1, 1]], dtype=uint8)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2D label image, got {labels.ndim} dimensions")
    largest_neighbour = ndi.maximum_filter(labels, size=3, mode="constant", cval=0)
    target = (labels > 0).astype(np.uint8)
    target[(labels > 0) & (largest_neighbour > labels)] = BACKGROUND
    return target


def class_balance_weights(targets: Sequence[np.ndarray], n_classes: int = 2) -> np.ndarray:
    """Return per-class weights that balance class frequencies over some class maps.

    Weight of class c is ``N / (n_classes * N_c)`` (N pixels in all, N_c of class
    c), so every class contributes equally to a weighted loss and the mean
    weight per pixel is 1. Absent classes get weight 0.

    Parameters
    ----------
    targets : sequence of int arrays
        Class maps, such as those of `semantic_target_from_instances`.
    n_classes : int
        Number of classes.

    Returns
    -------
    (n_classes,) float64 array
    """
    counts = np.zeros(n_classes, dtype=np.int64)
    for target in targets:
        counts += np.bincount(np.asarray(target).ravel(), minlength=n_classes)[:n_classes]
    total = counts.sum()
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = total / (present.sum() * counts[present])
    return weights


def _class_weight_map(labels: np.ndarray, class_weights: Sequence[float] | None) -> np.ndarray:
    target = semantic_target_from_instances(labels)
    if class_weights is None:
        class_weights = class_balance_weights([target])
    class_weights = np.asarray(class_weights, dtype=np.float64)
    if class_weights.shape != (2,):
        raise ValueError(f"expected 2 class weights (background, object), got {class_weights}")
    return class_weights[target]


def _separation_term(d1: np.ndarray, d2: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        term = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    return np.where(np.isfinite(d2), term, 0.0)


def _check_weight_arguments(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2D label image, got {labels.ndim} dimensions")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"object labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("object labels must not be negative")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if w0 < 0:
        raise ValueError(f"w0 must not be negative, got {w0}")
    return sequential_labels(labels)


def border_weight_map(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
) -> np.ndarray:
    r"""Return the pixel weights of Ronneberger et al. (2015), eq. 2.

    .. math:: w(x) = w_c(x) + w_0 \exp\left(-\frac{(d_1(x) + d_2(x))^2}{2\sigma^2}\right)

    Pixels in the narrow background between two objects get a large weight, so
    the network learns to separate touching objects.

    Parameters
    ----------
    labels : (Y, X) array of int
        Instance ids: 0 is background, each other value one object.
    w0 : float
        Height of the separation term (10 in [1]_).
    sigma : float
        Width of the separation term in pixels (about 5 in [1]_).
    class_weights : (float, float), optional
        :math:`w_c` for background and object pixels, the classes being those of
        `semantic_target_from_instances` (gap pixels count as background). By
        default the class frequencies of this image are balanced (see
        `class_balance_weights`); pass weights computed over a whole training
        set to weigh every image alike.

    Returns
    -------
    (Y, X) float32 array

    Notes
    -----
    :math:`d_1` and :math:`d_2` are the distances to the nearest and second
    nearest object, computed as in the equation for every pixel, object pixels
    included (for those :math:`d_1 = 0`). With fewer than two objects the
    separation term is 0.

    Rather than one distance transform per object over the whole image (see
    `border_weight_map_naive`), each object's distance transform is computed in
    its bounding box grown by
    :math:`R = \sigma\sqrt{2 \ln(1/\epsilon)}` with
    :math:`\epsilon = 10^{-4}`, keeping the two smallest distances per pixel.
    Where the second nearest object lies farther than R, the separation term is
    below :math:`\epsilon w_0` and is set to 0; elsewhere the result equals the
    naive one. The cost is proportional to the objects' area plus R, not to the
    number of objects times the image area.

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
           for Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597,
           eq. 2.

    Examples
    --------
    Two single-pixel objects 4 pixels apart; the pixel midway is 2 pixels from
    each, so its weight is :math:`w_c + w_0 e^{-16/(2\sigma^2)}`:

    >>> labels = np.zeros((1, 5), dtype=int)
    >>> labels[0, 0], labels[0, 4] = 1, 2
    >>> weights = border_weight_map(labels, w0=10, sigma=5, class_weights=(1, 1))
    >>> round(float(weights[0, 2]), 3), round(1 + 10 * math.exp(-16 / 50), 3)
    (8.261, 8.261)
    """
    labels = _check_weight_arguments(labels, w0, sigma)
    weights = _class_weight_map(labels, class_weights)
    reach = int(math.ceil(sigma * math.sqrt(2.0 * math.log(1.0 / NEGLIGIBLE)))) + 1
    height, width = labels.shape
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:  # an id not in the image
            continue
        y0 = max(box[0].start - reach, 0)
        y1 = min(box[0].stop + reach, height)
        x0 = max(box[1].start - reach, 0)
        x1 = min(box[1].stop + reach, width)
        # the whole object lies in the grown box, so distances in it are exact
        distance = ndi.distance_transform_edt(labels[y0:y1, x0:x1] != index)
        near, second = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
        np.minimum(second, np.maximum(near, distance), out=second)
        np.minimum(near, distance, out=near)
    weights += _separation_term(d1, d2, w0, sigma)
    return weights.astype(np.float32)


def border_weight_map_naive(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Return the weights of `border_weight_map` by the literal definition.

    One distance transform per object over the whole image: slow for many
    objects, and meant as the reference that `border_weight_map` is tested
    against. The parameters and result are those of `border_weight_map`.
    """
    labels = _check_weight_arguments(labels, w0, sigma)
    weights = _class_weight_map(labels, class_weights)
    ids = np.unique(labels[labels > 0])
    if len(ids) < 2:
        return weights.astype(np.float32)
    distances = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    two_nearest = np.partition(distances, 1, axis=0)[:2]
    weights += _separation_term(two_nearest[0], two_nearest[1], w0, sigma)
    return weights.astype(np.float32)


@dataclass
class TrainingTarget:
    """What the loss compares a network's output with, pixel by pixel.

    Attributes
    ----------
    classes : (Y, X) int64 array
        Class of each pixel, 0 the background; `UNANNOTATED` (-1) where nothing
        is known, which the loss ignores.
    weights : (Y, X) float32 array
        Loss weight of each pixel; 0 where unannotated.
    n_classes : int
        Classes the annotation speaks of, background included.
    class_weights : 1D float64 array, optional
        The class weights :math:`w_c` in `weights`, one per class; the rest of
        a pixel's weight is its border (separation) term.
    """

    classes: np.ndarray
    weights: np.ndarray
    n_classes: int
    class_weights: np.ndarray | None = None

    @property
    def annotated(self) -> np.ndarray:
        """Pixels the loss looks at."""
        return self.classes != UNANNOTATED

    def with_class_weights(self, class_weights: Sequence[float]) -> TrainingTarget:
        """Return the same target with other class weights, border terms kept.

        Cheap (no distance transform), for when the balance over a whole
        training set changes because one image's annotations did.
        """
        if self.class_weights is None:
            raise ValueError("this target does not record its class weights")
        new = np.asarray(class_weights, dtype=np.float64)
        old = np.zeros(new.shape)
        old[: min(len(self.class_weights), len(new))] = self.class_weights[: len(new)]
        annotated = self.annotated
        index = np.where(annotated, self.classes, 0)
        weights = self.weights.astype(np.float64) + (new[index] - old[index])
        weights = np.where(annotated, weights, 0.0).astype(np.float32)
        return TrainingTarget(self.classes, weights, self.n_classes, new)


def rectangles_mask(
    shape: tuple[int, int], rectangles: Sequence[tuple[float, float, float, float]]
) -> np.ndarray:
    """Return the pixels whose centres lie in any of some axis-aligned rectangles.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    rectangles : sequence of (top, left, bottom, right)
        Corners in pixel coordinates, as napari gives them (a pixel's centre
        is at integer coordinates); bottom and right included.

    Returns
    -------
    (Y, X) bool array

    Examples
    --------
    >>> rectangles_mask((3, 4), [(0.6, 0.5, 2.0, 2.4)]).astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 1, 0],
           [0, 1, 1, 0]])
    """
    mask = np.zeros(shape, dtype=bool)
    for top, left, bottom, right in rectangles:
        top, bottom = sorted((top, bottom))
        left, right = sorted((left, right))
        rows = slice(max(math.ceil(top), 0), max(math.floor(bottom) + 1, 0))
        cols = slice(max(math.ceil(left), 0), max(math.floor(right) + 1, 0))
        mask[rows, cols] = True
    return mask


def annotation_classes(
    annotation: np.ndarray, kind: AnnotationKind = "objects", region: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Return the classes an annotation gives its pixels, without any weights.

    Cheap (no distance transform): what class balancing over several images
    needs. The parameters are those of `training_target`.

    Returns
    -------
    classes : (Y, X) int64 array
        0 the background, `UNANNOTATED` (-1) where nothing is known.
    n_classes : int
        Classes the annotation speaks of, background included.
    """
    return _classes(*_checked_annotation(annotation, kind, region), kind)


def _classes(
    annotation: np.ndarray, region: np.ndarray, kind: AnnotationKind
) -> tuple[np.ndarray, int]:
    if kind == "objects":
        classes = semantic_target_from_instances(annotation).astype(np.int64)
        n_classes = 2
    else:
        classes = annotation - 1
        n_classes = max(int(classes.max(initial=0)) + 1, 2)
        region = region & (classes >= 0)
    if not region.any():
        raise ValueError("nothing is annotated: paint some pixels (or draw a rectangle) first")
    classes[~region] = UNANNOTATED
    return classes, n_classes


def _checked_annotation(
    annotation: np.ndarray, kind: AnnotationKind, region: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the annotation as int64 (objects numbered 1, 2, …) and the region, or refuse."""
    if kind not in ("objects", "scribbles"):
        raise ValueError(f"kind must be 'objects' or 'scribbles', got {kind!r}")
    annotation = np.asarray(annotation)
    if annotation.ndim != 2:
        raise ValueError(
            f"annotations must be a 2D label image, got {annotation.ndim} dimensions "
            f"{annotation.shape}"
        )
    if annotation.dtype.kind == "f":
        if not np.all(np.isfinite(annotation)) or np.any(annotation != np.round(annotation)):
            raise ValueError("annotations must be whole numbers (a Labels layer)")
    elif annotation.dtype.kind not in "iub":
        raise ValueError(f"annotations must be integer labels, got {annotation.dtype}")
    if annotation.size and annotation.min() < 0:
        raise ValueError("annotations must not be negative")
    if kind == "scribbles":
        largest = int(annotation.max(initial=0))
        if largest > MAX_CLASSES:
            raise ValueError(
                f"the scribbles use label {largest}, which would make a network of "
                f"{largest - 1} classes; paint the background with label 1 and each class "
                f"with 2, 3, … (at most {MAX_CLASSES} labels)"
            )
        annotation = annotation.astype(np.int64)
    else:
        annotation = sequential_labels(annotation.astype(np.uint64, copy=False))
    if region is None:
        region = np.ones(annotation.shape, dtype=bool)
    region = np.asarray(region, dtype=bool)
    if region.shape != annotation.shape:
        raise ValueError(
            f"the annotated region {region.shape} and annotation {annotation.shape} differ"
        )
    return annotation, region


def training_target(
    annotation: np.ndarray,
    kind: AnnotationKind = "objects",
    region: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
) -> TrainingTarget:
    """Turn an annotation painted in napari into classes and loss weights.

    Parameters
    ----------
    annotation : (Y, X) array of int
        ``"objects"``: instance masks, 0 background and each object its own
        id (any ids: they are renumbered consecutively first); every pixel
        (inside `region`) is annotated. ``"scribbles"``: sparse strokes, 0 not
        annotated, 1 background, 2, 3, … object classes (at most `MAX_CLASSES`).
    kind : {"objects", "scribbles"}
        Which of the two the annotation is.
    region : (Y, X) bool array, optional
        Where the annotation holds (e.g. `rectangles_mask` of the rectangles
        the user drew); outside, nothing counts. Default: everywhere.
    w0, sigma : float
        Border weight parameters (see `border_weight_map`), for objects.
    class_weights : sequence of float, optional
        Class weights :math:`w_c`, one per class (at least `n_classes`), e.g.
        balanced over a whole training set; default: balanced over this
        annotation's own pixels.

    Returns
    -------
    TrainingTarget
        Objects become background/object classes with a one-pixel gap between
        touching objects (`semantic_target_from_instances`) weighted by
        `border_weight_map`. Scribbles become classes ``value - 1`` weighted
        by their class weights.

    Raises
    ------
    ValueError
        For a label image that is not 2D, negative or fractional labels, a
        scribble label above `MAX_CLASSES`, a region of another shape, or no
        annotated pixel at all.

    Examples
    --------
    >>> strokes = np.array([[0, 1, 1, 2]])
    >>> target = training_target(strokes, "scribbles")
    >>> target.classes, target.weights, target.n_classes
    (array([[-1,  0,  0,  1]]), array([[0.  , 0.75, 0.75, 1.5 ]], dtype=float32), 2)
    """
    annotation, region = _checked_annotation(annotation, kind, region)
    classes, n_classes = _classes(annotation, region, kind)
    annotated = classes != UNANNOTATED
    if class_weights is None:
        balance = class_balance_weights([classes[annotated]], n_classes)
    else:
        balance = np.asarray(class_weights, dtype=np.float64)
        if balance.ndim != 1 or len(balance) < n_classes:
            raise ValueError(f"expected {n_classes} class weights, got {balance.tolist()}")
    if kind == "objects":
        weights = border_weight_map(annotation, w0, sigma, class_weights=balance[:2])
    else:
        weights = balance.astype(np.float32)[np.clip(classes, 0, None)]
    weights = np.where(annotated, weights, 0).astype(np.float32)
    return TrainingTarget(classes, weights, n_classes, balance)
