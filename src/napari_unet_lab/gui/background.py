"""Run a core generator in a worker thread for a dock widget: progress, cancel, errors, close."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator, Sequence
from typing import Any

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QDockWidget

from ..core.device import NotEnoughMemory, is_out_of_memory
from ..core.model.files import ModelFileError
from ..core.progress import Progress
from .docks import qt_deleted
from .messages import sentence

logger = logging.getLogger(__name__)

# Errors whose message is written for the user; anything else is a bug and is logged.
EXPECTED_ERRORS = (ValueError, ModelFileError, MemoryError, OSError)

MEMORY_ADVICE = (
    "ask for less at once: a smaller tile size or fewer tiles per batch to segment, "
    "a smaller patch size or fewer patches per step to train; or close other programs"
)


class _FailedInWorker(Exception):
    """Carries an error out of the worker thread to `errored` (see `_reported`)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _reported(work: Callable[..., Any], args: tuple, kwargs: dict) -> Generator[Any, Any, Any]:
    """Run ``work(*args, **kwargs)`` (a generator or a plain function) so that every error is seen.

    superqt's ``GeneratorWorker.work`` catches a ``RuntimeError`` raised by the
    generator and returns it; ``WorkerBase.run`` then takes it for the sign of a
    deleted worker, only warns "RuntimeError in aborted thread" and returns
    before emitting ``errored`` or ``finished`` (superqt/utils/_qthreading.py).
    torch raises ``RuntimeError`` when memory runs out, so such a run would
    never end for the widget. Wrapped in an exception of another class, every
    error reaches ``errored`` and the run ends. Values passed with
    ``worker.send()`` reach `work` through ``yield from``.
    """
    try:
        outcome = work(*args, **kwargs)
        if inspect.isgenerator(outcome):
            outcome = yield from outcome
    except Exception as error:
        raise _FailedInWorker(error) from error
    return outcome


def _dock_of(widget: Any) -> QDockWidget | None:
    """Return the dock widget that holds `widget` (a Qt widget), if any."""
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


