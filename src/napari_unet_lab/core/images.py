"""Intensity normalisation: the same mapping for every tile of an image."""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}


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
        The image to predict.
    normalization : dict or None
        As stored in a model file: ``{"method": "percentile", "low": 1, "high": 99.8}``,
        ``{"method": "fixed", "low": a, "high": b}`` or ``{"method": "none"}``.
    """
    settings = dict(normalization or DEFAULT_NORMALIZATION)
    method = settings.get("method", "percentile")
    if method == "percentile":
        return percentile_range(image, settings.get("low", 1.0), settings.get("high", 99.8))
    if method == "fixed":
        return float(settings["low"]), float(settings["high"])
    if method == "none":
        return 0.0, 1.0
    raise ValueError(f"unknown intensity normalisation {method!r}")
