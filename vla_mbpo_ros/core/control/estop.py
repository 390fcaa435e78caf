"""Latched e-stop supervision: IDLE / ACTIVE / LATCHED, with the watchdogs that latch it.

``EStopMonitor`` is a small latched state machine. Time is passed in by the caller (monotonic
seconds); it never reads a clock, so it is deterministic to test. A latch is only cleared by an
explicit reset, which is refused while the e-stop input is held or the cause is still present,
and a reset never resumes motion: it returns to IDLE and an episode has to be started explicitly.
Pure Python; no ROS.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from vla_mbpo_ros.core.control.gate import GateResult
from vla_mbpo_ros.core.control.limits import SafetyConfig


class SafetyState(enum.Enum):
    IDLE = "idle"  # no episode: hold
    ACTIVE = "active"  # episode running: commands allowed
    LATCHED = "latched"  # e-stop: hold until an explicit, accepted reset


@dataclass
class SafetyCounters:
    commands: int = 0
    holds: int = 0
    clamps: int = 0
    violations: int = 0
    latches: int = 0


class EStopMonitor:
    """Latched e-stop supervision. The caller passes ``now`` (monotonic seconds) to every call.

    Latch causes: e-stop input pressed (any state); while ACTIVE also heartbeat loss (if
    required), a silent e-stop source (if ``estop_source_timeout_s`` > 0: a vanished source stops
    the arm, as a broken e-stop wire does), stale observation (judged by the data's capture time),
    inference error/timeout, and too many gate violations within a window. Watchdogs are re-evaluated in ``motion_allowed(now)``, so a stale observation
    latches even when no new message arrives. While IDLE the same watchdogs block
    ``start_episode`` instead of latching, since nothing moves.
    """

    def __init__(self, config: SafetyConfig, estop_source_timeout_s: float = 0.0) -> None:
        self.config = config
        self.estop_source_timeout_s = estop_source_timeout_s  # 0: no live e-stop source required
        self.state = SafetyState.IDLE
        self.counters = SafetyCounters()
        self.latch_causes: list[str] = []  # causes of the current latch, first cause first
        self.last_latch_causes: list[str] = []  # kept after a reset, for status reporting
        self._estop_pressed = False
        self._last_heartbeat: float | None = None
        self._last_observation: float | None = None  # capture time of the newest observation (monotonic)
        self._last_estop_message: float | None = None
        self._inference_started: float | None = None
        self._violation_times: deque[float] = deque()

    # ---- inputs ---------------------------------------------------------------------------
    @property
    def first_cause(self) -> str | None:
        return self.latch_causes[0] if self.latch_causes else None

    @property
    def estop_pressed(self) -> bool:
        return self._estop_pressed

    def set_estop_input(self, pressed: bool, now: float) -> None:
        """E-stop input level (each message, also a repeated one, shows the source is alive). Pressing
        latches at once; releasing never resumes anything."""
        self._last_estop_message = now
        self._estop_pressed = bool(pressed)
        if self._estop_pressed:
            self._latch("estop_input: e-stop pressed")

    def heartbeat(self, now: float) -> None:
        """Deadman / operator heartbeat."""
        self._last_heartbeat = now

    def observation(self, now: float, age: float) -> None:
        """An observation arrived at ``now``; its data was captured ``age`` seconds earlier. Data older
        than the watchdog's limit never refreshes it (a backlog, a frozen camera behind a live sync), and
        an older set arriving late never moves the newest capture time back."""
        captured = now - max(0.0, age)
        if self._last_observation is None or captured > self._last_observation:
            self._last_observation = captured

    def inference_started(self, now: float) -> None:
        self._inference_started = now

    def inference_finished(self, now: float, error: str | None = None) -> None:
        """Report the end of an inference call; an error or an over-long call latches."""
        started, self._inference_started = self._inference_started, None
        if error is not None:
            self._latch_if_active(f"inference_error: {error}")
        elif started is not None and now - started > self.config.inference_timeout_s:
            self._latch_if_active(f"inference_timeout: took {now - started:.3f} s > {self.config.inference_timeout_s} s")

    def record_gate(self, result: GateResult, now: float) -> None:
        """Count one gate result; latch after too many violations within the window."""
        c = self.counters
        if result.command is not None:
            c.commands += 1
        c.holds += int(result.held)
        c.clamps += int(result.clamped)
        if result.violated:
            c.violations += 1
        if not any(k in self.config.latch_violation_kinds for k in result.kinds):
            return
        self._violation_times.append(now)
        window = self.config.latch_violation_window_s
        while self._violation_times and self._violation_times[0] < now - window:
            self._violation_times.popleft()
        if len(self._violation_times) >= self.config.latch_violation_count:
            self._latch_if_active(
                f"violations: {len(self._violation_times)} in {window} s (last: {'; '.join(result.reasons)})"
            )

    # ---- watchdogs --------------------------------------------------------------------------
    def _heartbeat_problem(self, now: float) -> str | None:
        if not self.config.require_heartbeat:
            return None
        if self._last_heartbeat is None:
            return "heartbeat: no heartbeat received"
        age = now - self._last_heartbeat
        if age > self.config.heartbeat_timeout_s:
            return f"heartbeat: last one {age:.3f} s ago > {self.config.heartbeat_timeout_s} s"
        return None

    def _estop_source_problem(self, now: float) -> str | None:
        if self.estop_source_timeout_s <= 0:
            return None
        if self._last_estop_message is None:
            return "estop_source: no e-stop source heard (a live source is required)"
        age = now - self._last_estop_message
        if age > self.estop_source_timeout_s:
            return f"estop_source: silent for {age:.3f} s > {self.estop_source_timeout_s} s"
        return None

    def _observation_problem(self, now: float) -> str | None:
        if self._last_observation is None:
            return "stale_observation: no observation received"
        age = now - self._last_observation
        if age > self.config.stale_observation_s:
            return f"stale_observation: {age:.3f} s old > {self.config.stale_observation_s} s"
        return None

    def _inference_problem(self, now: float) -> str | None:
        if self._inference_started is None:
            return None
        elapsed = now - self._inference_started
        if elapsed > self.config.inference_timeout_s:
            return f"inference_timeout: running for {elapsed:.3f} s > {self.config.inference_timeout_s} s"
        return None

    def _problems(self, now: float) -> list[str]:
        checks = (self._heartbeat_problem(now), self._estop_source_problem(now), self._observation_problem(now),
                  self._inference_problem(now))
        return [p for p in checks if p is not None]

    def motion_allowed(self, now: float) -> bool:
        """Re-evaluate the watchdogs; True only while ACTIVE and nothing latched."""
        if self.state is SafetyState.ACTIVE:
            for problem in self._problems(now):
                self._latch(problem)
        return self.state is SafetyState.ACTIVE

    # ---- transitions ------------------------------------------------------------------------
    def _latch(self, cause: str) -> None:
        if self.state is not SafetyState.LATCHED:
            self.state = SafetyState.LATCHED
            self.counters.latches += 1
            self.latch_causes = []
        self.latch_causes.append(cause)
        self.last_latch_causes = list(self.latch_causes)

    def _latch_if_active(self, cause: str) -> None:
        # Watchdog-type causes only matter while moving; a second cause adds to an existing latch.
        if self.state is not SafetyState.IDLE:
            self._latch(cause)

    def start_episode(self, now: float) -> tuple[bool, str]:
        """IDLE -> ACTIVE, refused while latched or while any watchdog is unhappy."""
        if self.state is SafetyState.LATCHED:
            return False, f"refused: e-stop latched ({self.first_cause}); reset first"
        if self.state is SafetyState.ACTIVE:
            return False, "refused: an episode is already active"
        problems = self._problems(now)
        if problems:
            return False, "refused: " + "; ".join(problems)
        self._violation_times.clear()
        self.state = SafetyState.ACTIVE
        return True, "episode started"

    def end_episode(self) -> None:
        """ACTIVE -> IDLE. Does not clear a latch: only ``request_reset`` does."""
        if self.state is SafetyState.ACTIVE:
            self.state = SafetyState.IDLE

    def request_reset(self, now: float) -> tuple[bool, str]:
        """LATCHED -> IDLE when the e-stop input is released and no cause is present any more."""
        if self.state is not SafetyState.LATCHED:
            return True, f"not latched (state {self.state.value})"
        if self._estop_pressed:
            return False, "refused: e-stop input is still pressed"
        problems = self._problems(now)
        if problems:
            return False, "refused: " + "; ".join(problems)
        self.state = SafetyState.IDLE
        self.latch_causes = []
        self._violation_times.clear()
        return True, "reset: state idle; start an episode to move"
