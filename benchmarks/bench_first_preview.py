"""First preview: how soon the Train widget shows what the network makes of the image.

Drives the real Train widget in a real napari viewer, as a user would: File > Open Sample
(``--sample``, default ``nuclei``: BBBC039), a few scribbles painted from its ground truth
by the seeded rule of time-to-quality scenario (c)
(`time_to_quality_scenarios.scribbles_from_labels`; ``--annotations objects`` takes the
ground truth itself), optionally a second sample's ground truth held out to validate on
(``--validate``), the widget's defaults for everything else, then a click on Start, and
Stop after ``--seconds``. Measured, in seconds since the click:

- ``first_preview_layer``: the preview layer is added (empty; Start makes it at once);
- ``first_step``: the first training step ends (in the worker thread);
- ``first_preview``: the first prediction is drawn into the preview layer (napari's thread).

From the training loop (its worker thread) every step's start and end, and every preview
and validation: the gap between one step's end and the next step's start is what that
step waited for. Targets (issue #11, scenario c): the first preview within 15 s of Start;
no step waits for a preview or validation longer than the median step.

Run on a machine without a screen under xvfb (one torch thread: the other core may be
busy; the load average is recorded before and after)::

    xvfb-run -a .venv/bin/python -m benchmarks.bench_first_preview
    xvfb-run -a .venv/bin/python -m benchmarks.bench_first_preview --validate --seconds 120
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.machine import ROOT, describe_machine, write_report
from benchmarks.time_to_quality_scenarios import scribbles_from_labels
from napari_unet_lab.core.train import TrainingRun
from napari_unet_lab.core.train.resize import ResizedTrainingRun

PLUGIN = "napari-unet-lab"
FIRST_PREVIEW_TARGET = 15.0  # seconds from Start (issue #11, scenario c)


# ------------------------------------------------------------ the loop's times
@contextmanager
def loop_times() -> Iterator[list[tuple[str, float, float]]]:
    """Record (what, start, end) of every training step, preview and validation meanwhile.

    The training loop runs in the Train widget's worker thread; wrapping the three
    `TrainingRun` methods it calls (and their overrides in `ResizedTrainingRun`, the run
    of a fine-tuning at the model's object size) times it there without changing what it
    does. A call inside a timed call (an override calling its parent) is not counted again.
    """
    events: list[tuple[str, float, float]] = []
    lock = threading.Lock()
    depth = threading.local()
    timed = {"step": "train_step", "preview": "preview_training_image", "validation": "validate"}
    originals = [
        (cls, what, cls.__dict__[method])
        for cls in (TrainingRun, ResizedTrainingRun)
        for what, method in timed.items()
        if method in cls.__dict__
    ]

    def timing(what: str, method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "value", 0)
            depth.value = level + 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth.value -= 1
                if level == 0:
                    with lock:
                        events.append((what, started, time.perf_counter()))

        return wrapper

    for cls, what, method in originals:
        setattr(cls, timed[what], timing(what, method))
    try:
        yield events
    finally:
        for cls, what, method in originals:
            setattr(cls, timed[what], method)


def step_waits(events: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Sum up what the steps waited for: the gaps between steps and what ran in them.

    Parameters
    ----------
    events : list of (what, start, end)
        As `loop_times` records them: ``"step"``, ``"preview"`` or ``"validation"``.

    Returns
    -------
    dict
        ``steps``, ``median_step`` (seconds), ``longest_wait`` (the longest gap
        between one step's end and the next one's start) with ``longest_wait_step``
        (the step that waited, counted from 1) and ``longest_wait_for`` (what ran in
        that gap), the longest ``preview`` and ``validation`` (seconds, None if
        none ran between steps), ``waits_over_median_step`` (gaps longer than the
        median step) and ``target_met``: no gap longer than the median step.
    """
    steps = sorted((start, end) for what, start, end in events if what == "step")
    if len(steps) < 2:
        return {"steps": len(steps), "target_met": None}
    median = float(np.median([end - start for start, end in steps]))
    gaps = [(steps[k][1], steps[k + 1][0]) for k in range(len(steps) - 1)]
    widths = [after - before for before, after in gaps]
    longest = int(np.argmax(widths))
    before, after = gaps[longest]
    between = [e for e in events if e[0] != "step" and e[1] >= steps[0][1]]  # after step 1

    def longest_of(what: str) -> float | None:
        spans = [end - start for name, start, end in between if name == what]
        return round(max(spans), 4) if spans else None

    return {
        "steps": len(steps),
        "median_step": round(median, 4),
        "longest_wait": round(widths[longest], 4),
        "longest_wait_step": longest + 2,
        "longest_wait_for": sorted(
            {name for name, start, end in between if start >= before and end <= after}
        ),
        "preview": longest_of("preview"),
        "validation": longest_of("validation"),
        "waits_over_median_step": int(np.count_nonzero(np.array(widths) > median)),
        "target_met": bool(widths[longest] <= median),
    }


# ------------------------------------------------------------ driving napari
def annotate(viewer: Any, widget: Any, sample: str, annotations: str, seed: int) -> None:
    """Open a sample and choose its annotations in the Train widget, as a user would."""
    image, truth = viewer.open_sample(PLUGIN, sample)
    if annotations == "scribbles":
        strokes = scribbles_from_labels(np.asarray(truth.data), seed)
        layer = viewer.add_labels(strokes, name=f"{image.name} scribbles")
        viewer.layers.remove(truth)  # the user sees their strokes, not the answer
    else:
        layer = truth
    widget.pairs.image.value = image
    widget.pairs.annotations.value = layer
    widget.pairs.kind.value = annotations


def hold_out(viewer: Any, widget: Any, sample: str) -> None:
    """Add the chosen pair, then another sample's ground truth as the pair to validate on."""
    widget.pairs.add()
    image, truth = viewer.open_sample(PLUGIN, sample)
    widget.pairs.image.value, widget.pairs.annotations.value = image, truth
    widget.pairs.kind.value = "objects"
    widget.pairs.add()
    widget.pairs.validation.value = 1


def measure(
    viewer: Any, widget: Any, wait_until: Callable[[Callable[[], bool], float], None],
    seconds: float, steps: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Click Start, stop after `seconds`, and return the times measured (see the module).

    Parameters
    ----------
    viewer, widget : napari.Viewer, TrainWidget
        The viewer and its Train widget, with the pairs chosen.
    wait_until : callable
        ``wait_until(condition, timeout_seconds)`` runs napari's event loop until
        `condition()` holds, or fails (``qtbot.waitUntil`` in tests).
    seconds : float
        How long to train before pressing Stop (counted from Start).
    steps : int
        Train at least this many steps before pressing Stop.
    """
    times: dict[str, float] = {}
    ticks: list[float] = []

    def added(event: Any) -> None:
        if event.value.name.endswith(" preview"):
            times.setdefault("first_preview_layer", time.perf_counter())

    show = widget.live.show

    def shown(*args: Any, **kwargs: Any) -> None:
        show(*args, **kwargs)
        times.setdefault("first_preview", time.perf_counter())

    from qtpy.QtCore import QTimer  # Qt only where napari runs

    ticker = QTimer()
    ticker.setInterval(10)
    ticker.timeout.connect(lambda: ticks.append(time.perf_counter()))
    viewer.layers.events.inserted.connect(added)
    widget.live.show = shown  # the one call that draws a preview into its layer
    load_before = list(os.getloadavg())
    try:
        with loop_times() as events:
            clicked = time.perf_counter()
            widget.controls.start_button.native.click()  # the user presses Start
            ticker.start()
            wait_until(lambda: widget.run is not None or not widget.running, 600)
            if widget.run is None:
                raise RuntimeError(f"training did not start: {widget.controls.status.value}")
            wait_until(lambda: not widget.running or (time.perf_counter() - clicked >= seconds
                                                      and widget.run.step >= steps),
                       seconds + 600)  # fmt: skip
            widget.controls.stop_button.native.click()
            wait_until(lambda: not widget.running, 600)
            ticker.stop()
    finally:
        viewer.layers.events.inserted.disconnect(added)
        del widget.live.show
    steps = sorted((start, end) for what, start, end in events if what == "step")
    since = {key: round(value - clicked, 3) for key, value in times.items()}
    if steps:
        since["first_step_started"] = round(steps[0][0] - clicked, 3)
        since["first_step"] = round(steps[0][1] - clicked, 3)
        # of the time before it: validating the starting network (with a validation pair)
        before = [end - start for what, start, end in events
                  if what == "validation" and end <= steps[0][0]]  # fmt: skip
        since["starting_validation_took"] = round(sum(before), 3)
    first = since.get("first_preview")
    return {
        "seconds_since_start": since,
        "first_preview_target_seconds": FIRST_PREVIEW_TARGET,
        "first_preview_target_met": first is not None and first <= FIRST_PREVIEW_TARGET,
        "training_loop": step_waits(events),
        "previews": sum(what == "preview" for what, _, _ in events),
        "validations": sum(what == "validation" for what, _, _ in events),
        "longest_event_loop_stall_ms": (
            round(1000 * float(np.max(np.diff(ticks))), 1) if len(ticks) > 1 else None
        ),
        "settings": widget.run.settings.to_dict(),  # the widget's defaults, as it trained
        "status": widget.controls.status.value,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
    }


def run_events_until(condition: Callable[[], bool], timeout: float) -> None:
    """Run napari's event loop until `condition()` holds; fail after `timeout` seconds."""
    from qtpy.QtWidgets import QApplication

    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"gave up waiting after {timeout:g} s")
        QApplication.processEvents()
        time.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    """Open napari, train from a sample's annotations, and write what was measured."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", default="nuclei", help="a sample of the plugin (napari.yaml)")
    parser.add_argument("--annotations", choices=["scribbles", "objects"], default="scribbles")
    parser.add_argument("--scribble-seed", type=int, default=0)
    parser.add_argument("--validate", action="store_true", help="hold out nuclei_2 to validate")
    parser.add_argument(
        "--start", choices=["default", "new"], default="default",
        help="the widget's default (the built-in model) or a new network",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=60.0, help="train this long, then Stop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or ROOT / "benchmarks" / "results" / "first_preview-cpu.json"
    import napari

    from napari_unet_lab.gui.train.start_from import NEW_NETWORK

    record: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "command": "python -m benchmarks.bench_first_preview " + " ".join(argv or sys.argv[1:]),
        "sample": args.sample,
        "annotations": args.annotations,
    }
    viewer = napari.Viewer()
    try:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net: Train")
        annotate(viewer, widget, args.sample, args.annotations, args.scribble_seed)
        if args.validate:
            hold_out(viewer, widget, "nuclei_2")
        if args.start == "new":
            widget.start_from.choice.value = NEW_NETWORK
        record["start_from"] = str(widget.start_from.choice.value)
        record["preview_every"] = widget.settings.preview_every.value
        record["validation_pair"] = "nuclei_2 (ground truth)" if args.validate else None
        record.update(measure(viewer, widget, run_events_until, args.seconds))
    finally:
        viewer.close()
    write_report(record, out)
    summary = {k: record[k] for k in ("seconds_since_start", "training_loop", "previews")}
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
