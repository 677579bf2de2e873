"""A training stage's learning rate, backed off when a run diverges.

A run that diverges (its weights go non-finite, or whatever the caller's test says) is retried
at a quarter of the rate, down to ``lr / 64`` (three retries); past that the stage refuses with
one line. A rate found once is kept for the stage's later runs (a target search trains many).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from graphc.errors import PassError

__all__ = ["Backoff", "Diverged", "finite"]

FACTOR = 4
FLOOR = 64  # the lowest rate tried is lr / FLOOR


def finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every tensor holds finite values only."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class Diverged(PassError):
    """A run diverged at every rate down to the floor (``steps``: what those runs trained), or,
    raised inside a run, the run diverged at the current rate."""

    def __init__(self, msg: str, steps: int = 0):
        super().__init__(msg)
        self.steps = steps


class Backoff:
    """The current rate of a stage (``lr``) and how often it was cut; see the module docstring."""

    def __init__(self, who: str, lr: float, info: Callable[[str], None] | None = None):
        self.who, self.start, self.lr, self.info = who, lr, lr, info
        self.backoffs = self.steps_diverged = 0

    def run(self, attempt: Callable[[float], tuple[object, str | None, int]], what: str = ""):
        """``attempt(lr)`` -> (result, why it diverged or None, steps it trained); the result of
        the first attempt that did not diverge. A :class:`Diverged` raised by the attempt counts
        as a divergence too (a hook that stops a run early)."""
        wasted = 0
        while True:
            try:
                result, why, steps = attempt(self.lr)
            except Diverged as e:
                result, why, steps = None, str(e), e.steps
            if why is None:
                return result
            wasted += steps
            self.steps_diverged += steps
            if self.lr / FACTOR < self.start / FLOOR:
                raise Diverged(f"{self.who}: training diverged ({why}) at lr={self.start:g} and at each retry down "
                               f"to lr={self.lr:g}; try a lower lr", wasted)
            if self.info is not None:
                self.info(f"{self.who}: training diverged at lr={self.lr:g}{what} ({why}); "
                          f"retrying at lr={self.lr / FACTOR:g}")
            self.lr /= FACTOR
            self.backoffs += 1

    def stats(self) -> dict:
        """The rate reached and the cuts, for a pass's stats (empty when none was needed)."""
        if not self.backoffs:
            return {}
        return {"lr": self.lr, "lr_backoffs": self.backoffs, "steps_diverged": self.steps_diverged}
