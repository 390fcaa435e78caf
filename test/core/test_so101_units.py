"""Radians <-> LeRobot SO follower motor values (vla_mbpo_ros.core.robot.so101_units)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.robot.so101_units import So101Units, So101UnitsConfig

joint_vectors = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=6, max_size=6).map(np.array)
RANGES = ((700.0, 3400.0), (800.0, 3300.0), (900.0, 3100.0), (850.0, 3200.0), (0.0, 4095.0))


def test_keys_follow_the_package_joint_order():
    assert So101Units.keys() == [f"{name}.pos" for name in SO101_JOINT_NAMES]


def test_degrees_mode_known_values():
    units = So101Units()
    action = units.to_lerobot([np.pi / 2, -np.pi / 4, 0.0, 0.0, np.pi, -0.17453])
    assert action["shoulder_pan.pos"] == pytest.approx(90.0)
    assert action["shoulder_lift.pos"] == pytest.approx(-45.0)
    assert action["wrist_roll.pos"] == pytest.approx(180.0)
    assert action["gripper.pos"] == pytest.approx(0.0)  # closed end of the MJCF range
    q = units.from_lerobot({**action, "gripper.pos": 100.0, "front.camera": 0})  # other keys ignored
    assert q[5] == pytest.approx(1.74533)


@settings(max_examples=200, deadline=None)
@given(q=joint_vectors)
def test_round_trip_degrees_with_signs_and_offsets(q):
    config = So101UnitsConfig(joint_signs=(1, -1, 1, -1, 1), joint_offsets=(0.1, 0.0, -0.2, 0.0, 0.05))
    units = So101Units(config)
    np.testing.assert_allclose(units.from_lerobot(units.to_lerobot(q)), q, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(q=joint_vectors)
def test_round_trip_normalized_mode(q):
    units = So101Units(So101UnitsConfig(use_degrees=False, calibration_ranges=RANGES))
    np.testing.assert_allclose(units.from_lerobot(units.to_lerobot(q)), q, atol=1e-9)


def _bus(norm_mode: MotorNormMode) -> FeetechMotorsBus:
    motors = {name: Motor(i + 1, "sts3215", norm_mode) for i, name in enumerate(SO101_JOINT_NAMES[:5])}
    motors["gripper"] = Motor(6, "sts3215", MotorNormMode.RANGE_0_100)
    calibration = {
        name: MotorCalibration(id=i + 1, drive_mode=0, homing_offset=0, range_min=int(lo), range_max=int(hi))
        for i, (name, (lo, hi)) in enumerate(zip(SO101_JOINT_NAMES, [*RANGES, (1000.0, 2800.0)]))
    }
    return FeetechMotorsBus(port="/dev/null-unused", motors=motors, calibration=calibration)


@pytest.mark.parametrize("use_degrees", [True, False])
def test_agrees_with_lerobots_own_normalization(use_degrees):
    """Steps -> LeRobot values (LeRobot's code) -> radians (ours) equals steps -> radians by hand."""
    bus = _bus(MotorNormMode.DEGREES if use_degrees else MotorNormMode.RANGE_M100_100)
    units = So101Units(So101UnitsConfig(use_degrees=use_degrees, calibration_ranges=RANGES))
    steps = {1: 2500, 2: 1200, 3: 2000, 4: 3000, 5: 100, 6: 1900}
    values = {f"{bus._id_to_name(i)}.pos": v for i, v in bus._normalize(steps).items()}
    q = units.from_lerobot(values)
    for i, (lo, hi) in enumerate(RANGES):
        expected = (steps[i + 1] - (lo + hi) / 2) * 2 * np.pi / 4095
        assert q[i] == pytest.approx(expected, abs=1e-9), SO101_JOINT_NAMES[i]
    assert q[5] == pytest.approx(-0.17453 + (1900 - 1000) / 1800 * (1.74533 + 0.17453))
    # and back: our action, through LeRobot's unnormalize, lands on the same steps (+-1 truncation)
    back = bus._unnormalize({bus.motors[k.removesuffix(".pos")].id: v for k, v in units.to_lerobot(q).items()})
    assert all(abs(back[i] - steps[i]) <= 1 for i in steps)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"joint_signs": (1, 1, 1, 1)}, "joint_signs"),
        ({"joint_signs": (1, 1, 2, 1, 1)}, "joint_signs"),
        ({"joint_offsets": (0, 0, float("nan"), 0, 0)}, "joint_offsets"),
        ({"gripper_open": -0.17453}, "gripper_open"),
        ({"use_degrees": False}, "calibration_ranges"),
        ({"use_degrees": False, "calibration_ranges": ((1, 0),) * 5}, "calibration_ranges"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        So101UnitsConfig(**kwargs)


def test_rejects_wrong_shapes_missing_joints_and_nonfinite():
    units = So101Units()
    with pytest.raises(ValueError, match="6 joint positions"):
        units.to_lerobot([0.0] * 5)
    with pytest.raises(ValueError, match="finite"):
        units.to_lerobot([0.0, 0.0, float("inf"), 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="gripper.pos"):
        units.from_lerobot({f"{n}.pos": 0.0 for n in SO101_JOINT_NAMES[:5]})
