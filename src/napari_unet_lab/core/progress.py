"""Small progress records yielded by long-running core generators."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

Result = TypeVar("Result")


@dataclass(frozen=True)
class Progress:
    """How far a long computation has come.

    Attributes
    ----------
    done, total : int
        Units of work finished, and in all (tiles for prediction).
    message : str
        A short line for a status bar, in the user's words.
    """

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        """Share of the work done, from 0 to 1."""
        return self.done / self.total if self.total else 1.0


def run_to_end(work: Generator[Progress, None, Result]) -> Result:
    """Run a progress-yielding generator to the end and return its result."""
    while True:
        try:
            next(work)
        except StopIteration as stop:
            return stop.value
