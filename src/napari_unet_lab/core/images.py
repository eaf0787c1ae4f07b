"""Image conventions: the one channel layout and intensity mapping.

Prediction, training and look-inside all see an image the same way: an RGB
image for a grayscale model turned into its luminance by `grayscale`, its
channels found by `image_channel_axis`, moved first by `channels_first`, and its
intensities mapped by `normalised` with the range `intensity_range_for` gives.
The mapping is element by element in float32, so a pixel gets the same value
whether a tile or the whole image is normalised: tiled prediction stays
bit-identical to whole-image prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .model.schema import intensity_range_problem, normalization_problem

DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}

NOT_FINITE = "the image contains NaN or infinite values; fix or mask them first"


# ------------------------------------------------------------------ channel layout
def image_channel_axis(shape: tuple[int, ...], in_channels: int, rgb: bool = False) -> int | None:
    """Work out which axis of an image holds the channels a model expects.

    Parameters
    ----------
    shape : tuple of int
        Shape of the image: ``(Y, X)``, a stack ``(..., Y, X)``, with a channel
        axis before Y and X, or last for RGB(A).
    in_channels : int
        Channels the model takes.
    rgb : bool
        The image is RGB(A), channels last (as napari's ``Image.rgb``).

    Returns
    -------
    int or None
        The channel axis, or None for a single-channel model.

    Raises
    ------
    ValueError
        With a message for the user when the image does not fit the model, or
        when it is ambiguous which axis holds the channels.

    Examples
    --------
    >>> image_channel_axis((7, 2, 50, 60), in_channels=2)
    1
    >>> image_channel_axis((50, 60, 3), in_channels=3, rgb=True)
    2
    >>> image_channel_axis((5, 50, 60), in_channels=1) is None
    True
    """
    if len(shape) < 2 or (rgb and len(shape) < 3):
        raise ValueError(f"expected a 2D image or a stack, got shape {shape}")
    if in_channels == 1:
        if rgb:  # callers convert first (`image_for_model`); this guards against forgetting
            raise ValueError(
                "this model takes grayscale images, but the image is RGB; "
                "convert it to grayscale (luminance) first"
            )
        return None
    if rgb:
        if shape[-1] != in_channels:
            raise ValueError(
                f"the model takes {in_channels} channels, the RGB image has {shape[-1]}"
            )
        return len(shape) - 1
    candidates = [axis for axis, size in enumerate(shape[:-2]) if size == in_channels]
    if not candidates:
        raise ValueError(
            f"the model takes {in_channels} channels, but no axis of the image (shape "
            f"{shape}) has {in_channels} entries"
        )
    if len(candidates) > 1:
        raise ValueError(
            f"more than one axis of the image (shape {shape}) could hold the "
            f"{in_channels} channels; reorder the axes so channels come first"
        )
    return candidates[0]


def check_image(image: Any, in_channels: int | None = None, rgb: bool = False) -> int | None:
    """Raise a clear ValueError for an image a model cannot take.

    Empty images, non-numeric data, and (for in-memory arrays) NaN or infinite
    values are refused. Lazy arrays (dask, zarr) are checked tile by tile as
    they are read, by `normalised`.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` or a stack ``(..., Y, X)``, with a channel axis where the
        model takes several channels.
    in_channels : int, optional
        Channels the model takes; when given, the channel layout is checked
        too, as `image_channel_axis` does.
    rgb : bool
        The image is RGB(A), channels last.

    Returns
    -------
    int or None
        The channel axis (`image_channel_axis`), or None for one channel or
        when `in_channels` is not given.

    Raises
    ------
    ValueError
        With a message for the user saying what is wrong with the image.
    """
    if image.ndim < 2:
        raise ValueError(f"expected a 2D image or a stack of them, got {image.ndim} dimension(s)")
    if 0 in image.shape:
        raise ValueError("the image is empty")
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "biuf":  # bool, integers, floats
        raise ValueError(f"cannot segment an image of type {dtype}")
    if isinstance(image, np.ndarray) and np.issubdtype(dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError(NOT_FINITE)
    if in_channels is None:
        return None
    return image_channel_axis(tuple(image.shape), in_channels, rgb)


def channels_first(image: Any, channel_axis: int | None, in_channels: int | None = None) -> Any:
    """Return `image` with its channels just before Y and X: ``(..., C, Y, X)``.

    A view where the array type allows (NumPy, dask): nothing is read.

    Parameters
    ----------
    image : array-like
        ``(Y, X)``, a stack ``(..., Y, X)``, or either with a channel axis.
    channel_axis : int or None
        The axis holding the channels (as `image_channel_axis` finds it); None
        for a single-channel image, which gets a channel axis of length 1.
    in_channels : int, optional
        Channels the model takes; checked against the image when given.

    Returns
    -------
    array-like
        ``(C, Y, X)`` for a single image, ``(..., C, Y, X)`` for a stack.

    Raises
    ------
    ValueError
        When the channel axis is one of Y and X, or the number of channels
        does not match `in_channels`.

    Examples
    --------
    >>> channels_first(np.zeros((50, 60, 3)), channel_axis=-1).shape
    (3, 50, 60)
    >>> channels_first(np.zeros((50, 60)), channel_axis=None).shape
    (1, 50, 60)
    """
    if channel_axis is None:
        if in_channels is not None and in_channels != 1:
            raise ValueError(
                f"the model expects {in_channels} channels; say which image axis holds them"
            )
        if image.ndim < 2:
            raise ValueError(f"expected an image with at least 2 dimensions, got {image.ndim}")
        return image[..., None, :, :]
    if image.ndim < 3:
        raise ValueError("a channel axis was given, but the image has only 2 dimensions")
    channel_axis = channel_axis % image.ndim
    if channel_axis >= image.ndim - 2 and channel_axis != image.ndim - 1:
        raise ValueError("the channel axis cannot be one of the two image (Y, X) axes")
    if in_channels is not None and image.shape[channel_axis] != in_channels:
        raise ValueError(
            f"the model expects {in_channels} channel(s), "
            f"the image has {image.shape[channel_axis]} along axis {channel_axis}"
        )
    if channel_axis == image.ndim - 3:
        return image  # already in place; arrays without transpose (zarr) stay unread
    return np.moveaxis(image, channel_axis, -3)


def single_image_channels_first(image: Any, in_channels: int) -> Any:
    """Return one image, given as ``(Y, X)`` or ``(C, Y, X)``, as ``(C, Y, X)``.

    The layout of a single image handed to training and look-inside: channels
    first when the model takes several, none (or one) when it takes one.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` for a single-channel model, or ``(C, Y, X)``.
    in_channels : int
        Channels the model takes.

    Returns
    -------
    array-like
        ``(C, Y, X)``, a view where the array type allows.

    Raises
    ------
    ValueError
        When the image does not have that layout, saying which shape is expected.

    Examples
    --------
    >>> single_image_channels_first(np.zeros((40, 30)), in_channels=1).shape
    (1, 40, 30)
    """
    if image.ndim == 2 and in_channels == 1:
        return channels_first(image, None)
    if image.ndim == 3 and image.shape[0] == in_channels:
        return image
    expected = "(Y, X) or (1, Y, X)" if in_channels == 1 else f"({in_channels}, Y, X)"
    raise ValueError(
        f"the model takes {in_channels} channel(s): expected an image shaped {expected}, "
        f"got {tuple(image.shape)}"
    )


# ------------------------------------------------------- RGB for a grayscale model
# skimage.color.rgb2gray's weights (ITU-R BT.709 luminance), in float32
LUMINANCE_WEIGHTS = (np.float32(0.2125), np.float32(0.7154), np.float32(0.0721))

RGB_CONVERTED_NOTE = "RGB image converted to grayscale (luminance) for a grayscale model"


def grayscale(image: Any, channel_axis: int = -1) -> np.ndarray:
    """Return the luminance of an RGB(A) image, in float32, without its channel axis.

    The one conversion that lets a grayscale (1-channel) model take RGB images,
    such as stained tissue or brightfield: prediction, training and look-inside
    all convert with it, before the intensity normalisation, so a model sees
    the same array from an RGB image everywhere.

    Parameters
    ----------
    image : array-like
        An RGB or RGBA image or stack, with 3 or 4 entries along `channel_axis`;
        other axes (Y, X, stack axes) are kept. NumPy or dask arrays.
    channel_axis : int
        The axis holding the colours; last by default, as napari's RGB layers.

    Returns
    -------
    ndarray of float32
        ``0.2125 R + 0.7154 G + 0.0721 B``, the image's shape without the
        channel axis, in the image's own intensity units. A dask array stays lazy.

    Raises
    ------
    ValueError
        When the channel axis does not hold 3 (RGB) or 4 (RGBA) colours.

    Notes
    -----
    The weights are those of `skimage.color.rgb2gray` (ITU-R BT.709), so the
    result equals ``rgb2gray(image.astype(np.float32))``. Unlike ``rgb2gray``
    on integer images, the intensities are not rescaled to [0, 1]: a model's
    fixed normalisation range stays in the image's units. The alpha channel
    (RGBA) is opacity, not brightness, and is dropped. The sum is computed
    element by element, so a tile converts to the same values as the whole
    image (tiled prediction stays bit-identical).

    Why luminance: the built-in model is grayscale, and in stained tissue
    (H&E, DAB) and brightfield images nuclei stay blobs in luminance, dark on
    a bright background rather than bright on a dark one; training augments
    with inverted contrast (``AugmentationConfig.invert``) so a model learns
    both polarities.

    References
    ----------
    .. [1] ITU-R Recommendation BT.709, https://www.itu.int/rec/R-REC-BT.709

    Examples
    --------
    >>> rgb = np.zeros((2, 2, 3), np.uint8)
    >>> rgb[..., 1] = 100
    >>> grayscale(rgb)
    array([[71.54, 71.54],
           [71.54, 71.54]], dtype=float32)
    >>> grayscale(np.zeros((4, 3, 50, 60)), channel_axis=1).shape
    (4, 50, 60)
    """
    if image.ndim < 3:
        raise ValueError(f"an RGB image needs a colour axis, got shape {tuple(image.shape)}")
    colours = image.shape[channel_axis]
    if colours not in (3, 4):
        raise ValueError(
            f"an RGB image has 3 colours (4 with alpha), this one has {colours} "
            f"along axis {channel_axis % image.ndim}"
        )
    image = (
        np.moveaxis(image, channel_axis, -1)
        if channel_axis % image.ndim != image.ndim - 1
        else image
    )
    red, green, blue = (image[..., i].astype(np.float32) for i in range(3))  # alpha dropped
    r, g, b = LUMINANCE_WEIGHTS
    return red * r + green * g + blue * b


def converts_to_grayscale(in_channels: int, rgb: bool) -> bool:
    """Return True where a model takes an image's `grayscale`: RGB(A) for a 1-channel model."""
    return rgb and in_channels == 1


def image_for_model(image: Any, in_channels: int, rgb: bool = False) -> tuple[Any, bool, str]:
    """Return an image as a model's channels take it, whether it is still RGB, and a note.

    A grayscale (1-channel) model takes an RGB(A) image's luminance
    (`grayscale`); every other image is returned as it is. Prediction, training
    and look-inside all convert here, before the intensity normalisation.

    Parameters
    ----------
    image : array-like
        The image, RGB(A) with the colours last where `rgb` is True.
    in_channels : int
        Channels the model takes.
    rgb : bool
        The image is RGB(A), channels last (as napari's ``Image.rgb``).

    Returns
    -------
    image : array-like
        The luminance (float32) or the image itself.
    rgb : bool
        Whether the returned image is still RGB.
    note : str
        `RGB_CONVERTED_NOTE` where it was converted, for the user; else "".

    Raises
    ------
    ValueError
        With a message for the user for an image that cannot be converted
        (`check_image`, `grayscale`).
    """
    if not converts_to_grayscale(in_channels, rgb):
        return image, rgb, ""
    check_image(image)  # numbers, finite: before the arithmetic
    return grayscale(image, channel_axis=-1), False, RGB_CONVERTED_NOTE


# -------------------------------------------------------------- intensity mapping
def percentile_range(
    image: Any,
    low: float = 1.0,
    high: float = 99.8,
    max_samples: int = 4_000_000,
) -> tuple[float, float]:
    """Return the intensities at the `low` and `high` percentiles of an image.

    Robust to a few hot pixels, unlike the minimum and maximum. Large images
    (more than `max_samples` pixels, e.g. dask or zarr arrays) are estimated
    from a regular sub-grid of pixels, so the whole image is never loaded at once.

    Parameters
    ----------
    image : array-like
        Any shape; NaN values are ignored.
    low, high : float
        Percentiles, from 0 to 100.
    max_samples : int
        Pixels above which the estimate uses a sub-grid.

    Returns
    -------
    (float, float)
        Intensities mapped to 0 and 1. Equal values mean a constant image.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    size = int(np.prod(image.shape))
    if size == 0:
        raise ValueError("the image is empty")
    if size > max_samples:
        # a regular sub-grid of pixels: cheap to read from chunked data too
        step = int(np.ceil(np.sqrt(size / max_samples)))
        values = np.asarray(image[..., ::step, ::step])
    else:
        values = np.asarray(image)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("the image holds no finite values (all NaN or infinite)")
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def intensity_range_for(image: Any, normalization: dict[str, Any] | None) -> tuple[float, float]:
    """Return the (low, high) intensities a model's normalisation maps to (0, 1).

    Parameters
    ----------
    image : array-like
        The whole image (or stack): one range for all its tiles and planes.
    normalization : dict or None
        As stored in a model file: ``{"method": "percentile", "low": 1, "high": 99.8}``,
        ``{"method": "fixed", "low": a, "high": b}`` or ``{"method": "none"}``.

    Returns
    -------
    (float, float)
        The intensities `normalised` maps to 0 and 1.

    Raises
    ------
    ValueError
        When the normalisation cannot be used (`model.schema.normalization_problem`):
        an unknown method, or fixed intensities with low at or above high, or
        not finite, which would map every pixel to the same value.
    """
    settings = dict(normalization or DEFAULT_NORMALIZATION)
    method = settings.setdefault("method", "percentile")
    if method == "percentile":  # the percentiles may be left out
        settings = {**DEFAULT_NORMALIZATION, **settings}
    problem = normalization_problem(settings)
    if problem is not None:
        raise ValueError(f"the intensity normalisation cannot be used: {problem}")
    if method == "percentile":
        return percentile_range(image, settings["low"], settings["high"])
    if method == "fixed":
        return float(settings["low"]), float(settings["high"])
    return 0.0, 1.0


def normalised(pixels: Any, intensity_range: tuple[float, float] | None) -> np.ndarray:
    """Map intensities so that the range's low and high become 0 and 1, in float32.

    The one intensity arithmetic of prediction (tile by tile), training and
    look-inside: ``(float32(pixels) - float32(low)) * float32(1 / (high - low))``,
    element by element, so a pixel gets the same value whether a tile or the
    whole image is normalised.

    Parameters
    ----------
    pixels : array-like
        Raw intensities, any shape (a tile, a batch of tiles, a whole image).
    intensity_range : (float, float) or None
        The intensities mapped to 0 and 1 (`intensity_range_for`); None keeps
        the values as they are. A constant range (low == high) only shifts.

    Returns
    -------
    ndarray of float32
        Same shape as `pixels`; a new array unless `pixels` is already float32
        and the range is None.

    Raises
    ------
    ValueError
        When a value is NaN or infinite (also after the mapping), or the range
        cannot be mapped (`model.schema.intensity_range_problem`: low above
        high, not finite, beyond float32).

    Examples
    --------
    >>> normalised(np.array([100, 600, 1100], np.uint16), (100.0, 1100.0))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    low, high = intensity_range if intensity_range is not None else (0.0, 1.0)
    problem = intensity_range_problem(low, high)
    if problem is not None:  # a range like (5, 2) or (0, inf) would give nonsense, not an error
        raise ValueError(f"cannot normalise the image: {problem}")
    scale = np.float32(1.0 / (high - low)) if high != low else np.float32(1.0)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        values = np.asarray(pixels).astype(np.float32, copy=False)
        if intensity_range is not None:
            values = (values - np.float32(low)) * scale
    if not np.isfinite(values).all():
        raise ValueError(NOT_FINITE)
    return values
