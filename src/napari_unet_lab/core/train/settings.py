"""How a network is trained: steps, patches, learning rate, loss and augmentation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..config import AugmentationConfig
from ..images import DEFAULT_NORMALIZATION
from .losses import LOSSES, LossName

# what the Train widget and ``napari-unet-lab train`` offer: a wall time means the same on
# every machine, a step count does not (4 s a step on a 2-core laptop, 0.05 s on a GPU)
DEFAULT_MINUTES = 3.0
DEFAULT_PATIENCE = 3  # and validations without gain before stopping sooner


# automatic learning rates, measured (benchmarks/README.md, "Levers"): a new 16-wide network
# learns fastest at 3e-3; a trained one keeps what it knows at 5e-4
NEW_NETWORK_RATE = 3e-3
FINE_TUNING_RATE = 5e-4


def automatic_learning_rate(fine_tuning: bool) -> float:
    """Return the learning rate used when none is given: lower when fine-tuning a model."""
    return FINE_TUNING_RATE if fine_tuning else NEW_NETWORK_RATE


@dataclass(frozen=True)
class TrainingSettings:
    """How a network is trained."""

    steps: int = 1500  # optimiser steps, one batch of patches each; unused with `minutes`
    # time budget: train until this much wall time is spent (steps take different times on
    # every machine), or sooner when validation stops improving; None: train for `steps`
    minutes: float | None = None
    batch_size: int = 4  # patches per step
    patch_size: int = 252  # input patch edge, rounded up to a size the network accepts
    learning_rate: float = 1e-3  # Adam step size at the start
    cosine_decay: bool = True  # lower the learning rate to 0 along a half cosine
    # measured choice, see benchmarks/README.md ("Which loss"): cross-entropy with border
    # weights separates touching objects, Dice adds overlap directly
    loss: LossName = "cross_entropy+dice"
    object_patch_share: float = 0.8  # share of patches centred on an object pixel
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    validate_every: int = 0  # steps between validations; 0: only after the last step
    patience: int = 0  # validations without improvement before stopping early; 0: never
    freeze_encoder: bool = False  # train only the decoder and head (fine-tuning)
    mixed_precision: bool | None = None  # None: on for CUDA, off elsewhere
    channels_last: bool | None = None  # memory layout for convolutions; None: on, not on MPS
    normalization: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_NORMALIZATION)
    )  # intensity mapping; the model file stores the same, for prediction

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if self.minutes is not None and not 0 < self.minutes < float("inf"):
            raise ValueError(
                f"minutes must be above 0 (or None for a step count), got {self.minutes}"
            )
        if not 0 <= self.object_patch_share <= 1:
            raise ValueError("object_patch_share must be between 0 and 1")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.validate_every < 0 or self.patience < 0:
            raise ValueError("validate_every and patience must not be negative")
        if isinstance(self.augmentation, dict):  # as read back from JSON
            object.__setattr__(self, "augmentation", AugmentationConfig(**self.augmentation))

    @property
    def budget_seconds(self) -> float | None:
        """The time budget in seconds, or None when training for a step count."""
        return None if self.minutes is None else 60.0 * self.minutes

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> TrainingSettings:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        settings = dict(settings)
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        if isinstance(settings.get("augmentation"), dict):
            settings["augmentation"] = AugmentationConfig.from_dict(settings["augmentation"])
        return cls(**settings)
