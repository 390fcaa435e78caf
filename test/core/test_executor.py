"""Tests for vla_mbpo_ros.core.control.executor (the executor's per-cycle decisions) and the replay policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.control.executor import ExecutorConfig, ExecutorCore
from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.control.hot_swap import resolve_checkpoint_uri, validate_candidate
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import load_policy
from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
from vla_mbpo_ros.core.policy.replay import ReplayPolicy

REPO = Path(__file__).resolve().parents[2]
SAFETY = load_safety_config(REPO / "config" / "robots" / "so101.yaml")
D = SAFETY.limits.dim
PERIOD = 1 / 30
HOME = np.zeros(D)


def make_core(chunk_size: int | None = 4, **overrides) -> ExecutorCore:
    config = ExecutorConfig(**{"control_rate": 30.0, "blend": "none", "request_watermark": 1, **overrides})
    core = ExecutorCore(config, SAFETY)
    core.set_policy(chunk_size)
    return core


class Clock:
    """Feeds the core fresh joint states and observations at every control step."""

    def __init__(self, core: ExecutorCore, t: float = 100.0) -> None:
        self.core, self.t = core, t
        self.feed()

    def feed(self) -> None:
        self.core.set_joint_state(HOME, self.t)
        self.core.observation(self.t, 0.0)
        self.core.heartbeat(self.t)

    def tick(self):
        self.t += PERIOD
        self.feed()
        return self.core.tick(self.t)


def ramp(start: float, step: float, k: int = 4) -> np.ndarray:
    """A chunk moving joint 0 by ``step`` per action (others at 0)."""
    chunk = np.zeros((k, D))
    chunk[:, 0] = start + step * np.arange(1, k + 1)
    return chunk


def start_policy_episode(core: ExecutorCore, clock: Clock):
    ok, message, index = core.start_episode("pick the cube", "policy", clock.t)
    assert ok, message
    return index


# ------------------------------------------------------------------ idle, episodes, queue
def test_idle_holds_the_measured_position_and_never_requests_inference():
    core = make_core()
    clock = Clock(core)
    for _ in range(5):
        result = clock.tick()
        assert result.request is None
        assert result.command.source == "hold" and result.command.held
        np.testing.assert_array_equal(result.command.positions, HOME)
    assert core.monitor.counters.holds == 5


def test_nothing_is_sent_before_any_joint_state():
    core = make_core()
    result = core.tick(1.0)
    assert result.command.positions is None and result.command.source == "hold"


def test_policy_episode_requests_plays_and_refills_at_the_watermark():
    core = make_core(chunk_size=4)
    clock = Clock(core)
    start_policy_episode(core, clock)
    first = clock.tick()
    assert first.command.source == "hold" and first.command.reasons == ("action queue empty",)
    request = first.request
    assert request is not None and request.start_step == core.step + 1
    assert clock.tick().request is None, "only one inference in flight"
    # The chunk arrives one step late: its first action (for the step already passed) is dropped.
    assert core.chunk_ready(ramp(0.0, 0.01), 7, request, clock.t, 0.0)
    sent = []
    for _ in range(3):
        result = clock.tick()
        sent.append(result.command)
        if result.request is not None:
            next_request = result.request
    assert [c.source for c in sent] == ["policy"] * 3
    assert [c.chunk_id for c in sent] == [7, 7, 7]
    np.testing.assert_allclose([c.positions[0] for c in sent], [0.02, 0.03, 0.04])
    # Watermark 1: requested when one action remained.
    assert next_request.start_step == core.step
    dry = clock.tick()
    assert dry.command.source == "hold" and dry.command.positions[0] == pytest.approx(0.04), "dry queue holds the last command"


def test_chunk_for_an_old_generation_is_dropped():
    core = make_core()
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    core.end_episode()
    start_policy_episode(core, clock)
    assert not core.chunk_ready(ramp(0.0, 0.01), 1, request, clock.t, 0.0)
    assert clock.tick().command.source == "hold"


def test_gate_clamps_a_step_beyond_the_limit_and_reports_it():
    core = make_core()
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    core.chunk_ready(ramp(0.0, 0.3), 1, request, clock.t, 0.0)
    command = clock.tick().command
    assert command.source == "policy" and command.clamped and not command.held
    assert command.positions[0] == pytest.approx(SAFETY.limits.max_step[0])
    assert core.last_violation.startswith("step: shoulder_pan")
    assert core.monitor.state is SafetyState.ACTIVE, "rate limiting is not a latching violation"


def test_nan_chunk_holds_and_repeated_nans_latch():
    core = make_core(chunk_size=8)
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    chunk = np.full((8, D), np.nan)
    core.chunk_ready(chunk, 3, request, clock.t, 0.0)
    commands = [clock.tick().command for _ in range(SAFETY.latch_violation_count)]
    assert all(c.held and c.source == "policy" for c in commands)
    assert all(np.all(np.isfinite(c.positions)) for c in commands)
    assert core.last_violation.startswith("nonfinite")
    assert core.monitor.state is SafetyState.LATCHED
    assert core.monitor.first_cause.startswith("violations: 5")
    after = clock.tick()
    assert after.command.source == "hold" and after.request is None


def test_wrong_chunk_shape_latches_as_an_inference_error():
    core = make_core(chunk_size=4)
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    assert not core.chunk_ready(np.zeros((4, D + 1)), 1, request, clock.t, 0.0)
    assert core.monitor.state is SafetyState.LATCHED and "inference_error: chunk shape" in core.monitor.first_cause


def test_inference_exception_and_timeout_latch():
    core = make_core()
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    core.inference_failed("ValueError: observation lacks views ['left']", request, clock.t)
    assert core.monitor.state is SafetyState.LATCHED and "observation lacks views" in core.monitor.first_cause

    slow = make_core()
    clock = Clock(slow)
    start_policy_episode(slow, clock)
    clock.tick()
    for _ in range(int(SAFETY.inference_timeout_s / PERIOD) + 2):  # inference never returns
        result = clock.tick()
    assert slow.monitor.state is SafetyState.LATCHED and slow.monitor.first_cause.startswith("inference_timeout")
    assert result.command.source == "hold"


# ------------------------------------------------------------------ e-stop
def test_estop_returns_a_hold_at_once_flushes_and_reset_rules():
    core = make_core(chunk_size=8)
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    core.chunk_ready(ramp(0.0, 0.02, 8), 1, request, clock.t, 0.0)
    moving = [clock.tick().command.positions[0] for _ in range(3)]
    assert moving == sorted(moving) and moving[-1] > 0
    hold = core.estop(True, clock.t)
    assert hold.source == "hold" and hold.held and hold.positions[0] == pytest.approx(moving[-1])
    assert "estop_input" in hold.reasons[0]
    assert core.queue_depth() == 0
    assert all(clock.tick().command.positions[0] == pytest.approx(moving[-1]) for _ in range(3))

    ok, message = core.reset_estop(clock.t)
    assert not ok and "still pressed" in message
    ok, message, _ = core.start_episode("task", "policy", clock.t)
    assert not ok and "latched" in message
    core.estop(False, clock.t)
    assert core.monitor.state is SafetyState.LATCHED, "releasing the input never resumes"
    ok, _ = core.reset_estop(clock.t)
    assert ok and core.monitor.state is SafetyState.IDLE and core.episode is None
    for _ in range(5):
        result = clock.tick()
        assert result.command.source == "hold" and result.request is None
    ok, _, _ = core.start_episode("task", "policy", clock.t)
    assert ok and clock.tick().request is not None


def test_stale_observation_and_heartbeat_loss_latch():
    core = make_core()
    clock = Clock(core)
    start_policy_episode(core, clock)
    clock.tick()
    clock.t += SAFETY.stale_observation_s + 0.01
    core.set_joint_state(HOME, clock.t)
    result = core.tick(clock.t)
    assert result.command.source == "hold"
    assert core.monitor.first_cause.startswith("stale_observation")

    safety = dataclasses.replace(SAFETY, require_heartbeat=True)
    beat = ExecutorCore(ExecutorConfig(), safety)
    beat.set_policy(4)
    t = 10.0
    beat.set_joint_state(HOME, t)
    beat.observation(t, 0.0)
    ok, message, _ = beat.start_episode("task", "teleop", t)
    assert not ok and "heartbeat" in message
    beat.heartbeat(t)
    assert beat.start_episode("task", "teleop", t)[0]
    t += safety.heartbeat_timeout_s + 0.01
    beat.observation(t, 0.0)
    beat.tick(t)
    assert beat.monitor.state is SafetyState.LATCHED and beat.monitor.first_cause.startswith("heartbeat")


def test_old_data_never_feeds_the_watchdog_however_often_it_arrives():
    """Freshness is the data's capture age, not its arrival: a backlog of old sets or a frozen camera
    behind a live sync node keeps arriving, and still latches."""
    core = make_core()
    clock = Clock(core)
    start_policy_episode(core, clock)
    captured = clock.t
    for _ in range(30):  # 1 s of sets, all of the same (frozen) capture time
        clock.t += PERIOD
        core.set_joint_state(HOME, clock.t)
        core.observation(clock.t, clock.t - captured)
        result = core.tick(clock.t)
        if core.monitor.state is SafetyState.LATCHED:
            break
    assert core.monitor.first_cause.startswith("stale_observation"), core.monitor.first_cause
    assert clock.t - captured <= SAFETY.stale_observation_s + 2 * PERIOD and result.command.held
    # An older set arriving after a fresh one never moves the newest capture time back.
    core2 = make_core()
    core2.set_joint_state(HOME, 10.0)
    core2.observation(10.0, 0.0)
    core2.observation(10.0, 5.0)
    assert core2.start_episode("task", "policy", 10.1)[0]


def test_a_chunk_from_an_observation_older_than_the_bound_is_never_started():
    core = make_core(chunk_size=4, max_chunk_observation_age_s=0.3)
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    assert not core.chunk_ready(ramp(0.0, 0.01), 1, request, clock.t, 0.31)
    assert core.stale_chunks == 1 and "max_chunk_observation_age_s" in core.last_violation
    assert not core.chunk_ready(ramp(0.0, 0.01), 1, request, clock.t, float("nan"))
    result = clock.tick()
    assert result.command.source == "hold" and result.request is not None  # asks again, from newer data
    assert core.chunk_ready(ramp(0.0, 0.01), 2, result.request, clock.t, 0.1)
    assert clock.tick().command.source == "policy"


def test_one_estop_sample_heard_on_two_subscriptions_counts_once():
    core = make_core()
    clock = Clock(core)
    assert core.estop(True, clock.t, sample=17) is not None
    assert core.estop(True, clock.t, sample=17) is None  # the same message again: no second hold
    assert core.estop(True, clock.t, sample=18) is not None  # the source's next republish
    assert core.estop(False, clock.t, sample=19) is None and not core.monitor.estop_pressed


def test_a_required_estop_source_that_goes_silent_holds_and_refuses_episodes():
    core = make_core(estop_source_timeout_s=0.5)
    clock = Clock(core)
    ok, message, _ = core.start_episode("task", "policy", clock.t)
    assert not ok and "estop_source: no e-stop source heard" in message
    core.estop(False, clock.t)  # the source's periodic "released"
    start_policy_episode(core, clock)
    for _ in range(10):  # republished at 10 Hz: moving is allowed
        core.estop(False, clock.t)
        clock.tick()
    assert core.monitor.state is SafetyState.ACTIVE
    for _ in range(20):  # the source dies (wire cut, node killed): silence for > 0.5 s
        result = clock.tick()
    assert core.monitor.state is SafetyState.LATCHED and core.monitor.first_cause.startswith("estop_source: silent")
    assert result.command.held
    assert not core.reset_estop(clock.t)[0]  # no reset while the source is gone
    core.estop(False, clock.t)
    assert core.reset_estop(clock.t)[0]


# ------------------------------------------------------------------ teleop and intervention
def test_teleop_episode_gates_operator_targets_and_holds_when_they_go_stale():
    core = make_core(chunk_size=None)
    clock = Clock(core)
    ok, message, _ = core.start_episode("task", "policy", clock.t)
    assert not ok and "no policy" in message
    assert core.start_episode("task", "teleop", clock.t)[0]
    target = HOME.copy()
    target[1] = 0.5
    core.set_teleop_target(target, clock.t)
    result = clock.tick()
    assert result.request is None and result.command.source == "teleop" and result.command.clamped
    assert result.command.positions[1] == pytest.approx(SAFETY.limits.max_step[1])
    for _ in range(int(0.25 / PERIOD) + 1):
        result = clock.tick()
    assert result.command.source == "hold" and "teleop target older" in result.command.reasons[0]
    assert core.monitor.state is SafetyState.ACTIVE, "a quiet operator holds, it does not latch"


def test_intervention_switches_to_teleop_and_back_to_a_fresh_policy_chunk():
    core = make_core(chunk_size=8)
    clock = Clock(core)
    start_policy_episode(core, clock)
    request = clock.tick().request
    core.chunk_ready(ramp(0.0, 0.01, 8), 1, request, clock.t, 0.0)
    assert clock.tick().command.source == "policy"
    assert core.set_intervention(True)
    core.set_teleop_target(HOME, clock.t)
    result = clock.tick()
    assert result.command.source == "teleop" and result.command.intervention and result.request is None
    assert core.queue_depth() == 0
    assert core.set_intervention(False) and not core.set_intervention(False)
    result = clock.tick()
    assert result.command.source == "hold" and not result.command.intervention
    assert result.request is not None, "handing back asks the policy for a fresh chunk"


@pytest.mark.parametrize("blend", ["linear", "exponential"])
def test_overlapping_chunks_are_blended(blend):
    core = make_core(chunk_size=4, blend=blend, request_watermark=3)
    clock = Clock(core)
    start_policy_episode(core, clock)
    first = clock.tick().request
    core.chunk_ready(np.full((4, D), 0.02), 1, first, clock.t, 0.0)
    second = clock.tick()
    core.chunk_ready(np.zeros((4, D)), 2, second.request, clock.t, 0.0)
    blended = clock.tick().command.positions[0]
    assert 0.0 < blended < 0.02


# ------------------------------------------------------------------ config, hot-swap helpers, replay
@pytest.mark.parametrize(
    "field,value", [("control_rate", 0.0), ("blend", "cubic"), ("request_watermark", -1), ("teleop_stale_s", float("nan")),
                    ("estop_source_timeout_s", -1.0), ("max_chunk_observation_age_s", 0.0)]
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ExecutorConfig(**{field: value})


def test_checkpoint_uri_must_resolve_under_a_trusted_root(tmp_path: Path):
    trusted = tmp_path / "trusted"
    (trusted / "v1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (trusted / "link").symlink_to(tmp_path / "elsewhere")
    assert resolve_checkpoint_uri(str(trusted / "v1"), [trusted]) == (trusted / "v1").resolve()
    assert resolve_checkpoint_uri(f"file://{trusted / 'v1'}", [trusted]) == (trusted / "v1").resolve()
    for uri, match in [
        (str(tmp_path / "elsewhere"), "not under a trusted"),
        (f"{trusted}/../elsewhere", "not under a trusted"),
        (str(trusted / "link"), "not under a trusted"),
        ("relative/v1", "absolute"),
        ("https://example.com/v1", "scheme"),
        (str(trusted / "missing"), "does not exist"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve_checkpoint_uri(uri, [trusted])


def _observation(views=("head", "wrist")) -> Observation:
    return Observation({v: np.zeros((8, 8, 3), np.uint8) for v in views}, np.zeros(D), "task")


def test_replay_policy_cycles_roundtrips_and_checks_views(tmp_path: Path):
    chunks = np.stack([ramp(0.0, 0.01), ramp(0.1, -0.01), ramp(0.0, 0.0)]).astype(np.float32)
    policy = ReplayPolicy(chunks, view_names=("head",), version="r1")
    policy.save(tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, ReplayPolicy) and loaded.version == "r1"
    assert (loaded.chunk_size, loaded.action_dim, loaded.view_names) == (4, D, ("head",))
    obs = _observation()
    played = [loaded.predict_chunk(obs) for _ in range(4)]
    np.testing.assert_array_equal(played[0], chunks[0])
    np.testing.assert_array_equal(played[3], chunks[0])
    np.testing.assert_array_equal(played[2], chunks[2])
    loaded.reset()
    np.testing.assert_array_equal(loaded.predict_chunk(obs), chunks[0])
    with pytest.raises(ValueError, match=r"lacks views \['head'\]"):
        loaded.predict_chunk(_observation(("wrist",)))
    assert checkpoint_sha256(tmp_path / "ckpt") == checkpoint_sha256(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="non-empty"):
        ReplayPolicy(np.zeros((4, D)))


def test_validate_candidate_reports_exceptions_nonfinite_and_limit_problems():
    gate = SafetyGate(SAFETY)
    good = ReplayPolicy(ramp(0.0, 0.01)[None], ("head",))
    assert validate_candidate(good, [_observation()] * 2, gate) == []
    assert validate_candidate(good, [], gate) == ["no recent observation to validate the candidate on"]
    blind = ReplayPolicy(ramp(0.0, 0.01)[None], ("left_wrist",))
    assert "predict_chunk raised ValueError" in validate_candidate(blind, [_observation()], gate)[0]
    nan = ramp(0.0, 0.01)
    nan[2, 3] = np.nan
    assert any("NaN" in p for p in validate_candidate(ReplayPolicy(nan[None]), [_observation()], gate))
    far = ramp(0.0, 1.0)
    assert any("shoulder_pan outside" in p for p in validate_candidate(ReplayPolicy(far[None]), [_observation()], gate))
    narrow = ReplayPolicy(np.zeros((1, 4, D - 1)))
    assert "action_dim" in validate_candidate(narrow, [_observation()], gate)[0]


def test_actions_at_the_dataset_rate_are_interpolated_over_control_steps():
    from vla_mbpo_ros.core.control.executor import upsample_actions

    actions = np.array([[0.0, 10.0], [3.0, 7.0], [6.0, 4.0]])
    up = upsample_actions(actions, 3)
    assert up.shape == (9, 2)
    np.testing.assert_allclose(up[:, 0], [0, 1, 2, 3, 4, 5, 6, 6, 6])
    np.testing.assert_allclose(up[:, 1], [10, 9, 8, 7, 6, 5, 4, 4, 4])
    assert upsample_actions(actions, 1) is actions


# ------------------------------------------------------------------ the e-stop source
def test_estop_source_level_from_requests_a_held_button_and_a_silent_joystick():
    from vla_mbpo_ros.core.control.estop_source import EStopSource, EStopSourceConfig

    source = EStopSource(EStopSourceConfig(), now=0.0)
    assert source.pressed(100.0) == (False, "released")  # no joystick configured: silence is no input
    source.press()
    assert source.pressed(0.1)[0]
    source.release()
    assert not source.pressed(0.2)[0]

    joy = EStopSource(EStopSourceConfig(joy_button=2, joy_timeout_s=0.5), now=0.0)
    joy.joy([0, 0, 0], 0.1)
    assert not joy.pressed(0.2)[0]
    joy.joy([0, 0, 1], 0.3)
    assert joy.pressed(0.3) == (True, "button 2 held")
    joy.joy([0, 0, 0], 0.4)
    assert not joy.pressed(0.5)[0]
    assert joy.pressed(1.0)[0] and "silent" in joy.pressed(1.0)[1]  # the joystick stopped reporting
    joy.joy([1], 1.1)  # a joystick without the configured button
    assert joy.pressed(1.1)[0]
    with pytest.raises(ValueError, match="joy_button"):
        EStopSourceConfig(joy_button=-2)
    with pytest.raises(ValueError, match="rate"):
        EStopSourceConfig(rate=0)
