"""The policy executor's per-cycle decision: which command goes to the arm, and why.

``ExecutorCore`` combines the action queue (chunks from the policy), the operator's teleop target,
the safety gate and the latched e-stop monitor. The node around it only converts messages, runs
inference in a thread and publishes what ``tick()`` returns; every rule lives here:

* the executor is the only path to the arm, and it always sends something safe: a gated proposal,
  or a *hold* (the last command sent, or the measured position before any command);
* IDLE and LATCHED hold; ACTIVE sends the episode's source: the policy's queue, or the teleop
  target while the operator intervenes or in a teleop episode; a dry queue or a stale teleop
  target holds;
* an e-stop press latches, flushes the queue and returns a hold to publish *at once*;
* inference is requested when the queue reaches its watermark; a chunk that comes back after the
  episode changed (e-stop, end, intervention) is dropped (``generation``).

Pure Python + numpy; time is passed in (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_mbpo_ros.core.control.action_queue import BLEND_MODES, ActionQueue
from vla_mbpo_ros.core.control.estop import EStopMonitor, SafetyState
from vla_mbpo_ros.core.control.gate import GateResult, SafetyGate
from vla_mbpo_ros.core.control.limits import SafetyConfig
from vla_mbpo_ros.core.data.episode import RunningEpisode

SOURCES: tuple[str, ...] = ("policy", "teleop")
HOLD = "hold"


@dataclass(frozen=True)
class ExecutorConfig:
    control_rate: float = 30.0  # Hz; the gate's dt is the nominal period 1 / control_rate
    blend: str = "linear"  # ActionQueue blending of overlapping chunks (none / linear / exponential)
    exp_decay: float = 0.01  # exponential blending weight decay
    request_watermark: int = 2  # request the next chunk when this many queued actions remain
    teleop_stale_s: float = 0.25  # an operator target older than this (receipt time) holds
    joint_state_stale_s: float = 0.25  # an older measured position is not used as the hold anchor
    # A chunk whose observation was captured longer ago than this when the chunk is ready is dropped
    # (never started): the arm holds and the next chunk is inferred from a newer observation.
    max_chunk_observation_age_s: float = 0.5
    # > 0: a live e-stop source is required (hardware): no e-stop message for this long holds the arm
    # and refuses episodes, as a cut e-stop wire would. 0: presses still latch, silence is allowed (sim).
    estop_source_timeout_s: float = 0.0
    # Control steps per policy action: control_rate / the frame rate the policy was trained at (the
    # dataset fps). A chunk then spans the time it spanned in the data; actions are linearly
    # interpolated between control steps.
    steps_per_action: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.steps_per_action, bool) or not isinstance(self.steps_per_action, int) or self.steps_per_action < 1:
            raise ValueError(f"steps_per_action: expected an integer >= 1, got {self.steps_per_action!r}")
        if isinstance(self.estop_source_timeout_s, bool) or not isinstance(self.estop_source_timeout_s, (int, float)) \
                or not self.estop_source_timeout_s >= 0 or not math.isfinite(self.estop_source_timeout_s):
            raise ValueError(f"estop_source_timeout_s: expected a number >= 0, got {self.estop_source_timeout_s!r}")
        for name in ("control_rate", "teleop_stale_s", "joint_state_stale_s", "max_chunk_observation_age_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend: expected one of {list(BLEND_MODES)}, got {self.blend!r}")
        if isinstance(self.exp_decay, bool) or not isinstance(self.exp_decay, (int, float)) or not math.isfinite(self.exp_decay):
            raise ValueError(f"exp_decay: expected a finite number, got {self.exp_decay!r}")
        if isinstance(self.request_watermark, bool) or not isinstance(self.request_watermark, int) or self.request_watermark < 0:
            raise ValueError(f"request_watermark: expected an integer >= 0, got {self.request_watermark!r}")

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate


def upsample_actions(actions: np.ndarray, factor: int) -> np.ndarray:
    """(k, d) actions at the policy's rate -> (k * factor, d) control steps, linearly interpolated
    from each action towards the next; the last action is held for its slot."""
    if factor == 1:
        return actions
    k = len(actions)
    t = np.minimum(np.arange(k * factor) / factor, k - 1)
    lower = np.floor(t).astype(int)
    upper = np.minimum(lower + 1, k - 1)
    alpha = (t - lower)[:, None]
    return (1 - alpha) * actions[lower] + alpha * actions[upper]


@dataclass(frozen=True)
class Command:
    """One command for the arm. ``positions`` is None only when there is nothing safe to send yet
    (no command sent and no valid joint state): the node then publishes nothing."""

    positions: np.ndarray | None
    source: str  # "policy", "teleop" or "hold" (nothing proposed: idle, latched, dry queue, stale target)
    held: bool  # the arm is told to stay (source "hold", or the gate refused the proposal)
    clamped: bool
    intervention: bool
    chunk_id: int = 0  # policy chunk the proposal came from (policy source only)
    reasons: tuple[str, ...] = ()  # why it is a hold / what the gate changed


@dataclass(frozen=True)
class InferenceRequest:
    start_step: int  # control step at which the chunk's first action applies
    generation: int  # episode generation the chunk is for; stale results are dropped


@dataclass(frozen=True)
class TickResult:
    command: Command
    request: InferenceRequest | None  # start inference on the latest observation now


def _finite_vector(value: Any, size: int) -> np.ndarray | None:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)):
        return None
    return arr


class ExecutorCore:
    """Not thread-safe: the node serialises every call with one lock."""

    def __init__(self, config: ExecutorConfig, safety: SafetyConfig, gate: SafetyGate | None = None) -> None:
        self.config = config
        self.safety = safety
        self.joint_names = safety.limits.names
        self.gate = gate if gate is not None else SafetyGate(safety)
        self.monitor = EStopMonitor(safety, config.estop_source_timeout_s)
        self.stale_chunks = 0  # chunks dropped because their observation was too old
        self._last_estop_sample = 0
        self.step = 0
        self.episode: RunningEpisode | None = None
        self.intervention = False
        self.generation = 0
        self.last_violation = ""
        self._episodes_started = 0
        self._queue: ActionQueue | None = None
        self._spans: list[tuple[int, int, int]] = []  # (start, end, chunk_id) of queued chunks
        self._inflight: InferenceRequest | None = None
        self._joints: np.ndarray | None = None
        self._joints_time = -math.inf
        self._teleop: np.ndarray | None = None
        self._teleop_time = -math.inf

    # ---- configuration ------------------------------------------------------------------
    @property
    def policy_loaded(self) -> bool:
        return self._queue is not None

    def set_policy(self, chunk_size: int | None) -> None:
        """A policy with this chunk size is now running (None: no policy). Flushes the queue."""
        if chunk_size is None:
            self._queue = None
        else:
            steps = chunk_size * self.config.steps_per_action
            watermark = min(self.config.request_watermark, steps - 1)
            self._queue = ActionQueue(steps, self.config.blend, self.config.exp_decay, watermark)
        self._flush()

    # ---- inputs -------------------------------------------------------------------------
    def set_joint_state(self, positions: Any, now: float) -> None:
        """Measured joint positions in ``joint_names`` order; unusable readings are ignored."""
        q = _finite_vector(positions, len(self.joint_names))
        if q is not None:
            self._joints, self._joints_time = q, now

    def set_teleop_target(self, positions: Any, now: float) -> None:
        """The operator's latest target (non-finite values reach the gate, which holds)."""
        self._teleop = np.asarray(positions, dtype=np.float64)
        self._teleop_time = now

    def observation(self, now: float, age: float) -> None:
        """An observation arrived; ``age``: seconds since its (oldest member's) capture stamp."""
        self.monitor.observation(now, age)

    def heartbeat(self, now: float) -> None:
        self.monitor.heartbeat(now)

    def queue_depth(self) -> int:
        return 0 if self._queue is None else self._queue.remaining(self.step + 1)

    # ---- e-stop and episodes ------------------------------------------------------------------
    def estop(self, pressed: bool, now: float, sample: int = 0) -> Command | None:
        """E-stop input level. On a press: latch, flush, and return the hold to publish right now.
        ``sample`` (e.g. the DDS source timestamp, 0: unknown) identifies a message: the same sample
        delivered twice (two subscriptions of one topic) counts once."""
        if sample and sample == self._last_estop_sample:
            return None
        self._last_estop_sample = sample
        self.monitor.set_estop_input(pressed, now)
        if not pressed:
            return None
        self._flush()
        return self._hold(now, f"latched: {self.monitor.first_cause}")

    def reset_estop(self, now: float) -> tuple[bool, str]:
        """Clear a latch (refused while the input is held or a cause persists). Ends the episode."""
        was_latched = self.monitor.state is SafetyState.LATCHED
        ok, message = self.monitor.request_reset(now)
        if ok and was_latched:
            self.episode = None
            self.intervention = False
            self._flush()
        return ok, message

    def start_episode(self, task: str, source: str, now: float) -> tuple[bool, str, int]:
        if source not in SOURCES:
            return False, f"refused: source {source!r} is not one of {list(SOURCES)}", -1
        if source == "policy" and not self.policy_loaded:
            return False, "refused: no policy is loaded (policy_enabled is false or no checkpoint yet)", -1
        ok, message = self.monitor.start_episode(now)
        if not ok:
            return False, message, -1
        self.episode = RunningEpisode(self._episodes_started, task, source, now)
        self._episodes_started += 1
        self.intervention = False
        self._flush()
        return True, f"episode {self.episode.index} started ({source}): {task!r}", self.episode.index

    def end_episode(self) -> tuple[bool, str, int]:
        """Episode boundary: back to IDLE (a latch stays latched until reset)."""
        if self.episode is None:
            return False, "no episode is running", -1
        index = self.episode.index
        self.episode = None
        self.intervention = False
        self.monitor.end_episode()
        self._flush()
        latched = self.monitor.state is SafetyState.LATCHED
        return True, f"episode {index} ended" + (" (e-stop still latched)" if latched else ""), index

    def set_intervention(self, active: bool) -> bool:
        """Operator takes over from / hands back to the policy. True if anything changed."""
        if self.episode is None or self.episode.source != "policy" or active == self.intervention:
            return False
        self.intervention = active
        self._flush()  # the policy restarts from a fresh observation when handed back
        return True

    # ---- inference results --------------------------------------------------------------------
    def chunk_ready(self, actions: Any, chunk_id: int, request: InferenceRequest, now: float,
                    observation_age: float) -> bool:
        """Queue a chunk computed for ``request`` from an observation captured ``observation_age`` s
        ago; False when it is outdated, from too old an observation, or malformed."""
        self._finish_inference(request, now, None)
        if request.generation != self.generation or self._queue is None:
            return False
        if not observation_age <= self.config.max_chunk_observation_age_s:  # NaN too
            self.stale_chunks += 1
            self.last_violation = (f"chunk dropped: its observation is {observation_age:.3f} s old > "
                                   f"max_chunk_observation_age_s {self.config.max_chunk_observation_age_s}")
            return False
        arr = np.asarray(actions, dtype=np.float64)
        expected = (self._queue.chunk_size // self.config.steps_per_action, len(self.joint_names))
        if arr.shape != expected:
            # A wrong shape is a broken policy: report it as an inference error (latches).
            self.monitor.inference_finished(now, f"chunk shape {arr.shape}, expected {expected}")
            return False
        arr = upsample_actions(arr, self.config.steps_per_action)
        self._queue.push(arr, request.start_step)
        self._spans.append((request.start_step, request.start_step + len(arr), int(chunk_id)))
        return True

    def inference_failed(self, error: str, request: InferenceRequest, now: float) -> None:
        self._finish_inference(request, now, error)

    def _finish_inference(self, request: InferenceRequest, now: float, error: str | None) -> None:
        if self._inflight == request:
            self._inflight = None
        self.monitor.inference_finished(now, error)

    # ---- the control cycle --------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        """Decide the command for the next control step."""
        self.step += 1
        if not self.monitor.motion_allowed(now):
            if self.monitor.state is SafetyState.LATCHED:
                self._flush()
            return TickResult(self._hold(now, self.monitor.state.value), None)
        assert self.episode is not None  # ACTIVE implies a started episode
        if self.episode.source == "teleop" or self.intervention:
            return TickResult(self._teleop_command(now), None)
        return self._policy_command(now)

    def _teleop_command(self, now: float) -> Command:
        if self._teleop is None or now - self._teleop_time > self.config.teleop_stale_s:
            return self._hold(now, f"teleop target older than {self.config.teleop_stale_s} s")
        return self._gated(self._teleop, now, "teleop", 0)

    def _policy_command(self, now: float) -> TickResult:
        assert self._queue is not None
        proposed = self._queue.pop(self.step)
        if proposed is None:
            command = self._hold(now, "action queue empty")
        else:
            command = self._gated(proposed, now, "policy", self._chunk_id(self.step))
        request = None
        if self._inflight is None and self._queue.needs_chunk(self.step + 1):
            request = InferenceRequest(self.step + 1, self.generation)
            self._inflight = request
            self.monitor.inference_started(now)
        return TickResult(command, request)

    def _gated(self, proposed: np.ndarray, now: float, source: str, chunk_id: int) -> Command:
        result = self.gate.check(proposed, self._fresh_joints(now), self.config.period)
        self.monitor.record_gate(result, now)
        if result.violated:
            self.last_violation = "; ".join(result.reasons)
        if result.command is None:  # nothing sent yet and no joint state: nothing to send
            return Command(None, HOLD, True, False, self.intervention, 0, result.reasons)
        return Command(result.command, source, result.held, result.clamped, self.intervention, chunk_id, result.reasons)

    # ---- helpers ------------------------------------------------------------------------------
    def _fresh_joints(self, now: float) -> np.ndarray | None:
        if self._joints is None or now - self._joints_time > self.config.joint_state_stale_s:
            return None
        return self._joints

    def _hold(self, now: float, reason: str) -> Command:
        """Stay where the last command put the arm (or where it is, before any command)."""
        anchor = self.gate.last_command
        if anchor is None:
            anchor = self._fresh_joints(now)
        if anchor is not None:
            self.monitor.record_gate(GateResult(command=anchor, held=True, clamped=False), now)
        return Command(anchor, HOLD, True, False, self.intervention, 0, (reason,))

    def _chunk_id(self, step: int) -> int:
        self._spans = [s for s in self._spans if s[1] > step]
        covering = [s for s in self._spans if s[0] <= step]
        return covering[-1][2] if covering else 0

    def _flush(self) -> None:
        """Drop queued actions; results of inference already running are dropped when they arrive."""
        if self._queue is not None:
            self._queue.clear()
        self._spans.clear()
        self.generation += 1
