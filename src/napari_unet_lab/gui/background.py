"""Running a core generator in a worker thread for a dock widget: progress, cancel, errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from typing import Any

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error

from ..core.model.files import ModelFileError
from ..core.progress import Progress

logger = logging.getLogger(__name__)

# Errors whose message is written for the user; anything else is a bug and is logged.
EXPECTED_ERRORS = (ValueError, ModelFileError, MemoryError, OSError)


class BackgroundTask:
    """One long computation at a time for a widget, kept off napari's event loop.

    The core yields `Progress` records; this shows them in the widget's progress
    bar and status line and in napari's activity dock, turns Cancel into
    ``worker.quit()`` (the generator stops at its next record), and shows errors
    as notifications rather than tracebacks.

    Parameters
    ----------
    progress_bar, status, cancel_button : magicgui widgets
        The widget's own controls.
    buttons : sequence of PushButton
        Buttons disabled while the task runs.
    activity : str
        What the task does, in a few words, for messages ("segmentation").
    on_finished : callable, optional
        Called after every end: success, error or cancel.
    """

    def __init__(
        self,
        *,
        progress_bar: ProgressBar,
        status: Label,
        cancel_button: PushButton,
        buttons: Sequence[PushButton],
        activity: str,
        on_finished: Callable[[], None] | None = None,
    ):
        self.progress_bar, self.status, self.cancel_button = progress_bar, status, cancel_button
        self.buttons, self.activity, self.on_finished = list(buttons), activity, on_finished
        self.worker = None
        self._napari_progress = None
        self.cancel_button.enabled = False
        self.progress_bar.visible = False

    @property
    def running(self) -> bool:
        """True while the task runs."""
        return self.worker is not None

    def start(
        self,
        work: Callable[..., Generator[Progress, Any, Any]],
        *args: Any,
        on_result: Callable[[Any], None],
        message: str,
        on_yielded: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """Run ``work(*args, **kwargs)`` in a worker thread; `on_result` gets its return value.

        Records with a ``fraction`` move the progress bar; `on_yielded`, if given,
        gets every record (connected before the thread starts, so none is missed).
        """
        if self.running:
            return
        self.worker = create_worker(work, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        self.worker.yielded.connect(self._show_progress)
        if on_yielded is not None:
            self.worker.yielded.connect(on_yielded)
        self.worker.returned.connect(on_result)
        self.worker.errored.connect(self._show_error)
        self.worker.aborted.connect(self._show_cancelled)
        self.worker.finished.connect(self._finish)
        for button in self.buttons:
            button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.value = 0
        self.progress_bar.visible = True
        self.status.value = message
        self._napari_progress = progress(total=0, desc=message.rstrip("…. "))
        self.worker.start()

    def cancel(self) -> None:
        """Stop the task at its next progress record."""
        if self.worker is not None:
            self.status.value = "Cancelling…"
            self.worker.quit()

    def fail(self, message: str) -> None:
        """Tell the user what went wrong, in the status line and a notification."""
        message = message[:1].upper() + message[1:]
        self.status.value = message
        show_error(message)

    def _show_progress(self, record: Progress) -> None:
        if not hasattr(record, "fraction"):  # previews and other news: the widget's business
            return
        self.progress_bar.value = int(1000 * record.fraction)
        if record.message:
            self.status.value = record.message[:1].upper() + record.message[1:]
        if self._napari_progress is not None:
            bar = self._napari_progress
            bar.total, bar.n = record.total, record.done
            if record.message:
                bar.set_description(record.message[:1].upper() + record.message[1:])
            bar.refresh()

    def _show_error(self, error: Exception) -> None:
        if isinstance(error, EXPECTED_ERRORS):
            self.fail(str(error))
        else:
            logger.error("%s failed", self.activity, exc_info=error)
            self.fail(f"{self.activity} failed unexpectedly: {error}")

    def _show_cancelled(self) -> None:
        self.status.value = "Cancelled; no layers were changed."

    def _finish(self) -> None:
        self.worker = None
        for button in self.buttons:
            button.enabled = True
        self.cancel_button.enabled = False
        self.progress_bar.visible = False
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None
        if self.on_finished is not None:
            self.on_finished()
