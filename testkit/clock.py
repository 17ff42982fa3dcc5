"""A clock the test moves: injected where the code under test reads `time.time`."""

from __future__ import annotations


class Clock:
    """A settable stand-in for `time.time` (the task store binds its clock at construction)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
