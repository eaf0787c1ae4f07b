"""BackgroundTask in a real napari viewer and its real worker thread: every run ends visibly.

A run that fails, whatever the error, ends with a message in plain words and
usable controls; a run whose dock or viewer is closed stops, silently.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from magicgui.widgets import Container, Label, ProgressBar, PushButton
from qtpy.QtCore import QThreadPool

from napari_unet_lab.core.progress import Progress
from napari_unet_lab.gui.background import BackgroundTask

TIMEOUT_MS = 10_000
STEPS = 5
# What torch says when the CPU cannot allocate a tensor.
TORCH_OUT_OF_MEMORY = (
    "[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)"
)


class TaskWidget(Container):
    """The controls every dock widget hands to its BackgroundTask, and what reaches it."""

    def __init__(self):
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel")
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="")
        self.status = Label(value="")
        super().__init__(
            widgets=[self.run_button, self.cancel_button, self.progress_bar, self.status]
        )
        self.results, self.finished = [], 0
        self.task = BackgroundTask(
            progress_bar=self.progress_bar,
            status=self.status,
            cancel_button=self.cancel_button,
            buttons=[self.run_button],
            activity="segmentation",
            on_finished=self._finished,
            memory_advice="try a smaller tile size or fewer tiles per batch",
        )

    def _finished(self):
        self.finished += 1

    def start(self, work, *args):
        self.task.start(work, *args, on_result=self.results.append, message="Working…")

    @property
    def usable(self) -> bool:
        """Ready for the next run: Run enabled, Cancel disabled, no progress bar."""
        return (
            self.run_button.enabled
            and not self.cancel_button.enabled
            and not self.progress_bar.visible
        )


def steps_failing_at(failing_step: int | None, error: Exception | None = None, seconds=0.0):
    """Yield STEPS progress records, raising `error` just before record `failing_step`.

    `failing_step` == STEPS raises after the last record, where the result is made.
    """
    for done in range(STEPS):
        if done == failing_step:
            raise error
        time.sleep(seconds)
        yield Progress(done, STEPS, f"step {done + 1}")
    if failing_step == STEPS:
        raise error
    return "result"


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TaskWidget()
    dock = viewer.window.add_dock_widget(widget, name="task")
    return viewer, widget, dock


@pytest.fixture
def no_aborted_thread_warning(recwarn):
    """superqt's "RuntimeError in aborted thread" must never be the only trace of a failure."""
    yield
    texts = [str(warning.message) for warning in recwarn]
    assert not [text for text in texts if "aborted thread" in text], texts


def _wait_until_ended(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.task.running, timeout=TIMEOUT_MS)


