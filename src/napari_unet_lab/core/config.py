"""Settings as frozen dataclasses, stored next to model weights as plain JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Padding = Literal["valid", "same"]
# base channels of a network trained from scratch (UNetConfig.new_network)
NEW_NETWORK_CHANNELS = 16


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
    def new_network(cls, **changes: Any) -> UNetConfig:
        """Return the network a training from scratch starts with: the light U-Net, 16 wide.

        Measured (benchmarks/README.md, "Levers"): on a 2-core CPU a step of 16 base
        channels costs a third of one of 32, and from scratch on 3 images it scores
        higher after 3 minutes; the built-in models keep 32.
        """
        return cls(**{"base_channels": NEW_NETWORK_CHANNELS, **changes})

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
    zoom: float = 0.0  # scale about the centre, log-uniform in [1/(1+zoom), 1+zoom]; 0: off
    invert: float = 0.0  # chance that a patch's contrast is inverted (dark on bright); 0: off
    low_resolution: float = 0.0  # chance a patch is shrunk by up to 4x and grown back; 0: off

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
        if not 0 <= self.zoom < float("inf"):
            raise ValueError(
                f"zoom must be 0 (off) or a positive number, got {self.zoom}; 0.25 zooms "
                "each patch in or out by up to 25%"
            )
        if not 0 <= self.low_resolution <= 1:
            raise ValueError(
                f"low_resolution is the chance that a patch is shown at a coarser resolution "
                f"and must be between 0 and 1, got {self.low_resolution}"
            )
        if not 0 <= self.invert <= 1:
            raise ValueError(
                f"invert is the chance that a patch's contrast is inverted and must be "
                f"between 0 and 1, got {self.invert}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> AugmentationConfig:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        return _from_dict(cls, settings, "augmentation")


ClassBalance = Literal["all_images", "per_image"]


@dataclass(frozen=True)
class TargetConfig:
    """How annotations become training targets: border weights and class weights.

    The loss weight of a pixel is its class weight plus, for objects, the
    separation term of Ronneberger et al. (2015), eq. 2:
    ``w0 * exp(-(d1 + d2)**2 / (2 * sigma**2))``.

    Class weights balance the class frequencies: class c weighs
    ``N / (K * N_c)``, counted over the annotated pixels (see
    `class_balance_weights`), over the pixels ``class_balance`` says:
    ``"all_images"`` (the default) counts every training image together,
    ``"per_image"`` each image alone. Every caller (napari, the command line,
    scripts) trains by one rule, all images together, as it does not depend
    on how the user splits the annotations over images: a pixel weighs the
    same whichever images it is trained with. Measured side by side, the two
    rules tie (3 BBBC039 images from scratch, 250 steps, seed 0, 20 val
    images: AP@0.5 0.835 vs 0.832, pixel IoU 0.896 vs 0.898; see
    ``benchmarks/results/training_class_balance-cpu.json``).
    """

    w0: float = 10.0  # height of the separation term between touching objects
    sigma: float = 5.0  # width of the separation term, in pixels
    class_balance: ClassBalance = "all_images"  # count classes over all images, or per image

    def __post_init__(self) -> None:
        if self.w0 < 0:
            raise ValueError(f"w0 must not be negative, got {self.w0}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.class_balance not in ("all_images", "per_image"):
            raise ValueError(
                f"class_balance must be 'all_images' or 'per_image', got {self.class_balance!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> TargetConfig:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        return _from_dict(cls, settings, "target")


def _from_dict(cls: type, settings: dict[str, Any], what: str) -> Any:
    unknown = set(settings) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings: {sorted(unknown)}")
    return cls(**settings)


@dataclass(frozen=True)
class ObjectConfig:
    """How a foreground probability map becomes separated objects (`object_labels`).

    Defaults measured on the BBBC039 val split with the built-in model
    (benchmarks/README.md, "Objects from probabilities"): seeds at 0.8 grown back
    to 0.4 separate touching nuclei best (AP@0.5 0.81 -> 0.86 against seeds at 0.5).
    """

    threshold: float = 0.8  # objects are seeded above it, then grown over pixels above half of it
    min_size: int = 15  # objects with fewer pixels are removed as noise
    split_touching: bool = True  # split non-convex objects joined by a narrow neck
    split_depth: float = 2.0  # pixels a neck must be narrower than both objects to be split
    split_below_solidity: float = 0.9  # only objects filling less of their convex hull are split

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"the object threshold must be between 0 and 1, got {self.threshold}")
        if self.min_size < 0:
            raise ValueError(f"the smallest object size must not be negative, got {self.min_size}")
        if self.split_depth < 0:
            raise ValueError(f"split_depth must not be negative, got {self.split_depth}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> ObjectConfig:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        return _from_dict(cls, settings, "object")
