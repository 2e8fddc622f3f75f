"""A clock the test moves by hand (for code that takes `clock: Callable[[], float]`)."""

from __future__ import annotations


class FakeClock:
    """Returns `now`, which the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
