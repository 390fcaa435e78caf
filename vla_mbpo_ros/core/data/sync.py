"""Approximate-time matching of N stamped streams (camera views, joint states, ...).

Algorithm (reference-driven, nearest neighbour, emit as soon as decidable):

* One stream is the *reference* (default: the first, normally the head camera). Each emitted
  set belongs to one reference message, so sets come at the reference rate.
* For a pending reference stamp ``r`` and another stream ``s``, the best candidate is the queued
  message of ``s`` nearest to ``r`` within ``slop``. It is *decided* once ``s`` has shown a stamp
  ``>= r + |best - r|``: messages of one stream arrive in stamp order (mostly), so nothing still
  to come can be nearer. If ``s`` has shown a stamp ``> r + slop`` with no candidate within slop,
  ``r`` can only match if a late, out-of-order message still arrives: it stays queued, newer
  references are tried, and it is dropped once a newer one is emitted (or the queue overflows).
* Streams are periodic: the next message of ``s`` is assumed to be stamped at least
  ``min_gap_fraction`` x (smallest of its last ``gap_history`` stamp gaps) after its newest one,
  which decides a candidate without waiting a whole period for the next message (a 30 Hz wrist
  camera with 2 ms jitter would otherwise add ~33 ms). The default 1.0 takes the smallest recent
  gap as it is (it already contains the jitter): a candidate older than the reference is then
  decided when it is within half that gap, i.e. whenever it is the nearest one for sure; with 0.5
  a 50 Hz joint state 6 ms before the head frame waited 20 ms for the next one. A gap shorter than
  any recent one costs at most a slightly less near partner. ``min_gap_fraction=0`` assumes nothing.
* The oldest pending reference is emitted the moment every stream is decided. This is earlier
  than waiting for each stream to pass ``r + slop`` (the textbook rule): with identical trigger
  stamps (offset 0) a set goes out on the arrival of its last member, and otherwise at most one
  message period of the nearest stream later, never a whole slop window.

Why not ROS message_filters' ApproximateTime policy: it minimises the span of each set over all
streams and may wait for a later pivot; a controller wants one set per head frame with the least
delay, and the reference-nearest rule gives exactly that.

Guarantees: every emitted set has ``|offset| <= slop`` for every stream; emitted reference stamps
strictly increase; a message is used at most once; queues are bounded (oldest dropped). A stamp
more than ``jump_threshold`` older than what was seen (clock jump backwards, bag restart) clears
all queues and counts a reset instead of stalling. Time for staleness (``now``) is the caller's
receive clock, separate from message stamps. Nothing here reads a clock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MatchedSet:
    stamp: float  # reference stream stamp
    items: dict[str, Any]
    offsets: dict[str, float]  # stamp - reference stamp, per stream (0.0 for the reference)
    max_skew: float  # max |offset| over the set


@dataclass
class StreamStats:
    received: int = 0
    matched: int = 0  # messages that became part of an emitted set
    dropped: int = 0  # messages that never became part of a set (overflow, late, superseded, reset)
    late: int = 0  # of dropped: arrived too late to be used (older than what was already emitted)
    invalid: int = 0  # non-finite stamps, ignored
    last_receive: float | None = None  # caller's ``now`` at the newest add()


@dataclass(order=True)
class _Entry:
    stamp: float
    seq: int
    item: Any = field(compare=False)


class ApproximateTimeSync:
    """Match messages from ``stream_names`` into sets; see the module docstring."""

    def __init__(
        self,
        stream_names: Sequence[str],
        slop: float,
        queue_size: int,
        reference: str | None = None,
        stale_after: float = 1.0,
        jump_threshold: float = 1.0,
        min_gap_fraction: float = 1.0,
        gap_history: int = 16,
    ) -> None:
        names = tuple(stream_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"sync.streams: expected unique, non-empty stream names, got {list(names)}")
        for label, value in (
            ("sync.slop", slop),
            ("sync.stale_after", stale_after),
            ("sync.jump_threshold", jump_threshold),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{label}: expected a finite number >= 0, got {value!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"sync.queue_size: expected an integer >= 1, got {queue_size!r}")
        if not isinstance(min_gap_fraction, (int, float)) or not 0.0 <= min_gap_fraction <= 1.0:
            raise ValueError(f"sync.min_gap_fraction: expected a number in [0, 1], got {min_gap_fraction!r}")
        if isinstance(gap_history, bool) or not isinstance(gap_history, int) or gap_history < 3:
            raise ValueError(f"sync.gap_history: expected an integer >= 3, got {gap_history!r}")
        if reference is None:
            reference = names[0]
        if reference not in names:
            raise ValueError(f"sync.reference: {reference!r} is not one of the streams {list(names)}")
        self.stream_names = names
        self.reference = reference
        self.slop = float(slop)
        self.queue_size = queue_size
        self.stale_after = float(stale_after)
        self.jump_threshold = float(jump_threshold)
        self.min_gap_fraction = float(min_gap_fraction)
        self.resets = 0
        self.emitted = 0
        self._stats = {n: StreamStats() for n in names}
        self._queues: dict[str, list[_Entry]] = {n: [] for n in names}
        self._newest: dict[str, float] = {}  # newest stamp seen per stream since the last reset
        self._gaps: dict[str, deque[float]] = {n: deque(maxlen=gap_history) for n in names}
        self._last_used: dict[str, float] = {}  # stamp of the message last used per stream
        self._last_emitted: float | None = None
        self._seq = 0

    # ---- public ------------------------------------------------------------------------------
    def stats(self) -> dict[str, StreamStats]:
        return {n: StreamStats(**vars(s)) for n, s in self._stats.items()}

    def queued(self, stream: str) -> int:
        return len(self._queues[stream])

    def stale_streams(self, now: float) -> list[str]:
        """Streams with no message for more than ``stale_after`` s (or none at all) at ``now``."""
        out = []
        for name in self.stream_names:
            last = self._stats[name].last_receive
            if last is None or now - last > self.stale_after:
                out.append(name)
        return out

    def add(self, stream: str, stamp: float, item: Any, now: float) -> list[MatchedSet]:
        """Queue one message; return the sets that became decidable (oldest first)."""
        if stream not in self._queues:
            raise ValueError(f"unknown stream {stream!r}; streams are {list(self.stream_names)}")
        stats = self._stats[stream]
        stats.received += 1
        stats.last_receive = now
        stamp = float(stamp)
        if not math.isfinite(stamp):
            stats.invalid += 1
            stats.dropped += 1
            return []

        newest_known = self._newest.get(stream, -math.inf)
        if self._last_emitted is not None:
            newest_known = max(newest_known, self._last_emitted)
        if stamp < newest_known - self.jump_threshold:
            self._reset()

        if self._is_late(stream, stamp):
            stats.late += 1
            stats.dropped += 1
            return []

        previous = self._newest.get(stream)
        if previous is None or stamp > previous:
            if previous is not None:
                self._gaps[stream].append(stamp - previous)
            self._newest[stream] = stamp
        queue = self._queues[stream]
        bisect.insort(queue, _Entry(stamp, self._seq, item))
        self._seq += 1
        if len(queue) > self.queue_size:
            queue.pop(0)
            stats.dropped += 1
        return self._emit_ready()

    # ---- internals ---------------------------------------------------------------------------
    def _reset(self) -> None:
        for name, queue in self._queues.items():
            self._stats[name].dropped += len(queue)
            queue.clear()
        self._newest.clear()
        for gaps in self._gaps.values():
            gaps.clear()
        self._last_used.clear()
        self._last_emitted = None
        self.resets += 1

    def _is_late(self, stream: str, stamp: float) -> bool:
        """True if the message can no longer be part of any future set."""
        if self._last_emitted is None:
            return False
        if stream == self.reference:
            return stamp <= self._last_emitted
        if stream in self._last_used and stamp <= self._last_used[stream]:
            return True
        # Future references are newer than the last emitted one, so this can't be within slop.
        return stamp < self._last_emitted - self.slop

    def _expected_gap(self, stream: str) -> float:
        gaps = self._gaps[stream]
        if len(gaps) < 3:
            return 0.0
        return self.min_gap_fraction * min(gaps)

    def _decide(self, stream: str, ref: float) -> tuple[str, int]:
        """('match', index) | ('wait', -1) | ('never', -1) for ``stream`` against reference ``ref``."""
        queue = self._queues[stream]
        best_index, best_offset = -1, math.inf
        for i, entry in enumerate(queue):
            offset = abs(entry.stamp - ref)
            if offset <= self.slop and offset < best_offset:  # ties keep the older message
                best_index, best_offset = i, offset
        # Earliest stamp the next message of this stream can carry, assuming it won't come
        # sooner than a fraction of the smallest recent gap. A wrong guess only costs a
        # slightly less near (still within-slop) partner, never a slop violation.
        newest = self._newest.get(stream, -math.inf) + self._expected_gap(stream)
        if best_index >= 0:
            return ("match", best_index) if newest - ref >= best_offset else ("wait", -1)
        return ("never", -1) if newest > ref + self.slop else ("wait", -1)

    def _emit_ready(self) -> list[MatchedSet]:
        out: list[MatchedSet] = []
        ref_queue = self._queues[self.reference]
        index = 0
        while index < len(ref_queue):
            r = ref_queue[index].stamp
            chosen: dict[str, int] = {}
            verdict = "match"
            for name in self.stream_names:
                if name == self.reference:
                    continue
                status, candidate = self._decide(name, r)
                if status != "match":
                    verdict = status
                    break
                chosen[name] = candidate
            if verdict == "wait":
                break  # sets go out in stamp order: a newer reference can't overtake this one
            if verdict == "never":
                # Kept (not dropped) so a late out-of-order message can still rescue it; it goes
                # once a newer reference is emitted or the queue overflows.
                index += 1
                continue
            out.append(self._take(index, chosen))
            index = 0
        return out

    def _take(self, ref_index: int, chosen: dict[str, int]) -> MatchedSet:
        ref_queue = self._queues[self.reference]
        ref_entry = ref_queue[ref_index]
        r = ref_entry.stamp
        items = {self.reference: ref_entry.item}
        offsets = {self.reference: 0.0}
        self._stats[self.reference].dropped += ref_index  # older references that never matched
        del ref_queue[: ref_index + 1]
        self._stats[self.reference].matched += 1
        self._last_used[self.reference] = r
        for name, index in chosen.items():
            queue = self._queues[name]
            entry = queue[index]
            items[name] = entry.item
            offsets[name] = entry.stamp - r
            # Older messages of this stream can't be used by later (newer) references any more.
            self._stats[name].dropped += index
            del queue[: index + 1]
            self._stats[name].matched += 1
            self._last_used[name] = entry.stamp
        self._last_emitted = r
        self.emitted += 1
        ordered_items = {n: items[n] for n in self.stream_names}
        ordered_offsets = {n: offsets[n] for n in self.stream_names}
        return MatchedSet(
            stamp=r,
            items=ordered_items,
            offsets=ordered_offsets,
            max_skew=max(abs(o) for o in ordered_offsets.values()),
        )
