"""Sliding-window statistics for /diagnostics: arrival rates and value percentiles."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence

import numpy as np


class RateStats:
    """Sliding-window diagnostics: per-key arrival rate and value percentiles (skew, latency).

    Keys are free-form (stream names, "skew", "latency/head", ...). Times are the caller's.
    """

    def __init__(self, window_s: float = 5.0, max_samples: int = 10_000) -> None:
        if not math.isfinite(window_s) or window_s <= 0:
            raise ValueError(f"diagnostics.window_s: expected a number > 0, got {window_s!r}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"diagnostics.max_samples: expected an integer >= 2, got {max_samples!r}")
        self.window_s = float(window_s)
        self.max_samples = max_samples
        self._ticks: dict[Hashable, deque[float]] = {}
        self._values: dict[Hashable, deque[tuple[float, float]]] = {}

    def tick(self, key: Hashable, now: float) -> None:
        """One arrival of ``key`` at ``now``."""
        self._ticks.setdefault(key, deque(maxlen=self.max_samples)).append(now)

    def add(self, key: Hashable, value: float, now: float) -> None:
        """One sample of a measured value (e.g. skew or latency in seconds)."""
        self._values.setdefault(key, deque(maxlen=self.max_samples)).append((now, float(value)))

    def rate(self, key: Hashable, now: float) -> float:
        """Arrivals per second over the window ending at ``now``; 0.0 with fewer than two."""
        ticks = self._ticks.get(key)
        if not ticks:
            return 0.0
        while ticks and ticks[0] < now - self.window_s:
            ticks.popleft()
        if len(ticks) < 2 or ticks[-1] <= ticks[0]:
            return 0.0
        return (len(ticks) - 1) / (ticks[-1] - ticks[0])

    def percentiles(self, key: Hashable, now: float, qs: Sequence[float] = (50.0, 99.0)) -> dict[float, float]:
        """Percentiles (NaN if no samples in the window) of the values recorded under ``key``."""
        values = self._values.get(key)
        if values:
            while values and values[0][0] < now - self.window_s:
                values.popleft()
        if not values:
            return {q: math.nan for q in qs}
        data = np.fromiter((v for _, v in values), dtype=np.float64, count=len(values))
        return {q: float(np.percentile(data, q)) for q in qs}

    def summary(self, now: float) -> dict[str, float]:
        """Flat dict for a diagnostics message: ``rate/<key>``, ``<key>/p50``, ``<key>/p99``."""
        out: dict[str, float] = {}
        for key in self._ticks:
            out[f"rate/{key}"] = self.rate(key, now)
        for key in self._values:
            pct = self.percentiles(key, now)
            out[f"{key}/p50"] = pct[50.0]
            out[f"{key}/p99"] = pct[99.0]
        return out
