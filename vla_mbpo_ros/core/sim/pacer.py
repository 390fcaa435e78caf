"""Keep simulated time in step with wall time (the sim core itself is never clocked)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RealtimePacer:
    """Sleeps so that sim time advances ``factor`` times as fast as wall time.

    ``factor`` 1.0 is real time, 2.0 twice as fast; ``factor <= 0`` or ``inf`` never sleeps.
    The pacer is anchored at the first ``wait`` (or ``reset``) so a slow stretch is caught up
    afterwards instead of drifting; call ``reset`` after a pause (e.g. an episode boundary).
    """

    def __init__(
        self,
        factor: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if math.isnan(factor):
            raise ValueError("factor must be a number, got nan")
        self.factor = float(factor)
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[float, float] | None = None  # (sim time, wall time)

    @property
    def unpaced(self) -> bool:
        return self.factor <= 0 or math.isinf(self.factor)

    def reset(self, sim_time: float) -> None:
        """Anchor: ``sim_time`` corresponds to now."""
        self._anchor = (sim_time, self._clock())

    def behind(self, sim_time: float) -> float:
        """Seconds by which wall time is ahead of ``sim_time`` (0 when the sim keeps up)."""
        if self.unpaced or self._anchor is None:
            return 0.0
        sim0, wall0 = self._anchor
        return max(0.0, self._clock() - (wall0 + (sim_time - sim0) / self.factor))

    def wait(self, sim_time: float) -> float:
        """Sleep until wall time catches up with ``sim_time``; returns the seconds slept."""
        if self.unpaced:
            return 0.0
        if self._anchor is None:
            self.reset(sim_time)
            return 0.0
        sim0, wall0 = self._anchor
        delay = wall0 + (sim_time - sim0) / self.factor - self._clock()
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        return delay
