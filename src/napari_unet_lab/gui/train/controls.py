"""Start, Pause and Stop: one training at a time in a worker thread, with progress and status."""

from __future__ import annotations

import queue
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import Container, ProgressBar, PushButton
from napari.utils.notifications import show_info

from ...core.config import TargetConfig
from ...core.train import (
    TrainingProgress,
    TrainingResult,
    ValidationScores,
    train_interactively,
)
from ..background import BackgroundTask
from ..docks import status_line
from ..messages import sentence


@dataclass(frozen=True)
class StartingScores:
    """Validation of the network before its first step: what training is measured against."""

    scores: ValidationScores


def prepare_and_train(
    preparation: Generator, inbox: queue.SimpleQueue, preview_every: int, targets: TargetConfig
) -> Generator[Any, None, TrainingResult]:
    """Prepare the run, hand it over once (the `TrainingRun`), then train listening to `inbox`.

    With a validation pair, the starting network is validated first (`StartingScores`).
    """
    run = yield from preparation
    yield run
    starting = run.validate()
    if starting is not None:
        yield StartingScores(starting)
    return (yield from train_interactively(run, inbox, preview_every, targets))


def result_text(result: TrainingResult) -> str:
    """Say in a line how a training went, and which step's weights the network keeps."""
    text = f"Trained {result.steps} steps in {result.seconds / 60:.1f} min"
    if result.validation is not None:
        text += f"; validation IoU {result.validation.iou:.3f}, Dice {result.validation.dice:.3f}"
        if result.best_step != result.steps:
            text += (
                f" at step {result.best_step}: the network keeps the weights of that step, "
                f"where validation was best, not those of the last step ({result.steps})"
            )
    if result.stopped_early:
        text += "; stopped early: validation no longer improved"
    return text + ". Save the model to use it."


def progress_text(progress: TrainingProgress) -> str:
    """Say in a line where training is, and how long it will take."""
    minutes, seconds = divmod(int(progress.eta_seconds), 60)
    return sentence(f"{progress.message}; about {minutes} min {seconds:02d} s left")


class RunControls(Container):
    """Start, Pause/Resume and Stop buttons, a progress bar and a status line.

    Parameters
    ----------
    buttons : sequence of PushButton
        Other buttons to disable while training runs.
    on_finished : callable
        Called after every end of a run: done, stopped or failed.
    on_pause : callable
        Called with True when training pauses, False when it goes on.
    """

    def __init__(
        self,
        buttons: Sequence[PushButton],
        on_finished: Callable[[], None],
        on_pause: Callable[[bool], None],
    ):
        self.start_button = PushButton(text="Start")
        self.pause_button = PushButton(text="Pause", enabled=False)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, visible=False, label="")
        self.status = status_line()
        super().__init__(
            widgets=[self.start_button, self.pause_button, self.stop_button, self.progress_bar,
                     self.status],
            labels=True, label="",
        )  # fmt: skip
        self.margins = (0, 0, 0, 0)
        self._on_finished, self._on_pause = on_finished, on_pause
        self.stopping = False  # Stop was pressed during the current run
        self.task = BackgroundTask(
            progress_bar=self.progress_bar,
            status=self.status,
            cancel_button=self.stop_button,
            buttons=[self.start_button, *buttons],
            activity="training",
            memory_advice="try a smaller patch size or fewer patches per step (Advanced "
            "settings), or close other programs",
            on_finished=self._finished,
        )
        self.pause_button.changed.connect(self.toggle_pause)
        self.stop_button.changed.connect(self.stop)

    @property
    def running(self) -> bool:
        """True while training runs (paused included)."""
        return self.task.running

    def run(self, work: Callable, *args: Any, **kwargs: Any) -> None:
        """Run ``work(*args)`` in a worker thread (see `BackgroundTask.start`)."""
        self.stopping = False
        self.task.start(work, *args, **kwargs)
        self.pause_button.enabled = self.running
        self.pause_button.text = "Pause"

    def side_task(self, buttons: Sequence[PushButton], activity: str) -> BackgroundTask:
        """Return a task for short work beside training, using this bar, status line and Stop.

        Start and `buttons` wait while it runs; Stop cancels it.
        """
        task = BackgroundTask(
            progress_bar=self.progress_bar,
            status=self.status,
            cancel_button=self.stop_button,
            buttons=[self.start_button, *buttons],
            activity=activity,
        )
        self.stop_button.changed.connect(task.cancel)
        return task

    def tell(self, text: str) -> None:
        """Show a line in the status, starting with a capital."""
        self.status.value = sentence(text)

    def announce(self, text: str) -> None:
        """Show a line in the status and as a notification."""
        self.tell(text)
        show_info(self.status.value)

    def toggle_pause(self) -> None:
        """Pause training after the current step, or go on."""
        worker = self.task.worker
        if worker is None:
            return
        if worker.is_paused or self.pause_button.text == "Resume":
            worker.resume()
            self.pause_button.text = "Pause"
            self.status.value = "Training…"
            self._on_pause(False)
        else:
            worker.pause()
            self.pause_button.text = "Resume"
            self.status.value = "Paused; you can save the model now, or go on."
            self._on_pause(True)

    def stop(self) -> None:
        """Stop after the current step."""
        if self.task.worker is None:
            return
        self.stopping = True
        if self.pause_button.text == "Resume":
            self.task.worker.resume()  # a paused generator must run to see the stop
        self.task.cancel()

    def _finished(self) -> None:
        self.pause_button.enabled = False
        self.pause_button.text = "Pause"
        self._on_finished()
