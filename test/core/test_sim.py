"""Simulated SO-101 arm (real MuJoCo, headless EGL rendering) and its scripted expert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.sim import (
    ExpertConfig,
    Phase,
    RealtimePacer,
    ScriptedExpert,
    SimConfig,
    So101Sim,
)

REPO = Path(__file__).resolve().parents[2]
MAX_EPISODE_STEPS = 300


@pytest.fixture(scope="module")
def sim() -> So101Sim:
    sim = So101Sim(SimConfig(image_size=(64, 80)))
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def expert(sim: So101Sim) -> ScriptedExpert:
    return ScriptedExpert(sim)


def _run_steps(sim: So101Sim, target: np.ndarray, n: int) -> None:
    for _ in range(n):
        sim.set_joint_targets(target)
        sim.step()


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"camera_fsp": 10}, "camera_fsp"),
        ({"image_size": [96]}, "image_size"),
        ({"camera_fps": 0}, "camera_fps"),
        ({"physics_substeps": 0}, "physics_substeps"),
        ({"views": ["head", "left"]}, "views"),
        ({"cube_x_range": [0.3, 0.2]}, "cube_x_range"),
        ({"home_joint_positions": [0.0] * 5}, "home_joint_positions"),
        ({"jaw_pads": "yes"}, "jaw_pads"),
    ],
)
def test_config_errors_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimConfig.from_dict(values)


def test_config_yaml_round_trip() -> None:
    config = SimConfig.from_yaml(REPO / "config" / "sim_robot.yaml")
    assert SimConfig.from_dict(config.to_dict()) == config
    assert config.physics_timestep == pytest.approx(1.0 / (config.control_fps * config.physics_substeps))


def test_joint_names_and_limits_come_from_the_model(sim: So101Sim) -> None:
    assert sim.joint_names == SO101_JOINT_NAMES
    lower, upper = sim.joint_limits()
    assert lower.shape == upper.shape == (6,)
    assert np.all(lower < 0) and np.all(upper > 0)
    joint_range = np.array([sim.model.joint(n).range for n in SO101_JOINT_NAMES])
    assert np.all(lower >= joint_range[:, 0]) and np.all(upper <= joint_range[:, 1])


# ------------------------------------------------------------------------------------ reset
def test_reset_is_seeded(sim: So101Sim) -> None:
    sim.reset(seed=3)
    pose_a = sim.cube_pose()
    sim.reset(seed=3)
    pose_b = sim.cube_pose()
    sim.reset(seed=4)
    pose_c = sim.cube_pose()
    np.testing.assert_array_equal(pose_a[0], pose_b[0])
    np.testing.assert_array_equal(pose_a[1], pose_b[1])
    assert np.linalg.norm(pose_a[0] - pose_c[0]) > 1e-4
    cfg = sim.config
    for position, _ in (pose_a, pose_c):
        assert cfg.cube_x_range[0] <= position[0] <= cfg.cube_x_range[1]
        assert cfg.cube_y_range[0] <= position[1] <= cfg.cube_y_range[1]
    assert sim.time == 0.0
    np.testing.assert_allclose(sim.joint_positions(), cfg.home_joint_positions)


# ------------------------------------------------------------------------------ joint control
def test_targets_move_joints_toward_target(sim: So101Sim) -> None:
    sim.reset(seed=0)
    start = sim.joint_positions()
    target = np.array([0.4, -0.3, 0.5, 0.6, -0.5, 0.8])
    _run_steps(sim, target, 45)
    assert sim.time == pytest.approx(45 * sim.config.control_period)
    error = np.abs(sim.joint_positions() - target)
    assert np.all(error < 0.25 * np.abs(start - target))
    assert np.all(error < 0.08)
    assert np.all(np.abs(sim.joint_velocities()) < 0.5)


def test_targets_outside_limits_are_clipped(sim: So101Sim) -> None:
    sim.reset(seed=0)
    lower, upper = sim.joint_limits()
    sim.set_joint_targets(upper + 1.0)
    np.testing.assert_array_equal(sim.joint_targets(), upper)
    sim.set_joint_targets(lower - 1.0)
    np.testing.assert_array_equal(sim.joint_targets(), lower)
    with pytest.raises(ValueError, match="shape"):
        sim.set_joint_targets(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        sim.set_joint_targets(np.full(6, np.nan))


# ---------------------------------------------------------------------------------- cameras
def test_render_returns_both_views_at_the_configured_size(sim: So101Sim) -> None:
    sim.reset(seed=0)
    frames = sim.render()
    assert set(frames) == {"head", "wrist"}
    for image in frames.values():
        assert image.shape == (64, 80, 3) and image.dtype == np.uint8
        assert image.reshape(-1, 3).std(axis=0).max() > 10.0  # not a constant image


def test_render_only_on_camera_ticks(sim: So101Sim) -> None:
    sim.reset(seed=0)
    first = sim.render()
    assert not sim.camera_frame_due()
    target = np.array([0.6, 0.3, 0.3, 0.3, 0.0, 0.5])
    sim.set_joint_targets(target)
    sim.step()  # one control period is shorter than one camera period
    assert not sim.camera_frame_due()
    np.testing.assert_array_equal(sim.render()["head"], first["head"])
    assert sim.frame_time == 0.0
    assert not np.array_equal(sim.render(fresh=True)["head"], first["head"])
    assert sim.frame_time == pytest.approx(sim.config.control_period)
    steps_per_frame = int(np.ceil(sim.config.control_fps / sim.config.camera_fps))
    _run_steps(sim, target, steps_per_frame)
    assert sim.camera_frame_due()
    assert not np.array_equal(sim.render()["head"], first["head"])
    assert sim.frame_time == pytest.approx(sim.time)


def test_wrist_view_changes_when_the_arm_moves(sim: So101Sim) -> None:
    sim.reset(seed=0)
    before = sim.render()["wrist"].astype(int)
    _run_steps(sim, np.array([-0.5, 0.4, 0.4, 0.9, 1.0, 0.6]), 30)
    after = sim.render()["wrist"].astype(int)
    assert np.abs(after - before).mean() > 5.0


def test_camera_info_matches_image_and_projection(sim: So101Sim) -> None:
    sim.reset(seed=5)
    for view in ("head", "wrist"):
        info = sim.camera_info(view)
        assert (info.height, info.width) == (64, 80)
        assert (info.cx, info.cy) == (39.5, 31.5)
        fovy = np.deg2rad(sim.model.cam_fovy[sim.model.camera(f"vla_{view}").id])
        assert 2 * np.arctan(0.5 * info.height / info.fy) == pytest.approx(fovy)
    # The cube centre projected with the intrinsics lands on cube-coloured (purple) pixels.
    info = sim.camera_info("head")
    position, rotation = sim.camera_pose("head")
    cube, _ = sim.cube_pose()
    right, up, back = rotation.T @ (cube - position)
    u = info.cx + info.fx * right / -back
    v = info.cy - info.fy * up / -back
    pixel = sim.render()["head"][int(round(v)), int(round(u))].astype(int)
    assert pixel[0] > pixel[1] + 20 and pixel[2] > pixel[1] + 20
    with pytest.raises(ValueError, match="view"):
        sim.camera_info("left")


# ------------------------------------------------------------------------------------ state
def test_set_state_restores_exactly(sim: So101Sim) -> None:
    sim.reset(seed=7)
    _run_steps(sim, np.array([0.2, 0.3, 0.1, 0.5, 0.0, 0.4]), 5)
    saved = sim.get_state()
    moves = [np.array([0.3 * np.sin(i), 0.4, 0.2, 0.6, 0.1 * i, 0.2]) for i in range(12)]
    for target in moves:
        _run_steps(sim, target, 1)
    positions, frames, time = sim.joint_positions(), sim.render(), sim.time

    sim.reset(seed=8)  # somewhere else entirely
    sim.set_state(saved)
    for target in moves:
        _run_steps(sim, target, 1)
    np.testing.assert_array_equal(sim.joint_positions(), positions)
    assert sim.time == time
    for view, image in sim.render().items():
        np.testing.assert_array_equal(image, frames[view])
    with pytest.raises(ValueError, match="shape"):
        sim.set_state(saved[:-1])


# ----------------------------------------------------------------------------------- expert
def _episode(sim: So101Sim, expert: ScriptedExpert, seed: int) -> tuple[bool, list[np.ndarray]]:
    sim.reset(seed=seed)
    expert.reset(seed=seed)
    targets = []
    for _ in range(MAX_EPISODE_STEPS):
        targets.append(expert.act(sim))
        sim.set_joint_targets(targets[-1])
        sim.step()
        if sim.is_success():
            return True, targets
    return False, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_picks_the_cube(sim: So101Sim, expert: ScriptedExpert, seed: int) -> None:
    sim.reset(seed=seed)
    assert not sim.is_success()
    success, _ = _episode(sim, expert, seed)
    assert success
    assert expert.phase in (Phase.LIFT, Phase.HOLD)
    cube, _ = sim.cube_pose()
    assert cube[2] > sim.cube_half_size + sim.config.success_lift_height


def test_expert_noise_options_perturb_reproducibly(sim: So101Sim) -> None:
    noisy_config = ExpertConfig(target_noise_std=0.02, random_fraction=0.3, episode_steps=60)
    clean, noisy = ScriptedExpert(sim), ScriptedExpert(sim, noisy_config)
    _, clean_targets = _episode(sim, clean, seed=0)
    _, noisy_a = _episode(sim, noisy, seed=0)
    _, noisy_b = _episode(sim, noisy, seed=0)
    n = 60
    np.testing.assert_array_equal(np.array(noisy_a[:n]), np.array(noisy_b[:n]))
    difference = np.abs(np.array(noisy_a[:n]) - np.array(clean_targets[:n]))
    assert difference.max(axis=1).min() > 0  # every target perturbed
    assert difference.max() > 0.2  # the random window wanders off the scripted path
    lower, upper = sim.joint_limits()
    assert np.all((np.array(noisy_a) >= lower) & (np.array(noisy_a) <= upper))
    with pytest.raises(ValueError, match="random_fraction"):
        ExpertConfig(random_fraction=1.5)


# ------------------------------------------------------------------------------------ pacing
class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_realtime_pacer_tracks_wall_time_times_factor() -> None:
    clock = _FakeClock()
    pacer = RealtimePacer(2.0, clock=clock, sleep=clock.sleep)
    assert pacer.wait(0.0) == 0.0  # anchors
    clock.now += 0.1  # compute took 0.1 s of wall time
    assert pacer.wait(1.0) == pytest.approx(0.4)  # 1 sim s at 2x = 0.5 wall s
    clock.now += 2.0  # fell behind: no sleep until sim time catches up
    assert pacer.behind(2.0) == pytest.approx(1.5)  # 2 sim s were due at wall 1.0 s; it is 2.5 s
    assert pacer.wait(2.0) == 0.0
    pacer.reset(2.0)  # re-anchored (the sim robot's stamps jump to now)
    assert pacer.behind(2.0) == 0.0
    for factor in (0.0, -1.0, float("inf")):
        unpaced = RealtimePacer(factor, clock=clock, sleep=clock.sleep)
        unpaced.wait(0.0)
        assert unpaced.wait(100.0) == 0.0
    assert clock.slept == [pytest.approx(0.4)]
