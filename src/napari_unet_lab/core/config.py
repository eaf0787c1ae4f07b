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
        known = {f.name for f in fields(cls)}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown U-Net settings: {sorted(unknown)}")
        return cls(**settings)


@dataclass(frozen=True)
class TilingConfig:
    """How an image is cut into overlapping tiles for prediction."""

    tile_size: int = 512  # input tile edge in pixels, rounded down to a size the model accepts
    batch_size: int = 4  # tiles sent to the device at once; bounds the memory used
    device: str = "auto"  # "auto", "cuda", "mps" or "cpu"
    mixed_precision: bool | None = None  # None: on for CUDA, off elsewhere
