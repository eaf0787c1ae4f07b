"""Settings as frozen dataclasses, stored next to model weights as plain JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Padding = Literal["valid", "same"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net (Ronneberger et al. 2015).

    The defaults are the light model: 3 poolings, 32 base channels, about 1.9 M
    parameters. `UNetConfig.paper()` is the configuration of the paper.
    """

    in_channels: int = 1  # image channels: 1 grayscale, 3 RGB, n multichannel
    n_classes: int = 2  # output classes, background included
    depth: int = 3  # number of 2x2 max-poolings
    base_channels: int = 32  # channels at full resolution; doubled at each pooling
    padding: Padding = "valid"  # "valid" as in the paper (output smaller), or "same"
    batch_norm: bool = True  # batch norm after each 3x3 convolution

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {self.in_channels}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes}")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth (number of poolings) must be 1 to 6, got {self.depth}")
        if self.base_channels < 1:
            raise ValueError(f"base_channels must be at least 1, got {self.base_channels}")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")

    @classmethod
    def paper(cls, **changes: Any) -> UNetConfig:
        """Return the configuration of the U-Net paper (64 channels, 4 poolings, no norm)."""
        settings = dict(depth=4, base_channels=64, padding="valid", batch_norm=False)
        settings.update(changes)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> UNetConfig:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        return _from_dict(cls, settings, "U-Net")


Interpolation = Literal["bilinear", "bicubic"]


@dataclass(frozen=True)
class AugmentationConfig:
    """Random changes applied to each training patch (see `core.augment.augment_batch`).

    The elastic deformation follows Ronneberger et al. (2015): random displacements
    on a coarse grid, drawn from N(0, sigma^2) pixels, interpolated bicubically.
    """

    flips_and_rotations: bool = True  # random mirror flip and 0/90/180/270 degree turn
    elastic: bool = True  # smooth elastic deformation of image, targets and weights
    grid_points: int = 3  # coarse grid points per axis, corners included (3: a 3x3 grid)
    sigma: float = 10.0  # standard deviation of the coarse-grid displacements, in pixels
    image_interpolation: Interpolation = "bicubic"  # resampling of the image; labels: nearest
    gain: float = 0.1  # image multiplied by a factor drawn uniformly from [1 - gain, 1 + gain]
    offset: float = 0.1  # then shifted by a value drawn uniformly from [-offset, offset]
    gamma: float = 0.2  # gamma exp(u), u uniform in [-gamma, gamma], on each patch's range

    def __post_init__(self) -> None:
        if self.grid_points < 2:
            raise ValueError(f"grid_points must be at least 2, got {self.grid_points}")
        if self.sigma < 0:
            raise ValueError(f"sigma must not be negative, got {self.sigma}")
        if self.image_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"image_interpolation must be 'bilinear' or 'bicubic', "
                f"got {self.image_interpolation!r}"
            )
        if not 0 <= self.gain < 1:
            raise ValueError(f"gain must be in [0, 1), got {self.gain}")
        if self.offset < 0 or self.gamma < 0:
            raise ValueError("offset and gamma must not be negative")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> AugmentationConfig:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        return _from_dict(cls, settings, "augmentation")


def _from_dict(cls: type, settings: dict[str, Any], what: str) -> Any:
    unknown = set(settings) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings: {sorted(unknown)}")
    return cls(**settings)
