"""The simulated SO-101 node, as a real process: cameras, joint states, both command interfaces, reset."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros

SIM_PARAMS = {"sim.image_size": [48, 64], "sim.camera_fps": 10.0, "sim.control_fps": 30.0}


@pytest.fixture
def sim(launch_node):
    return launch_node("vla_mbpo_ros.nodes.sim_robot", "sim_robot", params=SIM_PARAMS)


def _latest_position(states, joint: int) -> float:
    return states[-1].position[joint] if states else float("nan")


def test_publishes_both_views_and_joint_states_at_the_configured_rates(ros, sim):
    from ros_harness import wait_until
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from vla_mbpo_ros.conversions import image_to_numpy, stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

    images = {v: ros.subscribe(Image, f"/cameras/{v}/image_raw", SENSOR_QOS) for v in ("head", "wrist")}
    infos = ros.subscribe(CameraInfo, "/cameras/wrist/camera_info", SENSOR_QOS)
    states = ros.subscribe(JointState, "/joint_states", SENSOR_QOS)
    wait_until(lambda: all(len(m) >= 6 for m in images.values()) and len(states) >= 30 and infos, 90.0, "6 frames per view")

    for view, msgs in images.items():
        frame = image_to_numpy(msgs[-1])
        assert frame.shape == (48, 64, 3), view
        assert frame.std() > 1.0, f"{view} view is blank"
        # The first frame is rendered at the first control step, the rest on camera ticks.
        gaps = np.diff([stamp_to_seconds(m.header.stamp) for m in msgs[1:6]])
        np.testing.assert_allclose(gaps, 0.1, atol=1e-3, err_msg=f"{view} frames not at camera_fps")
    gaps = np.diff([stamp_to_seconds(m.header.stamp) for m in states[:30]])
    assert np.all(gaps > 0) and np.median(gaps) == pytest.approx(1 / 30, abs=1e-3)
    assert list(states[-1].name) == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    assert (infos[-1].width, infos[-1].height) == (64, 48) and infos[-1].k[0] > 0


def test_moves_when_commanded_through_each_arm_interface_and_clips_to_limits(ros, sim):
    from builtin_interfaces.msg import Duration
    from ros_harness import wait_until
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS, SENSOR_QOS

    states = ros.subscribe(JointState, "/joint_states", SENSOR_QOS)
    wait_until(lambda: states, 60.0, "joint states")
    forward = ros.publisher(Float64MultiArray, "/forward_position_controller/commands", RELIABLE_QOS)
    ros.wait_for_subscribers("/forward_position_controller/commands")
    forward.publish(Float64MultiArray(data=[0.5, 0.0, 0.0, 0.0, 0.0, 0.0]))
    wait_until(lambda: abs(_latest_position(states, 0) - 0.5) < 0.03, 30.0, "shoulder_pan at 0.5 rad via Float64MultiArray")

    trajectory = ros.publisher(JointTrajectory, "/arm_controller/joint_trajectory", RELIABLE_QOS)
    ros.wait_for_subscribers("/arm_controller/joint_trajectory")
    # Joints in another order than the sim's, and a target beyond the pan limit: clipped like hardware.
    names = ["gripper", "wrist_roll", "wrist_flex", "elbow_flex", "shoulder_lift", "shoulder_pan"]
    point = JointTrajectoryPoint(positions=[0.0, 0.0, 0.0, 0.0, 0.0, -50.0], time_from_start=Duration(sec=0, nanosec=300_000_000))
    trajectory.publish(JointTrajectory(joint_names=names, points=[point]))
    wait_until(lambda: _latest_position(states, 0) < -1.0, 30.0, "shoulder_pan moving negative via JointTrajectory")
    settled = wait_until(
        lambda: len(states) > 10 and abs(states[-1].position[0] - states[-10].position[0]) < 1e-3 and states[-1].position[0],
        30.0,
        "pan settled",
    )
    assert -3.3 < settled < -1.0, "the target beyond the limit must be clipped to the joint range"


def test_reset_service_is_seeded(ros, sim):
    from vla_mbpo_ros.srv import ResetSim

    first = ros.call(ResetSim, "/sim/reset", ResetSim.Request(seed=7))
    assert first.success and first.seed == 7
    auto = ros.call(ResetSim, "/sim/reset", ResetSim.Request(seed=-1))
    assert auto.success and auto.seed != 7
