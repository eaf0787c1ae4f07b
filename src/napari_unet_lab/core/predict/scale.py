"""Object size: how large a model's objects are, and resizing images to match it.

A U-Net learns objects of the size it was trained on: nuclei four times larger
come out as a dozen fragments. A model file records the typical object diameter
of its training annotations (`typical_object_diameter`); an image whose objects
are larger or smaller is resized by `scale_factor` before prediction
(`resized_image`) and the probabilities are brought back onto the image's own
pixel grid (`resized_back`), so every result has the image's shape. A model may
record that it outlines objects best when it sees them a little larger than it
learnt them (`ModelInfo.shown_larger`); the resizing then aims at that size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from skimage.measure import label as connected_components
from skimage.transform import resize

# What the user gives as an object diameter: None (as trained), "auto", or pixels.
ObjectDiameter = float | Literal["auto"] | None

# Bytes per pixel of the resized image a prediction holds at once: the float32
# image and resize's float64 copy, float32 probabilities and their resized copy.
BYTES_PER_PIXEL_AND_CLASS = 4 + 8
BYTES_PER_PIXEL_AND_CHANNEL = 4 + 8


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Return the equivalent diameter of every object of a label image, in pixels.

    The equivalent diameter is that of a disk with the object's area,
    ``sqrt(4 area / pi)`` (skimage's ``regionprops(...).equivalent_diameter_area``).

    Examples
    --------
    >>> object_diameters(np.array([[1, 1, 0, 2], [1, 1, 0, 0]])).round(3)
    array([2.257, 1.128])
    """
    areas = np.bincount(np.asarray(labels, dtype=np.int64).ravel())[1:]
    return np.sqrt(4.0 * areas[areas > 0] / np.pi)


def found_object_diameter(labels: np.ndarray) -> float | None:
    """Return the typical diameter of the objects a network found, robust to fragments.

    The median diameter of the objects at least half as wide as the
    area-weighted median (the diameter of the object holding the median object
    pixel). A large nucleus broken into many small pieces by a network that
    expects small ones leaves many small objects but few pixels in them: the
    plain median follows the fragments, this one the objects. On objects of
    one size it is the plain median, the measure a model file records for its
    training objects (`typical_object_diameter`).

    Returns
    -------
    float or None
        In pixels; None without objects.

    Examples
    --------
    >>> labels = np.zeros((40, 40), int)
    >>> labels[:20, :20], labels[22:38, :16] = 1, 2  # objects of 400 and 256 px
    >>> labels[30, 30:33], labels[35, 30:33] = 3, 4  # two fragments of 3 px
    >>> round(found_object_diameter(labels), 1)      # the plain median would say 10.2
    20.3
    """
    diameters = object_diameters(labels)
    if not diameters.size:
        return None
    order = np.argsort(diameters, kind="stable")
    pixels = np.cumsum(diameters[order] ** 2)  # proportional to the area
    weighted = diameters[order][np.searchsorted(pixels, pixels[-1] / 2.0)]
    return float(np.median(diameters[diameters >= weighted / 2.0]))


def typical_object_diameter(
    annotations: Iterable[np.ndarray],
    kind: Literal["objects", "classes"] | Sequence[Literal["objects", "classes"]] = "objects",
) -> float | None:
    """Return the median equivalent diameter of the annotated objects, in pixels.

    Parameters
    ----------
    annotations : iterable of ndarray of int
        Label images. ``"objects"``: instance labels, 0 the background and each
        other value one object. ``"classes"``: class masks or scribbles (0 the
        background, negative not annotated); each connected region of one
        object class counts as an object.
    kind : {"objects", "classes"} or sequence of them
        Which of the two the annotations are, all alike or one per annotation.

    Returns
    -------
    float or None
        The median over all objects of all images; None without objects.

    Examples
    --------
    >>> disk = np.hypot(*np.mgrid[-10:11, -10:11]) <= 8
    >>> round(typical_object_diameter([disk.astype(int)]), 1)  # 197 px: a disk of 15.8
    15.8
    """
    found = []
    annotations = list(annotations)
    kinds = [kind] * len(annotations) if isinstance(kind, str) else list(kind)
    for annotation, kind in zip(annotations, kinds, strict=True):
        annotation = np.asarray(annotation)
        if kind == "classes":
            for value in np.unique(annotation[annotation > 0]):
                found.append(object_diameters(connected_components(annotation == value)))
        else:
            found.append(object_diameters(annotation))
    diameters = np.concatenate(found) if found else np.zeros(0)
    return float(np.median(diameters)) if diameters.size else None


def size_note(diameter: float, factor: float, trained: float, how: str, larger: float = 1.0) -> str:
    """Say in one sentence, for the user, which object size was used and what it did.

    `larger` is the model's `ModelInfo.shown_larger`.

    Examples
    --------
    >>> size_note(60.0, 0.67, 28.25, "estimated", 2**0.5)  # doctest: +NORMALIZE_WHITESPACE
    'Objects about 60 pixels across (estimated); the model was trained on 28 and outlines
    best at about 40, so the image was resized 0.67× for the network and the results
    brought back to its own size.'
    >>> size_note(28.0, 1.0, 28.25, "given")  # doctest: +NORMALIZE_WHITESPACE
    'Objects about 28 pixels across (given); the model was trained on 28, so the image
    was not resized.'
    """
    said = f"Objects about {diameter:.0f} pixels across ({how}); the model was trained on "
    if larger == 1:
        said += f"{trained:.0f}, so the image was"
    else:
        said += f"{trained:.0f} and outlines best at about {larger * trained:.0f}, so the image was"
    if factor == 1:
        return f"{said} not resized."
    return (
        f"{said} resized {factor:.2f}× for the network and the results brought back to its "
        "own size."
    )


