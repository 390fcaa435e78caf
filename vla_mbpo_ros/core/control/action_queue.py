"""The executor's queue of action chunks, with temporal ensembling of overlapping chunks.

The policy node ticks at a fixed control rate with an integer step counter. A chunk of ``k``
actions computed for an observation is pushed with the step at which its first action applies;
``pop(step)`` returns the action for that step, blended over every chunk that covers it:

* ``none``: the newest chunk wins (highest start step; the later push on a tie);
* ``linear``: each newer chunk fades in over its overlap with the older coverage: at the j-th
  step (0-based) of an overlap of length L its weight is (j + 1) / (L + 1), so the command ramps
  from the old plan to the new one instead of jumping;
* ``exponential``: ACT's temporal ensembling: chunks covering the step, oldest first, get
  weights exp(-m * i), normalised (m > 0 favours older predictions, m < 0 newer ones).

Actions for steps already in the past are dropped. ``clear()`` flushes everything (e-stop).
Not thread-safe: call it from one thread (the control timer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

BLEND_MODES: tuple[str, ...] = ("none", "linear", "exponential")


@dataclass
class _Chunk:
    actions: np.ndarray  # (k, d) float64
    start: int  # control step of actions[0]
    seq: int  # push order

    @property
    def end(self) -> int:  # first step after the chunk
        return self.start + len(self.actions)


class ActionQueue:
    def __init__(
        self,
        chunk_size: int,
        blend: str = "none",
        exp_decay: float = 0.01,
        request_watermark: int = 2,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"action_queue.chunk_size: expected an integer >= 1, got {chunk_size!r}")
        if blend not in BLEND_MODES:
            raise ValueError(f"action_queue.blend: expected one of {list(BLEND_MODES)}, got {blend!r}")
        if isinstance(exp_decay, bool) or not isinstance(exp_decay, (int, float)) or not math.isfinite(exp_decay):
            raise ValueError(f"action_queue.exp_decay: expected a finite number, got {exp_decay!r}")
        if (
            isinstance(request_watermark, bool)
            or not isinstance(request_watermark, int)
            or not 0 <= request_watermark < chunk_size
        ):
            raise ValueError(
                f"action_queue.request_watermark: expected an integer in [0, chunk_size - 1 = {chunk_size - 1}], "
                f"got {request_watermark!r}"
            )
        self.chunk_size = chunk_size
        self.blend = blend
        self.exp_decay = float(exp_decay)
        self.request_watermark = request_watermark
        self.action_dim: int | None = None
        self._chunks: list[_Chunk] = []
        self._seq = 0

    def push(self, actions: Any, start_step: int) -> None:
        """Add a (chunk_size, d) chunk whose first action applies at control step ``start_step``."""
        arr = np.asarray(actions, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != self.chunk_size:
            raise ValueError(f"action chunk must have shape ({self.chunk_size}, d), got {arr.shape}")
        if self.action_dim is not None and arr.shape[1] != self.action_dim:
            raise ValueError(f"action chunk has {arr.shape[1]} dims, the queue holds {self.action_dim}-dim actions")
        self.action_dim = arr.shape[1]
        self._chunks.append(_Chunk(arr.copy(), int(start_step), self._seq))
        self._seq += 1

    def clear(self) -> None:
        self._chunks.clear()

    def _drop_stale(self, step: int) -> None:
        self._chunks = [c for c in self._chunks if c.end > step]

    def remaining(self, step: int) -> int:
        """Consecutive steps from ``step`` on that have an action (0 when dry)."""
        self._drop_stale(step)
        covered_until = step
        for c in sorted(self._chunks, key=lambda c: c.start):
            if c.start > covered_until:
                break
            covered_until = max(covered_until, c.end)
        return covered_until - step

    def needs_chunk(self, step: int) -> bool:
        """True once the remaining actions are at or below the watermark: request inference now.

        The caller tracks whether a request is already in flight.
        """
        return self.remaining(step) <= self.request_watermark

    def pop(self, step: int) -> np.ndarray | None:
        """Blended action for control step ``step``, or None when no chunk covers it."""
        self._drop_stale(step)
        covering = sorted((c for c in self._chunks if c.start <= step), key=lambda c: (c.start, c.seq))
        if not covering:
            return None
        rows = [c.actions[step - c.start] for c in covering]
        if self.blend == "none" or len(covering) == 1:
            return rows[-1].copy()
        if self.blend == "exponential":
            weights = np.exp(-self.exp_decay * np.arange(len(rows)))
            return (weights[:, None] * np.stack(rows)).sum(axis=0) / weights.sum()
        # linear: fold chunks in oldest first; each newer one ramps in over its overlap with the
        # coverage of the older ones (every chunk here covers ``step``, so weight < 1).
        blended = rows[0]
        covered_until = covering[0].end
        for c, row in zip(covering[1:], rows[1:]):
            overlap = covered_until - c.start
            weight = (step - c.start + 1) / (overlap + 1)
            blended = (1.0 - weight) * blended + weight * row
            covered_until = max(covered_until, c.end)
        return blended
