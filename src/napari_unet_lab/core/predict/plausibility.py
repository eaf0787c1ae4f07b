"""Is a segmentation plausible? Signs that an image is unlike the images a model was trained on.

A U-Net given an image unlike its training images (another magnification, inverted
contrast, another stain) does not fail loudly: it returns hundreds of small fragments,
or objects it is unsure of. These measures catch that after the fact, from the
segmentation alone, so the user is told before trusting the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.files import ModelInfo
from .segment import Segmentation

# Where a model file may record the median object diameter of its training images, in
# pixels (``provenance[TRAINING_DIAMETER_KEY]``).
TRAINING_DIAMETER_KEY = "object_diameter_px"


@dataclass(frozen=True)
class PlausibilityLimits:
    """Where a segmentation stops looking like one of images the model knows.

    Calibrated with the built-in nuclei model (tests/core/predict/test_plausibility.py).
    On the three BBBC039 samples: doubt 0.03–0.05, cover 0.31–0.38, fragments
    0.01–0.06, median diameter 27–30 px against 27 px in training. Inverted: cover
    0.90; magnified 4×: diameter 54–93 px; magnified 2×: 56 px; noise: doubt 0.40.
    """

    # mean of 1 − (probability of the chosen class) over object pixels
    unsure: float = 0.15
    # share of the image that is object pixels; more says the background became objects
    cover: float = 0.75
    # share of objects smaller than `tiny_factor` × the smallest object size kept
    fragments: float = 0.5
    tiny_factor: float = 4.0
    # median object diameter this many times larger or smaller than in training
    diameter_ratio: float = 1.6
    # fewer objects than this say too little to judge fragments or sizes
    min_objects: int = 10


@dataclass(frozen=True)
class Plausibility:
    """What a segmentation looks like, in the measures `unlike_training_warning` judges.

    Attributes
    ----------
    objects : int
        Objects found.
    unsure : float
        Mean of 1 − (probability of the most likely class) over the pixels more likely
        object than background; 0 when there are none.
    cover : float
        Share of the pixels more likely object than background.
    fragments : float
        Share of objects smaller than ``tiny_factor × min_size`` pixels.
    median_diameter : float
        Diameter of a disk with the median object area, in pixels; 0 without objects.
    """

    objects: int
    unsure: float
    cover: float
    fragments: float
    median_diameter: float


def measure_plausibility(
    segmentation: Segmentation, min_size: int = 15, tiny_factor: float = 4.0
) -> Plausibility:
    """Measure the signs of an image unlike the training images in a segmentation.

    Parameters
    ----------
    segmentation : Segmentation
        What `segment` returned.
    min_size : int
        The smallest object size the objects were made with, in pixels.
    tiny_factor : float
        Objects smaller than ``tiny_factor × max(min_size, 1)`` pixels count as fragments.

    Returns
    -------
    Plausibility
    """
    probabilities = segmentation.probabilities  # (..., n_classes, Y, X)
    object_pixels = segmentation.foreground > 0.5
    if object_pixels.any():
        unsure = float(np.mean(1.0 - probabilities.max(axis=-3)[object_pixels]))
    else:
        unsure = 0.0
    cover = float(np.mean(object_pixels))
    areas = np.bincount(np.asarray(segmentation.objects).ravel())[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return Plausibility(0, unsure, cover, 0.0, 0.0)
    fragments = float(np.mean(areas < tiny_factor * max(min_size, 1)))
    median_diameter = float(2.0 * np.sqrt(np.median(areas) / np.pi))
    return Plausibility(int(areas.size), unsure, cover, fragments, median_diameter)


def training_diameter(info: ModelInfo) -> float | None:
    """Return the median object diameter of a model's training images, if it records one."""
    if info.object_diameter:
        return float(info.object_diameter)
    recorded = info.provenance.get(TRAINING_DIAMETER_KEY)  # before models recorded object_size
    if isinstance(recorded, int | float) and recorded > 0:
        return float(recorded)
    return None


def unlike_training_warning(
    segmentation: Segmentation,
    min_size: int = 15,
    training_diameter: float | None = None,
    limits: PlausibilityLimits | None = None,
    shown_larger: float = 1.0,
) -> str | None:
    """Return a plain-language warning if the image looks unlike the training images.

    Parameters
    ----------
    segmentation : Segmentation
        What `segment` returned for the image.
    min_size : int
        The smallest object size the objects were made with, in pixels.
    training_diameter : float, optional
        Median object diameter in the training images, in pixels, if the model
        records it; the objects found are then compared with it.
    limits : PlausibilityLimits, optional
        Where a segmentation stops being plausible; the calibrated defaults if None.
    shown_larger : float
        The model's `ModelInfo.shown_larger`: an image resized for its object size
        shows the network objects this much larger than the training objects.

    Returns
    -------
    str or None
        What looks wrong and what it suggests, in plain words; None if nothing does.

    Examples
    --------
    >>> from napari_unet_lab.core.predict.segment import Segmentation
    >>> probabilities = np.zeros((2, 8, 8), np.float32)
    >>> probabilities[0] = 1.0  # sure: background everywhere
    >>> nothing = np.zeros((8, 8), np.uint32)
    >>> unlike_training_warning(
    ...     Segmentation(probabilities, nothing.astype(np.uint8), probabilities[1], nothing)
    ... ) is None
    True
    """
    limits = limits or PlausibilityLimits()
    seen = measure_plausibility(segmentation, min_size, limits.tiny_factor)
    signs = []
    if seen.unsure > limits.unsure:
        signs.append(
            f"the model is unsure of the objects it found ({seen.unsure:.0%} doubt on "
            "average, against a few percent on images like its training images)"
        )
    if seen.cover > limits.cover:
        signs.append(
            f"{seen.cover:.0%} of the image was taken for objects, so the background "
            "may look like objects to it (inverted contrast, another stain?)"
        )
    if seen.objects >= limits.min_objects:
        if seen.fragments > limits.fragments:
            tiny = limits.tiny_factor * max(min_size, 1)
            signs.append(
                f"{seen.fragments:.0%} of the {seen.objects} objects are tiny fragments "
                f"(under {tiny:.0f} pixels)"
            )
        if training_diameter and seen.median_diameter > 0:
            # objects as the network saw them, against the size it was shown them at: the
            # training size as trained, a little larger when resized for their size
            shown = training_diameter
            if segmentation.object_diameter is not None:
                shown *= shown_larger
            ratio = seen.median_diameter * (segmentation.scale or 1.0) / shown
            if not 1 / limits.diameter_ratio <= ratio <= limits.diameter_ratio:
                signs.append(
                    f"the objects are about {seen.median_diameter:.0f} pixels across, the "
                    f"training objects about {training_diameter:.0f} (another magnification?)"
                )
    if not signs:
        return None
    return (
        "This image may be unlike the images the model was trained on: "
        + "; ".join(signs)
        + ". Check the result before using it."
    )
