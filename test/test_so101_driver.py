"""The real SO-101 driver without the arm: its configuration and its refusals to start, as real processes.

Not testable here (needs the arm): reading positions, following commands, bus errors while running.
The unit mapping it uses is tested in test/core/test_so101_units.py against LeRobot's own code.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import yaml

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES

pytestmark = pytest.mark.ros

MODULE = "vla_mbpo_ros.nodes.so101_driver"
CONFIG = os.path.join(os.path.dirname(__file__), "..", "config", "so101_driver.yaml")


def _exit_output(process, timeout: float = 60.0) -> tuple[int, str]:
    code = process.process.wait(timeout=timeout)
    return code, process.output()


@pytest.fixture
def pty_port():
    """A serial device that exists but has no motors behind it (a pseudo-terminal)."""
    leader, follower = os.openpty()
    yield os.ttyname(follower)
    os.close(leader)
    os.close(follower)


def _write_calibration(directory, robot_id: str) -> None:
    calibration = {
        name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 1000, "range_max": 3000}
        for i, name in enumerate(SO101_JOINT_NAMES)
    }
    (directory / f"{robot_id}.json").write_text(json.dumps(calibration))


def test_refuses_to_start_naming_an_absent_port(launch_node, tmp_path):
    port = str(tmp_path / "ttyACM9")
    node = launch_node(MODULE, "so101_driver", param_files=[CONFIG], params={"port": port})
    code, output = _exit_output(node)
    assert code == 2, output
    assert f"serial port {port} not found" in output
    assert "Traceback" not in output


def test_refuses_to_start_without_a_lerobot_calibration(launch_node, tmp_path, pty_port):
    node = launch_node(MODULE, "so101_driver", params={"port": pty_port, "calibration_dir": str(tmp_path), "robot_id": "arm7"})
    code, output = _exit_output(node)
    assert code == 2, output
    assert f"no LeRobot calibration at {tmp_path / 'arm7.json'}" in output
    assert f"lerobot-calibrate --robot.type=so101_follower --robot.port={pty_port} --robot.id=arm7" in output


def test_refuses_to_start_when_no_motor_answers_on_the_port(launch_node, tmp_path, pty_port):
    _write_calibration(tmp_path, "arm7")
    node = launch_node(MODULE, "so101_driver", params={"port": pty_port, "calibration_dir": str(tmp_path), "robot_id": "arm7"})
    code, output = _exit_output(node)
    assert code == 2, output
    assert f"no answer from the SO-101 motors on {pty_port}" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "params, field",
    [
        ({"joint_signs": [1.0, 1.0, 0.5, 1.0, 1.0]}, "joint_signs"),
        ({"control_rate": 0.0}, "control_rate"),
        ({"position_min": [0.0] * 6, "position_max": [0.0] * 6}, "position_min"),
        ({"gripper_open": -0.17453}, "gripper_open"),
    ],
)
def test_bad_parameters_are_refused_before_touching_the_port(launch_node, tmp_path, params, field):
    node = launch_node(MODULE, "so101_driver", params={"port": str(tmp_path / "absent"), **params})
    code, output = _exit_output(node)
    assert code == 2, output
    assert f"configuration: {field}" in output and "not found" not in output


def test_config_file_sets_every_parameter_and_matches_the_defaults():
    from vla_mbpo_ros.nodes.so101_driver import So101DriverConfig

    with open(CONFIG) as f:
        params = yaml.safe_load(f)["so101_driver"]["ros__parameters"]
    fields = {f.name for f in dataclasses.fields(So101DriverConfig)}
    assert set(params) == fields
    assert So101DriverConfig(**params) == So101DriverConfig()
    # Typed ROS parameters: list defaults must be floats or a YAML override of ints is refused.
    assert all(isinstance(v, float) for key in ("joint_signs", "joint_offsets", "position_min") for v in params[key])