class BackgroundTask:
    """One long computation at a time for a widget, kept off napari's event loop.

    The core yields `Progress` records; this shows them in the widget's progress
    bar and status line and in napari's activity dock, turns Cancel into
    ``worker.quit()`` (the generator stops at its next record), and shows every
    error, whatever its class, as a notification rather than a traceback, after
    which the controls are usable again.

    When the dock holding the controls is closed, or the viewer with it, the
    task quits its worker and from then on leaves the widget alone: no result,
    no progress, no message; Qt objects that were deleted are never touched.

    Parameters
    ----------
    progress_bar, status, cancel_button : magicgui widgets
        The widget's own controls.
    buttons : sequence of PushButton
        Buttons disabled while the task runs.
    activity : str
        What the task does, in a few words, for messages ("segmentation").
    on_finished : callable, optional
        Called after every end: success, error or cancel; also after the dock was
        closed, as long as the widget itself still exists.
    memory_advice : str
        What to try when memory runs out, completing "There was not enough memory
        for <activity>; ...".
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
        memory_advice: str = MEMORY_ADVICE,
    ):
        self.progress_bar, self.status, self.cancel_button = progress_bar, status, cancel_button
        self.buttons, self.activity, self.on_finished = list(buttons), activity, on_finished
        self.memory_advice = memory_advice
        self.worker = None
        self._napari_progress = None
        self._closed = False  # the dock or the viewer was closed: leave the widget alone
        self._showing, self._waiting_record = False, None  # progress shown one record at a time
        self._watched_dock: QDockWidget | None = None
        self.cancel_button.enabled = False
        self.progress_bar.visible = False
        # Closing the viewer deletes every widget in it; removing a dock deletes the dock only.
        self.progress_bar.native.destroyed.connect(self._widget_closed)

    @property
    def running(self) -> bool:
        """True while the task runs."""
        return self.worker is not None

    @property
    def closed(self) -> bool:
        """True once the dock holding the widget, or the viewer, was closed."""
        return self._closed or not self._controls_exist()

    def start(
        self,
        work: Callable[..., Generator[Progress, Any, Any] | Any],
        *args: Any,
        on_result: Callable[[Any], None],
        message: str,
        on_yielded: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """Run ``work(*args, **kwargs)`` in a worker thread; `on_result` gets its return value.

        `work` is a generator function, or a plain function for work without
        progress records. Records with a ``fraction`` move the progress bar; `on_yielded`, if given,
        gets every record (connected before the thread starts, so none is missed).
        Nothing starts while a run is going on, or once the widget was closed.
        """
        if self.running or self.closed:
            return
        self._watch_dock()
        self.worker = create_worker(
            _reported, work, args, kwargs, _start_thread=False, _ignore_errors=True
        )
        self.worker.yielded.connect(self._show_progress)
        if on_yielded is not None:
            self.worker.yielded.connect(self._unless_closed(on_yielded))
        self.worker.returned.connect(self._unless_closed(on_result))
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
            if not self.closed:
                self.status.value = "Cancelling…"
            self.worker.quit()

    def fail(self, message: str) -> None:
        """Tell the user what went wrong, in the status line and a notification."""
        message = sentence(message)
        self._waiting_record = None  # a progress record waiting to be shown is older news
        self.status.value = message
        show_error(message)

    # ------------------------------------------------------------ closing
    def _controls_exist(self) -> bool:
        controls = [self.progress_bar, self.status, self.cancel_button, *self.buttons]
        return not any(qt_deleted(control.native) for control in controls)

    def _watch_dock(self) -> None:
        # napari's remove_dock_widget (the dock's close button) deletes the dock but keeps
        # the widget, undocked and hidden: the run would go on with no way to stop it.
        dock = _dock_of(self.progress_bar.native)
        if dock is not None and dock is not self._watched_dock:
            dock.destroyed.connect(self._widget_closed)
            self._watched_dock = dock

    def _widget_closed(self, *_: Any) -> None:
        # Called while Qt deletes the dock or the widget: only flags, nothing drawn.
        self._closed = True
        if self.worker is not None:
            self.worker.quit()

    def _unless_closed(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """Wrap `callback`: skipped once the widget was closed, its errors shown as the task's."""

        def call(value: Any) -> None:
            if self.closed:
                return
            try:
                callback(value)
            except Exception as error:  # showing a result must not leave a traceback either
                self._show_error(error)

        return call

    # ------------------------------------------------------------ worker signals
    def _show_progress(self, record: Progress) -> None:
        if self.closed or not hasattr(record, "fraction"):  # previews: the widget's business
            return
        if self._showing:
            # napari's progress bar processes events while it redraws: a record arriving then
            # waits for this one to be shown instead of nesting (a flood of records used to
            # recurse until Python gave up)
            self._waiting_record = record
            return
        self._showing = True
        try:
            while record is not None:
                self._show_record(record)
                record, self._waiting_record = self._waiting_record, None
        finally:
            self._showing = False

    def _show_record(self, record: Progress) -> None:
        self.progress_bar.value = int(1000 * record.fraction)
        if record.message:
            self.status.value = sentence(record.message)
        if self._napari_progress is not None:
            bar = self._napari_progress
            bar.total, bar.n = record.total, record.done
            if record.message:
                bar.set_description(sentence(record.message))
            bar.refresh()

    def _show_error(self, error: Exception) -> None:
        if isinstance(error, _FailedInWorker):
            error = error.error
        if self.closed:
            return
        text = str(error)
        if is_out_of_memory(error):
            # the core's own account (what did not fit, what would) before the widget's advice
            reason = f" ({text})" if isinstance(error, NotEnoughMemory) and text else ""
            self.fail(
                f"there was not enough memory for {self.activity}{reason}; {self.memory_advice}."
            )
        elif isinstance(error, EXPECTED_ERRORS) and text:
            self.fail(text)
        else:
            logger.error("%s failed", self.activity, exc_info=error)
            self.fail(f"{self.activity} failed unexpectedly: {text or type(error).__name__}")

    def _show_cancelled(self) -> None:
        self._waiting_record = None
        if not self.closed:
            self.status.value = "Cancelled; no layers were changed."

    def _finish(self) -> None:
        self.worker, self._waiting_record = None, None
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None
        if not self._controls_exist():
            return  # deleted with the viewer
        for button in self.buttons:
            button.enabled = True
        self.cancel_button.enabled = False
        self.progress_bar.visible = False
        if self.on_finished is not None:
            try:
                self.on_finished()
            except Exception as error:
                self._show_error(error)