def check_object_diameter(object_diameter: ObjectDiameter) -> None:
    """Raise a ValueError with a plain message for an object diameter that is unusable."""
    if object_diameter is None or object_diameter == "auto":
        return
    if isinstance(object_diameter, str) or isinstance(object_diameter, bool):
        raise ValueError(
            f"the object diameter must be 'auto', None (as trained) or a number of pixels, "
            f"not {object_diameter!r}"
        )
    if not (math.isfinite(object_diameter) and object_diameter > 0):
        raise ValueError(
            f"the object diameter must be a positive number of pixels, not {object_diameter}"
        )


def scale_factor(
    object_diameter: float,
    training_diameter: float,
    spatial_shape: Sequence[int],
    *,
    smallest_input: int,
    pixel_bytes: int,
    available_bytes: int | None,
    larger: float = 1.0,
) -> float:
    """Return how much to resize an image so its objects match the training objects.

    Parameters
    ----------
    object_diameter : float
        Typical diameter of the objects in the image, in pixels.
    training_diameter : float
        Typical diameter of the model's training objects, in pixels.
    spatial_shape : sequence of int
        ``(Y, X)`` of the image (of each plane of a stack).
    smallest_input : int
        Smallest image edge the network takes (`UNet.min_input_size`).
    pixel_bytes : int
        Memory one resized pixel needs during prediction, all planes together.
    available_bytes : int or None
        Memory that may be used; None if unknown (not checked).
    larger : float
        Show the network the objects this much larger than its training objects
        (`ModelInfo.shown_larger`).

    Returns
    -------
    float
        ``larger * training_diameter / object_diameter``: above 1 enlarges the
        image.

    Raises
    ------
    ValueError
        If the diameter is not a positive number, or the resized image would be
        smaller than the network takes or larger than the memory holds.
    """
    check_object_diameter(object_diameter)
    factor = larger * training_diameter / object_diameter
    resized = resized_shape(spatial_shape, factor)
    trained = f"the model was trained on objects of {training_diameter:.0f} pixels"
    shown = " × ".join(map(str, spatial_shape))
    if min(resized) < min(smallest_input, *spatial_shape):
        raise ValueError(
            f"objects {object_diameter:g} pixels across would shrink the {shown} image to "
            f"{' × '.join(map(str, resized))} pixels ({trained}), smaller than the "
            f"{smallest_input} pixels the network needs; give a smaller object diameter"
        )
    needed = math.prod(resized) * pixel_bytes
    if available_bytes is not None and needed > available_bytes:
        raise ValueError(
            f"objects {object_diameter:g} pixels across would enlarge the {shown} image "
            f"{factor:.1f} times ({trained}), needing about {needed / 2**30:.1f} GiB of "
            f"memory, more than the {available_bytes / 2**30:.1f} GiB free; give a larger "
            "object diameter"
        )
    return factor


def resized_shape(spatial_shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """Return the spatial shape of an image resized by `factor` (at least 1 pixel).

    Examples
    --------
    >>> resized_shape((520, 696), 0.5)
    (260, 348)
    """
    return tuple(max(1, round(size * factor)) for size in spatial_shape)


def spatial_axes(ndim: int, channel_axis: int | None) -> tuple[int, int]:
    """Return the (Y, X) axes of an image with `ndim` axes, channels at `channel_axis`.

    Examples
    --------
    >>> spatial_axes(4, -1)  # a stack of RGB images
    (1, 2)
    """
    channels = None if channel_axis is None else channel_axis % ndim
    y, x = [axis for axis in range(ndim) if axis != channels][-2:]
    return y, x


def resized_image(image: np.ndarray, factor: float, channel_axis: int | None) -> np.ndarray:
    """Resize the Y and X axes of an image by `factor`, as float32.

    Linear interpolation; Gaussian anti-aliasing when shrinking, so that fine
    texture does not alias into false edges. Channels and stack axes are kept.
    """
    y, x = spatial_axes(image.ndim, channel_axis)
    shape = list(image.shape)
    shape[y], shape[x] = resized_shape((image.shape[y], image.shape[x]), factor)
    data = np.asarray(image, dtype=np.float32)
    return resize(
        data, shape, order=1, mode="reflect", anti_aliasing=factor < 1, preserve_range=True
    ).astype(np.float32, copy=False)


def resized_back(probabilities: np.ndarray, spatial_shape: Sequence[int]) -> np.ndarray:
    """Bring class probabilities ``(..., n_classes, y, x)`` onto a ``(Y, X)`` pixel grid.

    Linear interpolation keeps the probabilities of every pixel summing to 1.
    """
    shape = (*probabilities.shape[:-2], *spatial_shape)
    if probabilities.shape == shape:
        return probabilities
    return resize(
        probabilities, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True
    ).astype(np.float32, copy=False)
