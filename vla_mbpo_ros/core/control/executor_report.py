"""What the policy executor reports: its SafetyStatus contents (published on change, and periodically)
and its /diagnostics status. The node only converts these to messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.control.executor import ExecutorCore

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
