"""Training that listens: new annotations and preview requests pushed into a running loop.

The napari widget never lets the training thread read its attributes: it puts
messages into a queue (or sends them into the generator, napari's
``GeneratorWorker.send``), and the loop takes them up between steps.
"""

from __future__ import annotations

import queue
from collections.abc import Generator
from dataclasses import dataclass, replace

from ..config import TargetConfig
from .pipeline import AnnotatedImage, update_annotation
from .records import TrainingProgress, TrainingResult
from .run import TrainingRun
from .validation import Preview


@dataclass(frozen=True)
class NewAnnotation:
    """The annotations of training image `index` changed: train on `item` from now on."""

    index: int  # which training image, in the order given to `prepare_training`
    item: AnnotatedImage  # the image with its new annotations (a copy the user no longer paints)


@dataclass(frozen=True)
class PreviewRequest:
    """Show what the network makes of a region of training image `index`."""

    index: int  # which training image
    region: tuple[slice, slice] | None  # rows and columns; None: the whole image


def _messages(sent: object) -> list[object]:
    if sent is None:
        return []
    return list(sent) if isinstance(sent, list | tuple) else [sent]


def train_interactively(
    run: TrainingRun,
    inbox: queue.SimpleQueue | None = None,
    preview_every: int = 10,
    targets: TargetConfig | None = None,
) -> Generator[TrainingProgress | Preview | str, object, TrainingResult]:
    """Train, taking up new annotations and preview requests between steps.

    Parameters
    ----------
    run : TrainingRun
        The run to go on with (from `prepare_training`).
    inbox : queue.SimpleQueue, optional
        `NewAnnotation` and `PreviewRequest` messages, put from any thread.
        Messages (or lists of them) passed with ``generator.send()`` count too.
    preview_every : int
        Steps between previews; there is one after step 1 too. Their time counts
        against the run's time budget, if it has one.
    targets : TargetConfig, optional
        Border weights and the class-weight rule, as given to `prepare_training`,
        applied to new annotations.

    Yields
    ------
    TrainingProgress
        After every step.
    Preview
        Of the latest `PreviewRequest`, after step 1 and every `preview_every` steps; a
        step that validated passes its preview on to the next step, so no step waits for
        both. When the run ends, one more of the network it returns, unless the latest
        preview already shows it.
    str
        A message for the user: new annotations are used, or why not yet.

    Returns
    -------
    TrainingResult
        As `TrainingRun.run` returns it. Closing the generator stops between steps.
    """
    if preview_every < 1:
        raise ValueError(f"preview_every must be at least 1, got {preview_every}")
    steps = run.run()
    pending: list[object] = []
    request: PreviewRequest | None = None
    due = False  # a preview is owed
    shown = 0  # the step the latest preview showed
    try:
        while True:
            if inbox is not None:
                while True:
                    try:
                        pending.append(inbox.get_nowait())
                    except queue.Empty:
                        break
            messages, pending = pending, []
            for message in messages:
                if isinstance(message, PreviewRequest):
                    request = message
                elif isinstance(message, NewAnnotation):
                    try:
                        update_annotation(run, message.index, message.item, targets)
                        text = f"Training now uses the new annotations of {message.item.name}."
                    except ValueError as error:
                        text = f"New annotations not used yet: {error}"
                    pending.extend(_messages((yield text)))
                else:
                    raise TypeError(
                        f"training takes NewAnnotation and PreviewRequest messages, got {message!r}"
                    )
            try:
                progress = next(steps)
            except StopIteration as stop:
                result = stop.value
                kept = result.steps if result.best_step is None else result.best_step
                if request is not None and shown != kept:  # the preview shows the result
                    yield from _preview(run, request, kept)
                return result
            pending.extend(_messages((yield progress)))
            due = request is not None and (
                due or progress.step == 1 or progress.step % preview_every == 0
            )
            # a step that validated has had its wait: the preview waits for the next one
            if not due or progress.validation is not None:
                continue
            due, shown = False, progress.step
            shown_it, sent = yield from _preview(run, request)
            pending.extend(_messages(sent))
            if not shown_it:
                request = None  # asked for something that is not there: wait for a new request
    finally:
        steps.close()


def _preview(
    run: TrainingRun, request: PreviewRequest, step: int | None = None
) -> Generator[Preview | str, object, tuple[bool, object]]:
    """Yield the preview `request` asks for, mid-run its time counted against the budget.

    `step`: the run has ended, and the network holds the weights of this step (the best
    validation's, or the last). Returns whether the preview could be made (if not, a
    message says why) and what was sent back.
    """
    started = run.timing.clock()
    try:
        preview = run.preview_training_image(request.index, request.region)
    except ValueError as error:
        return False, (yield f"No preview: {error}")
    if step is None:
        run.timing.add_other(run.timing.clock() - started)  # previews use the budget too
    else:
        preview = replace(preview, step=step)
    return True, (yield preview)
