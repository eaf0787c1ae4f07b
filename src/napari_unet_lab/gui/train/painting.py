"""Annotations painted while training runs, handed to the run as messages."""

from __future__ import annotations

import queue
from collections.abc import Callable

from qtpy.QtCore import QTimer

from ...core.train import NewAnnotation
from .pair import Pair


class PaintedAnnotations:
    """Put a `NewAnnotation` into a run's inbox whenever the user paints on a pair's annotations.

    The annotations are copied here, on napari's thread, one turn of the event
    loop after the edit: napari announces some edits before it writes them,
    and a burst of edits becomes one message. The training thread only ever
    sees the copies.

    Parameters
    ----------
    pairs : list of Pair
        The pairs trained on, in the run's order.
    inbox : queue.SimpleQueue
        The inbox of the running `train_interactively`.
    tell : callable
        Shows the user why new annotations cannot be used (they no longer fit).
    """

    def __init__(self, pairs: list[Pair], inbox: queue.SimpleQueue, tell: Callable[[str], None]):
        self._pairs, self._inbox, self._tell = pairs, inbox, tell
        self._changed: set[int] = set()  # indices of pairs edited since the last message
        self._layers = list({id(pair.annotations): pair.annotations for pair in pairs}.values())
        for layer in self._layers:
            layer.events.paint.connect(self._painted)
            layer.events.data.connect(self._painted)

    def _painted(self, event) -> None:
        edited = {i for i, pair in enumerate(self._pairs) if pair.annotations is event.source}
        if edited and not self._changed:
            QTimer.singleShot(0, self._send)
        self._changed |= edited

    def _send(self) -> None:
        changed, self._changed = sorted(self._changed), set()
        if not self._layers:  # stopped meanwhile
            return
        for index in changed:
            try:
                item = self._pairs[index].annotated_image()
            except ValueError as error:
                self._tell(str(error))
                continue
            self._inbox.put(NewAnnotation(index, item))

    def stop(self) -> None:
        """Stop watching the annotations."""
        for layer in self._layers:
            layer.events.paint.disconnect(self._painted)
            layer.events.data.disconnect(self._painted)
        self._layers = []