@pytest.mark.parametrize("failing_step", [0, STEPS // 2, STEPS], ids=["first", "middle", "last"])
def test_running_out_of_memory_ends_the_run_with_advice(
    qtbot, viewer_and_widget, errors, caplog, no_aborted_thread_warning, failing_step
):
    _, widget, _ = viewer_and_widget
    widget.start(steps_failing_at, failing_step, RuntimeError(TORCH_OUT_OF_MEMORY))
    assert widget.task.running and not widget.run_button.enabled
    _wait_until_ended(qtbot, widget)

    expected = (
        "There was not enough memory for segmentation; "
        "try a smaller tile size or fewer tiles per batch."
    )
    assert errors == [expected]
    assert widget.status.value == expected
    assert widget.usable and widget.finished == 1 and widget.results == []
    # running out of memory is the user's situation, not a bug: no traceback in the log
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_memory_error_without_text_still_says_memory_ran_out(
    qtbot, viewer_and_widget, errors, no_aborted_thread_warning
):
    _, widget, _ = viewer_and_widget
    widget.start(steps_failing_at, 1, MemoryError())
    _wait_until_ended(qtbot, widget)
    assert errors == [
        "There was not enough memory for segmentation; "
        "try a smaller tile size or fewer tiles per batch."
    ]
    assert widget.usable


@pytest.mark.parametrize(
    ("error", "shown", "logged"),
    [
        (ValueError("the image is empty"), "The image is empty", False),
        (
            RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x4)"),
            "Segmentation failed unexpectedly: mat1 and mat2 shapes cannot be multiplied "
            "(4x3 and 4x4)",
            True,
        ),
        (KeyError("stage"), "Segmentation failed unexpectedly: 'stage'", True),
        (ZeroDivisionError(), "Segmentation failed unexpectedly: ZeroDivisionError", True),
        (StopIteration(), "Segmentation failed unexpectedly: generator raised StopIteration", True),
    ],
    ids=["value", "runtime", "key", "no text", "stop iteration"],
)
def test_every_other_error_ends_the_run_with_its_text(
    qtbot, viewer_and_widget, errors, caplog, no_aborted_thread_warning, error, shown, logged
):
    _, widget, _ = viewer_and_widget
    widget.start(steps_failing_at, STEPS // 2, error)
    _wait_until_ended(qtbot, widget)
    assert errors == [shown] and widget.status.value == shown
    assert widget.usable and widget.finished == 1 and widget.results == []
    # a bug is logged with its traceback, for a report; a message for the user is not
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(tracebacks) == int(logged)


def test_a_plain_function_that_fails_ends_the_run_too(
    qtbot, viewer_and_widget, errors, no_aborted_thread_warning
):
    _, widget, _ = viewer_and_widget

    def allocate():
        raise RuntimeError(TORCH_OUT_OF_MEMORY)

    widget.start(allocate)
    _wait_until_ended(qtbot, widget)
    assert len(errors) == 1 and "not enough memory" in errors[0]
    assert widget.usable


def test_a_failure_while_showing_the_result_ends_the_run_too(qtbot, viewer_and_widget, errors):
    _, widget, _ = viewer_and_widget

    def show(result):
        raise ValueError(f"cannot show {result}")

    widget.task.start(steps_failing_at, None, on_result=show, message="Working…")
    _wait_until_ended(qtbot, widget)
    assert errors == ["Cannot show result"]
    assert widget.usable and widget.finished == 1


def test_success_returns_the_result_and_values_sent_reach_the_generator(
    qtbot, viewer_and_widget, errors
):
    _, widget, _ = viewer_and_widget

    def wait_for_a_message():
        while True:  # `worker.send()` is how a widget talks to a running computation
            message = yield Progress(0, 1, "waiting")
            if message is not None:
                return f"got {message}"
            time.sleep(0.01)

    widget.start(wait_for_a_message)
    qtbot.waitUntil(lambda: widget.status.value == "Waiting", timeout=TIMEOUT_MS)
    widget.task.worker.send("new annotations")
    _wait_until_ended(qtbot, widget)
    assert errors == [] and widget.results == ["got new annotations"]
    assert widget.usable and widget.finished == 1


def test_cancel_stops_at_the_next_step_and_says_nothing_changed(qtbot, viewer_and_widget, errors):
    _, widget, _ = viewer_and_widget
    widget.start(steps_failing_at, None, RuntimeError("never raised"), 0.2)
    qtbot.waitUntil(lambda: widget.progress_bar.value > 0, timeout=TIMEOUT_MS)
    widget.task.cancel()
    _wait_until_ended(qtbot, widget)
    assert errors == [] and widget.results == []
    assert widget.status.value == "Cancelled; no layers were changed."
    assert widget.usable


# ------------------------------------------------------------------ closing mid-run
class Blocking:
    """A long computation that holds at a step until released, and records how it ended."""

    def __init__(self):
        self.release = threading.Event()
        self.steps_started = 0

    def __call__(self):
        for done in range(1000):
            self.steps_started += 1
            self.release.wait(TIMEOUT_MS / 1000)
            yield Progress(done, 1000, "working")
        return "result"


def _close_mid_run(qtbot, widget, close):
    """Start a blocking run, close something mid-step, and let the step end."""
    work = Blocking()
    widget.start(work)
    worker = widget.task.worker
    qtbot.waitUntil(lambda: work.steps_started == 1, timeout=TIMEOUT_MS)
    close()
    # napari deletes a removed dock on the next turn of the event loop
    qtbot.waitUntil(lambda: widget.task.closed, timeout=TIMEOUT_MS)
    work.release.set()  # the step in progress ends; the worker then sees the quit
    qtbot.waitUntil(
        lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=TIMEOUT_MS
    )
    qtbot.wait(50)  # let the worker's last signals arrive
    return work, worker


def _assert_silent(capfd, caplog, recwarn, errors):
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "has been deleted" not in out + err
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [str(w.message) for w in recwarn if "thread" in str(w.message)] == []
    assert errors == []


def test_removing_the_dock_mid_run_stops_the_work_silently(
    qtbot, viewer_and_widget, errors, capfd, caplog, recwarn
):
    viewer, widget, dock = viewer_and_widget
    work, worker = _close_mid_run(qtbot, widget, lambda: viewer.window.remove_dock_widget(dock))

    assert work.steps_started <= 2  # quit at the next step, not 1000 steps later
    assert not worker.is_running and not widget.task.running
    assert widget.results == []  # no result shown by a widget the user closed
    assert widget.usable and widget.finished == 1  # the widget still exists: it is reset
    _assert_silent(capfd, caplog, recwarn, errors)
    widget.start(Blocking())  # a closed widget starts nothing
    assert not widget.task.running


def test_removing_the_dock_while_paused_stops_the_work(qtbot, viewer_and_widget, errors):
    viewer, widget, dock = viewer_and_widget
    work = Blocking()
    widget.start(work)
    # pause while the first step holds, then let it end: the worker pauses at its next step
    # (released first, a loaded machine could finish all the steps before the pause)
    qtbot.waitUntil(lambda: work.steps_started == 1, timeout=TIMEOUT_MS)
    widget.task.worker.pause()
    work.release.set()
    qtbot.waitUntil(lambda: widget.task.worker.is_paused, timeout=TIMEOUT_MS)
    viewer.window.remove_dock_widget(dock)
    _wait_until_ended(qtbot, widget)
    assert widget.results == [] and errors == []


def test_closing_the_viewer_mid_run_stops_the_work_silently(
    qtbot, viewer_and_widget, errors, capfd, caplog, recwarn
):
    viewer, widget, _ = viewer_and_widget
    work, worker = _close_mid_run(qtbot, widget, viewer.close)

    assert work.steps_started <= 2
    assert not worker.is_running and not widget.task.running
    assert widget.task.closed and widget.results == []
    assert widget.finished == 0  # its controls are gone: the widget is not called back
    _assert_silent(capfd, caplog, recwarn, errors)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("choose an image layer to segment", "Choose an image layer to segment"),
        ("there was not enough memory", "There was not enough memory"),
        ("can't read the image", "Can't read the image"),
        ("model.safetensors is damaged", "model.safetensors is damaged"),
        ("nuclei_1 has no pixels", "nuclei_1 has no pixels"),
        ("/data/run 3/model.json is missing", "/data/run 3/model.json is missing"),
        ("'cells' is empty", "'cells' is empty"),
        ("Already a sentence.", "Already a sentence."),
    ],
    ids=["word", "memory", "apostrophe", "file name", "layer name", "path", "quoted", "capital"],
)
def test_messages_start_with_a_capital_unless_they_start_with_a_name(
    qtbot, viewer_and_widget, errors, message, shown
):
    _, widget, _ = viewer_and_widget
    widget.task.fail(message)
    assert errors == [shown] and widget.status.value == shown

    connected = threading.Event()

    def report():
        connected.wait(10)  # the test listens before the first record, however loaded the machine
        yield Progress(0, 2, message)
        time.sleep(0.2)
        yield Progress(1, 2, "done")

    seen = []
    widget.task.start(report, on_result=widget.results.append, message="Working…")
    widget.task.worker.yielded.connect(lambda _record: seen.append(widget.status.value))
    connected.set()
    _wait_until_ended(qtbot, widget)
    assert seen[0] == shown  # progress messages follow the same rule
