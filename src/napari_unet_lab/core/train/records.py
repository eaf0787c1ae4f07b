"""What a training run reports: one record per step, and its result."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.unet import UNet
from .validation import ValidationScores


@dataclass(frozen=True)
class TrainingProgress:
    """One training step done.

    Attributes
    ----------
    step, total_steps : int
        Steps finished, and planned.
    loss : float
        Loss of this step's batch.
    learning_rate : float
        Step size used for this step.
    seconds : float
        Training time so far, validation excluded.
    validation : ValidationScores or None
        Scores on the validation images, where measured at this step.
    stopped_early : bool
        Validation stopped improving; this is the last step.
    """

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    seconds: float
    validation: ValidationScores | None = None
    stopped_early: bool = False

    @property
    def fraction(self) -> float:
        """Share of the training done, from 0 to 1."""
        return self.step / self.total_steps

    @property
    def done(self) -> int:
        """Steps done (as `Progress.done`)."""
        return self.step

    @property
    def total(self) -> int:
        """Steps planned (as `Progress.total`)."""
        return self.total_steps

    @property
    def validation_iou(self) -> float | None:
        """Validation IoU, where measured at this step."""
        return None if self.validation is None else self.validation.iou

    @property
    def eta_seconds(self) -> float:
        """Training time left at the pace so far, validation excluded."""
        return self.seconds / max(self.step, 1) * (self.total_steps - self.step)

    @property
    def message(self) -> str:
        """A short line for a status bar."""
        text = f"step {self.step} of {self.total_steps}, loss {self.loss:.4f}"
        if self.validation is not None:
            text += f", validation IoU {self.validation.iou:.3f}"
        if self.stopped_early:
            text += ", stopped: validation no longer improves"
        return text


@dataclass
class TrainingResult:
    """What a finished training run returns.

    Attributes
    ----------
    model : UNet
        The trained network (the one passed in, trained in place); with
        validation, the weights of the best validation.
    losses : list of float
        Loss of every step.
    steps : int
        Steps done.
    seconds : float
        Training time, validation excluded.
    validation : ValidationScores or None
        Scores of the weights returned.
    best_step : int or None
        Step whose weights are returned, if validated.
    stopped_early : bool
        Training ended before `steps` because validation stopped improving.
    history : list of (int, ValidationScores)
        Every validation, by step.
    """

    model: UNet
    losses: list[float]
    steps: int
    seconds: float
    validation: ValidationScores | None = None
    best_step: int | None = None
    stopped_early: bool = False
    history: list[tuple[int, ValidationScores]] = field(default_factory=list)

    @property
    def validation_iou(self) -> float | None:
        """Validation IoU of the weights returned."""
        return None if self.validation is None else self.validation.iou
