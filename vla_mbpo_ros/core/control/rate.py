"""A fixed-rate loop on absolute deadlines, for control threads.

Deadlines advance by exactly one period (no drift from the time the cycle itself takes); a loop
that falls more than a whole period behind skips ahead instead of bursting the missed cycles,
and counts an overrun. The clock and sleep are injectable so the timing rules are unit-tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class FixedRate:
    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not period > 0:
            raise ValueError(f"period: expected > 0 s, got {period!r}")
        self.period = float(period)
        self.overruns = 0
        self._clock = clock
        self._sleep = sleep
        self._deadline = clock() + self.period
        self._last: float | None = None

    def wait(self) -> tuple[float, float | None]:
        """Sleep until the next deadline; returns (now, |interval since the last cycle - period| or
        None on the first cycle)."""
        delay = self._deadline - self._clock()
        if delay > 0:
            self._sleep(delay)
        now = self._clock()
        error = None if self._last is None else abs(now - self._last - self.period)
        self._last = now
        self._deadline += self.period
        if now - self._deadline > self.period:  # fell more than a cycle behind: skip, don't burst
            self.overruns += 1
            self._deadline = now + self.period
        return now, error
