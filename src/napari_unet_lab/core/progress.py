"""Small progress records yielded by long-running core generators."""

from __future__ import annotations

from dataclasses import dataclass


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
