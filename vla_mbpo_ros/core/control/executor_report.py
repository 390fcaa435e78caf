"""What the policy executor reports: its SafetyStatus contents (published on change, and periodically)
and its /diagnostics status. The node only converts these to messages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.control.executor import ExecutorCore
from vla_mbpo_ros.core.util.stats import RateStats

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class SafetySnapshot:
    state: SafetyState
    estop_input: bool
    latch_reason: str
    last_violation: str
    policy_version: str
    commands_sent: int
    holds: int
    clamps: int
    violations: int
    latches: int

    @classmethod
    def of(cls, core: ExecutorCore, policy_version: str) -> "SafetySnapshot":
        monitor, c = core.monitor, core.monitor.counters
        return cls(monitor.state, monitor.estop_pressed, monitor.first_cause or "", core.last_violation, policy_version,
                   c.commands, c.holds, c.clamps, c.violations, c.latches)

    @property
    def change_key(self) -> tuple:
        """Everything but the counters: a change of any of these is published at once."""
        return self.state, self.estop_input, self.latch_reason, self.last_violation, self.policy_version


class StatusThrottle:
    """Publish a snapshot when its ``change_key`` changed, or when ``periodic`` and ``period`` passed."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._key: tuple | None = None
        self._time = -float("inf")
        self._latches_seen = 0

    def new_latch(self, snapshot: SafetySnapshot) -> bool:
        """True once per latch (for logging it with its causes)."""
        new, self._latches_seen = snapshot.latches > self._latches_seen, max(self._latches_seen, snapshot.latches)
        return new

    def due(self, snapshot: SafetySnapshot, now: float, periodic: bool = False) -> bool:
        if snapshot.change_key == self._key and not (periodic and now - self._time >= self.period):
            return False
        self._key, self._time = snapshot.change_key, now
        return True


def executor_diagnostics(snapshot: SafetySnapshot, policy_note: str, queue_depth: int, overruns: int,
                         control_period: float) -> tuple[int, str, dict[str, Any]]:
    """(level, message, values) of the executor's DiagnosticStatus (timing statistics are added by the node)."""
    values: dict[str, Any] = {
        "state": snapshot.state.value, "latch_reason": snapshot.latch_reason, "policy_version": snapshot.policy_version,
        "policy_status": policy_note, "queue_depth": queue_depth, "commands_sent": snapshot.commands_sent,
        "holds": snapshot.holds, "clamps": snapshot.clamps, "violations": snapshot.violations,
        "latches": snapshot.latches, "last_violation": snapshot.last_violation, "overruns": overruns,
        "control_period_ms": control_period * 1e3,
    }
    if snapshot.state is SafetyState.LATCHED:
        return ERROR, f"latched: {snapshot.latch_reason}", values
    if overruns:
        return WARN, f"{snapshot.state.value}; {overruns} control overruns", values
    return OK, snapshot.state.value, values


class ExecutorTimings:
    """Timing statistics of the executor's threads (e-stop callback, control loop, inference), thread-safe."""

    def __init__(self, window_s: float) -> None:
        self._lock = threading.Lock()
        self._stats = RateStats(window_s=window_s)
        self.overruns = 0
        self.estop_holds = 0  # holds published from the e-stop callback

    def estop_hold(self, received: float, published: float, published_ns: int, press_ns: int) -> None:
        """A hold published from the e-stop callback: ``received`` -> ``published`` (monotonic s) is the
        callback's figure; ``press_ns`` -> ``published_ns`` (wall clock ns) the end-to-end one, from the press
        message's own DDS source stamp (same host, or clocks synchronised by chrony); 0: none."""
        with self._lock:
            self._stats.add("estop_to_hold_ms", (published - received) * 1e3, published)
            if press_ns:
                self._stats.add("press_to_hold_ms", (published_ns - press_ns) * 1e-6, published)
            self.estop_holds += 1

    def cycle(self, now: float, queue_depth: int | None, period_error_s: float | None, overruns: int) -> None:
        with self._lock:
            if queue_depth is not None:
                self._stats.add("queue_depth", queue_depth, now)
            if period_error_s is not None:
                self._stats.add("period_error_ms", period_error_s * 1e3, now)
            self.overruns = overruns

    def inference(self, seconds: float, now: float) -> None:
        with self._lock:
            self._stats.add("inference_ms", seconds * 1e3, now)

    def summary(self, now: float) -> dict[str, Any]:
        with self._lock:
            return {**self._stats.summary(now), "estop_holds": self.estop_holds}
