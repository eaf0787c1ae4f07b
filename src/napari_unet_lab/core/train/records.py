"""What a training run reports: one record per step, and its result."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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
    seconds_left : float or None
        Estimated time left (`TrainingClock.seconds_left`), where the run gave one.
    budget_fraction : float or None
        Share of the time budget spent, for a run with one.
    """

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    seconds: float
    validation: ValidationScores | None = None
    stopped_early: bool = False
    seconds_left: float | None = None
    budget_fraction: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the training done, from 0 to 1: of the time budget, or of the steps."""
        if self.budget_fraction is not None:
            return min(self.budget_fraction, 1.0)
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
        """Time left: the run's estimate, else at the mean pace so far."""
        if self.seconds_left is not None:
            return self.seconds_left
        return self.seconds / max(self.step, 1) * (self.total_steps - self.step)

    @property
    def message(self) -> str:
        """A short line for a status bar."""
        planned = "" if self.budget_fraction is not None else f" of {self.total_steps}"
        text = f"step {self.step}{planned}, loss {self.loss:.4f}"
        if self.validation is not None:
            text += f", validation IoU {self.validation.iou:.3f}"
        if self.stopped_early:
            text += ", stopped: validation no longer improves"
        return text


WARM_UP_STEPS = 3  # the first steps fill caches and thread pools: slower than the rest
RECENT_STEPS = 25  # steps whose median time is the pace: recent, yet robust to a slow one


class TrainingClock:
    """The time a run spends, and an estimate of the time left that holds still.

    Parameters
    ----------
    budget_seconds : float, optional
        Time budget; None for a run of a step count.
    clock : callable, optional
        Returns seconds (`time.perf_counter` by default); tests pass a fake one.

    Attributes
    ----------
    spent : float
        Seconds spent on steps, validation and previews: what the budget counts.
        Time while the run waits (paused, or the caller busy) does not count.
    step_seconds : list of float
        Duration of each training step timed.
    other_seconds : float
        Of `spent`, the seconds not spent on steps (validation, previews).

    Notes
    -----
    With a budget, the time left is what remains of it. Without, it is the
    median of the last `RECENT_STEPS` step times, leaving out the first
    `WARM_UP_STEPS` (slow while caches fill), plus the validation and preview
    time per step so far, times the steps left: a mean over all steps swings
    with the warm-up, the median of recent steps does not.
    """

    def __init__(
        self, budget_seconds: float | None = None, clock: Callable[[], float] = time.perf_counter
    ):
        self.budget_seconds = budget_seconds
        self.clock = clock
        self.spent = 0.0
        self.step_seconds: list[float] = []
        self.other_seconds = 0.0

    def add_step(self, seconds: float) -> None:
        """Count a training step that took `seconds`."""
        self.step_seconds.append(seconds)
        self.spent += seconds

    def add_other(self, seconds: float) -> None:
        """Count work beside the steps (validation, a preview) that took `seconds`."""
        self.other_seconds += seconds
        self.spent += seconds

    @property
    def out_of_time(self) -> bool:
        """True once the budget is spent (never without one)."""
        return self.budget_seconds is not None and self.spent >= self.budget_seconds

    @property
    def budget_fraction(self) -> float | None:
        """Share of the budget spent, 0 to 1; None without a budget."""
        if self.budget_seconds is None:
            return None
        return min(self.spent / self.budget_seconds, 1.0)

    def seconds_per_step(self) -> float:
        """Return the pace: recent median step time plus other work per step (0 before any)."""
        timed = self.step_seconds
        if not timed:
            return 0.0
        settled = timed[WARM_UP_STEPS:] or timed[-1:]
        other = self.other_seconds / len(timed)
        return statistics.median(settled[-RECENT_STEPS:]) + other

    def seconds_left(self, steps_left: int) -> float:
        """Return the time left: of the budget, or for `steps_left` steps at the pace."""
        if self.budget_seconds is not None:
            return max(self.budget_seconds - self.spent, 0.0)
        return self.seconds_per_step() * steps_left

    def expected_steps(self, steps_done: int) -> int:
        """Return how many steps the budget will give in all, at the pace so far."""
        pace = self.seconds_per_step()
        if pace <= 0:
            return max(steps_done, 1)
        return max(steps_done + round(self.seconds_left(0) / pace), steps_done, 1)


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
