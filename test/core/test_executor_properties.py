"""Property-based tests one level above the gate: ``ExecutorCore`` under arbitrary interleavings.

Hypothesis drives the core with any sequence of policy chunks (NaN/inf, huge, wrong length), operator
targets (named joints duplicated, reordered or missing, bursts), e-stop presses and releases, resets,
episode starts and ends, interventions, inference failures, joint states and observations of any age,
and silences of the e-stop source. After every call: no exception escaped, and every command it
returned is finite, within the position limits, and within the step and velocity limits of the
command before it, or it is a hold that stays where the last command put the arm. While latched or
idle it never moves.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.control.executor import ExecutorConfig, ExecutorCore
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.robot.joints import reorder

REPO = Path(__file__).resolve().parents[2]
SAFETY = load_safety_config(REPO / "config" / "robots" / "so101.yaml")
NAMES = SAFETY.limits.names
D = len(NAMES)
LO, HI = SAFETY.effective_position_bounds()
CHUNK = 4
PERIOD = 1 / 30
EPS = 1e-9

numbers = st.one_of(st.floats(-5.0, 5.0), st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9, 0.0]))
inside = st.tuples(*[st.floats(float(lo), float(hi)) for lo, hi in zip(LO, HI)]).map(np.array)


def vectors(length: st.SearchStrategy[int] = st.sampled_from([D, D, D, D - 1, D + 1, 0])):
    return length.flatmap(lambda n: st.lists(numbers, min_size=n, max_size=n))


chunks = st.one_of(
    inside.map(lambda q: np.tile(q, (CHUNK, 1))),  # a plausible chunk
    st.tuples(st.sampled_from([CHUNK, CHUNK, CHUNK - 1, CHUNK + 3, 0]), st.sampled_from([D, D, D + 1]))
    .flatmap(lambda shape: st.lists(numbers, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])
             .map(lambda v: np.array(v, dtype=float).reshape(shape))),
)
# Operator targets as named joints: the node reorders them (duplicates, unknown or missing names refused).
named_targets = st.tuples(
    st.lists(st.sampled_from([*NAMES, "elbow", "shoulder_pan"]), min_size=0, max_size=D + 2),
    vectors(st.integers(0, D + 2)),
)
fresh_age = st.floats(0.0, 0.2)
ages = st.one_of(fresh_age, fresh_age, fresh_age, st.floats(0.2, 5.0), st.sampled_from([np.nan, -1.0]))
steps = st.one_of(
    st.tuples(st.just("tick"), st.tuples(st.floats(0.2 * PERIOD, 3 * PERIOD), st.booleans())),
    st.tuples(st.just("idle"), st.floats(0.1, 2.0)),  # time passes with no input at all (sources silent)
    st.tuples(st.just("joints"), inside),
    st.tuples(st.just("observation"), ages),
    st.tuples(st.just("chunk"), st.tuples(chunks, ages)),
    st.tuples(st.just("inference_failed"), st.just(None)),
    st.tuples(st.just("teleop"), named_targets),
    st.tuples(st.just("burst"), st.lists(inside, min_size=2, max_size=6)),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("reset"), st.just(None)),
    *[st.tuples(st.just("start"), st.sampled_from(["policy", "policy", "teleop", "bogus"]))] * 2,
    st.tuples(st.just("end"), st.just(None)),
    st.tuples(st.just("intervention"), st.booleans()),
    st.tuples(st.just("heartbeat"), st.just(None)),
)


class Driver:
    """Feeds one core and checks every command it returns against the last one that left it."""

    def __init__(self, core: ExecutorCore) -> None:
        self.core = core
        self.t = 100.0
        self.request = None
        self.last_gated: np.ndarray | None = None  # the last command that came out of the gate (moved or held)
        self.measured: np.ndarray | None = None

    def anchor(self) -> np.ndarray | None:
        """Where the arm was told to be: the last command, or where it is before the first command."""
        return self.last_gated if self.last_gated is not None else self.measured

    def check(self, command, moving_allowed: bool) -> None:
        if command is None or command.positions is None:
            assert command is None or command.held
            return
        q = np.asarray(command.positions, dtype=float)
        assert q.shape == (D,) and np.all(np.isfinite(q)), q
        if command.held:
            # A hold stays where the last command put the arm (or where it is before the first command).
            np.testing.assert_array_equal(q, self.anchor())
            if command.source != "hold":  # held by the gate itself: the gate's last command
                self.last_gated = q
            return
        assert moving_allowed, f"moved ({command.source}) while {self.core.monitor.state}"
        assert np.all(q >= LO - EPS) and np.all(q <= HI + EPS), q
        step = np.abs(q - self.anchor())
        assert np.all(step <= SAFETY.limits.max_step + EPS), step
        assert np.all(step <= SAFETY.limits.max_velocity * PERIOD + EPS), step
        event(f"moved: {command.source}")
        self.last_gated = q

    def apply(self, kind: str, value) -> None:
        core = self.core
        if kind == "tick":
            dt, fresh = value
            self.t += dt
            if fresh:  # the arm's driver, the cameras and the e-stop source are alive this cycle
                self.measured = self.anchor() if self.anchor() is not None else np.zeros(D)
                core.set_joint_state(self.measured, self.t)
                core.observation(self.t, 0.01)
                core.heartbeat(self.t)
                self.check(core.estop(core.monitor.estop_pressed, self.t), moving_allowed=False)  # republished level
            state_before = core.monitor.state
            result = core.tick(self.t)
            moving = core.monitor.state is SafetyState.ACTIVE and state_before is SafetyState.ACTIVE
            self.check(result.command, moving)
            if result.request is not None:
                self.request = result.request
        elif kind == "idle":
            self.t += value
        elif kind == "joints":
            core.set_joint_state(value, self.t)
            self.measured = value
        elif kind == "observation":
            core.observation(self.t, value)
        elif kind == "chunk" and self.request is not None:
            actions, age = value
            core.chunk_ready(actions, 1, self.request, self.t, age)
            self.request = None
        elif kind == "inference_failed" and self.request is not None:
            core.inference_failed("RuntimeError: boom", self.request, self.t)
            self.request = None
        elif kind == "teleop":
            names, positions = value
            try:
                target = reorder(names, positions, NAMES, "teleop command")
            except ValueError:
                return  # the node logs and ignores it
            assert len(target) == D
            core.set_teleop_target(target, self.t)
        elif kind == "burst":
            for target in value:
                core.set_teleop_target(target, self.t)
        elif kind == "estop":
            command = core.estop(value, self.t)
            if value:
                assert core.monitor.state is SafetyState.LATCHED
            self.check(command, moving_allowed=False)
        elif kind == "reset":
            was_latched = core.monitor.state is SafetyState.LATCHED
            ok, _ = core.reset_estop(self.t)
            assert not (ok and was_latched) or core.monitor.state is SafetyState.IDLE  # a reset never resumes motion
        elif kind == "start":
            core.start_episode("task", value, self.t)
        elif kind == "end":
            core.end_episode()
        elif kind == "intervention":
            core.set_intervention(value)
        elif kind == "heartbeat":
            core.heartbeat(self.t)


def run(steps_list, answers, **config) -> None:
    """``answers``: what the policy's inference thread returns (chunk, observation age), in turn, to each
    request that is pending at a live control cycle."""
    core = ExecutorCore(ExecutorConfig(control_rate=1 / PERIOD, blend="linear", request_watermark=1, **config),
                        dataclasses.replace(SAFETY, require_heartbeat=config.pop("heartbeat", False)))
    core.set_policy(CHUNK)
    driver = Driver(core)
    for i, step in enumerate(steps_list):
        answer = ("chunk", answers[i % len(answers)])
        for kind, value in (step, ("tick", (PERIOD, True)), answer):  # a live control cycle after every input
            latched = core.monitor.state is SafetyState.LATCHED
            driver.apply(kind, value)
            if latched and kind != "reset":
                assert core.monitor.state is SafetyState.LATCHED, f"{kind} cleared a latch"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=80), st.lists(st.tuples(chunks, ages), min_size=1, max_size=6))
def test_any_interleaving_keeps_every_command_within_limits_or_a_hold(steps_list, answers):
    run(steps_list, answers)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=80), st.lists(st.tuples(chunks, ages), min_size=1, max_size=6),
       st.floats(0.05, 1.0))
def test_the_same_with_a_required_estop_source(steps_list, answers, timeout):
    run(steps_list, answers, estop_source_timeout_s=timeout)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["joints", "observation", "estop", "tick"]), st.floats(0.0, 2.0)), max_size=60))
def test_a_press_always_latches_and_only_a_released_reset_clears_it(events):
    core = ExecutorCore(ExecutorConfig(), SAFETY)
    core.set_policy(CHUNK)
    t = 0.0
    core.set_joint_state(np.zeros(D), t)
    core.estop(True, t)
    for kind, value in events:
        t += value / 10
        if kind == "joints":
            core.set_joint_state(np.zeros(D), t)
        elif kind == "observation":
            core.observation(t, value)
        elif kind == "estop":
            core.estop(value > 1.0, t)
        else:
            assert core.tick(t).command.held
        assert core.monitor.state is SafetyState.LATCHED
    assert not core.start_episode("task", "teleop", t)[0]
    core.estop(False, t)
    core.set_joint_state(np.zeros(D), t)
    core.observation(t, 0.0)
    assert core.reset_estop(t)[0] and core.monitor.state is SafetyState.IDLE
