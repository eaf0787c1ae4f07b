"""TIFF images in the layout a model takes: (Y, X), or (C, Y, X) for several channels.

RGB(A) TIFFs (colours last) are turned channels first, as the napari widgets do
with RGB layers, or into their luminance for a grayscale model, by the rules of
`napari_unet_lab.core.images`, the ones that prediction follows too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.images import channels_first, check_image, image_for_model
from .common import InputError, read_image, read_labels


def read_model_image(path: Path, in_channels: int | None, model_name: str = "") -> np.ndarray:
    """Read one 2D image in the layout a model takes: (Y, X), or (C, Y, X) for channels.

    RGB(A) TIFFs (colours last) are turned channels first, as the napari widgets
    do with RGB layers, or for a grayscale model into their luminance
    (`core.images.grayscale`), by the same rules as prediction.

    Parameters
    ----------
    path : Path
        A TIFF file.
    in_channels : int or None
        Channels the model takes; None for a new model, which takes those of the
        image (the colours of an RGB image, else the first axis of a 3D image).
    model_name : str
        Named in the note printed when an RGB image is converted for a grayscale model.

    Raises
    ------
    InputError
        If the image does not fit the model, or is not a single 2D image.
    """
    image, rgb = read_image(path)
    if in_channels is None:
        in_channels = image.shape[-1] if rgb else (1 if image.ndim == 2 else image.shape[0])
    try:
        image, rgb, note = image_for_model(image, in_channels, rgb)
        pixels = channels_first(image, check_image(image, in_channels, rgb))  # (..., C, Y, X)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None
    if note:
        print(f"{path.name}: {note}" + (f" ({model_name})" if model_name else ""))
    if pixels.ndim != 3:
        wanted = "(Y, X)" if in_channels == 1 else f"({in_channels}, Y, X) or RGB"
        raise InputError(
            f"{path}: expected a single 2D image {wanted}, got a stack of shape {image.shape}"
        )
    return pixels[0] if in_channels == 1 else pixels


@dataclass
class TrainingData:
    """Training images with their annotations and file names."""

    images: list[np.ndarray]  # (Y, X), or (C, Y, X) for several channels
    labels: list[np.ndarray]  # (Y, X) instance labels, class masks or scribbles
    names: list[str]


def training_data(
    pairs: Sequence[tuple[Path, Path]], in_channels: int | None, model_name: str = ""
) -> TrainingData:
    """Read image and label pairs for training, all in the layout of one model.

    Parameters
    ----------
    pairs : sequence of (Path, Path)
        Image and label files, as `paired_files` returns them.
    in_channels : int or None
        Channels the model takes; None for a new model: those of the first image.
    model_name : str
        Named in the note for an RGB image and a grayscale model.

    Raises
    ------
    InputError
        If an image does not fit the model (or the first image), or its labels
        have another shape.
    """
    images, labels, names = [], [], []
    for image_path, labels_path in pairs:
        image = read_model_image(image_path, in_channels, model_name)
        in_channels = 1 if image.ndim == 2 else image.shape[0]  # the rest must match
        truth = read_labels(labels_path)
        if truth.shape != image.shape[-2:]:
            raise InputError(
                f"{labels_path.name} has shape {truth.shape}, its image {image_path.name} "
                f"{image.shape}"
            )
        images.append(image)
        labels.append(truth)
        names.append(image_path.name)
    return TrainingData(images, labels, names)
