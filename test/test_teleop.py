"""Teleop sources as real processes: gamepad (/joy) targets and interventions, the leader-arm
refusal without hardware, and the sim's scripted expert publishing teleop targets.

The auto-episode mode (scripted demonstrations) runs end to end in test_recorder.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

TELEOP = "vla_mbpo_ros.nodes.teleop"
COMMAND_TOPIC = "/vla_mbpo/teleop/joint_command"
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
# Safety position limits of config/robots/so101.yaml.
POSITION_MIN = np.array([-1.87, -1.69, -1.64, -1.60, -2.69, -0.17])
POSITION_MAX = np.array([1.87, 1.69, 1.64, 1.60, 2.79, 1.74])


JOY_PERIOD_S = 0.02  # a gamepad driver publishes /joy at 50 Hz


def test_joy_drives_from_the_measured_position_only_with_the_deadman_and_toggles_intervention(ros, launch_node):
    from rclpy.duration import Duration
    from ros_harness import wait_until
    from sensor_msgs.msg import JointState, Joy
    from vla_mbpo_ros.msg import EpisodeEvent

    from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS, SENSOR_QOS

    commands = ros.subscribe(JointState, COMMAND_TOPIC, RELIABLE_QOS)
    events = ros.subscribe(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)
    manager = ros.publisher(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)  # plays the episode manager
    # Joint order of the measured state differs from the arm's: the node maps by name.
    measured = ros.publisher(JointState, "/joint_states", SENSOR_QOS)
    joy = ros.publisher(Joy, "/joy", SENSOR_QOS)
    launch_node(TELEOP, "teleop", params={"source": "joy", "rate_hz": 30.0, "joy.axes": [0, -1, -1, -1, -1, -1],
                                          "joy.axis_speeds": [0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
                                          "joy.deadman_button": 4, "joy.intervention_button": 3})
    wait_until(lambda: joy.get_subscription_count() and measured.get_subscription_count(), 60.0,
               "the teleop node matched to /joy and /joint_states")
    start = [0.3, -0.2, 0.1, 0.4, 0.0, 1.0]

    def stream(axes, buttons, seconds=None, until=None, what=""):
        """The operator's input, as a gamepad driver sends it (its 50 Hz is the input under test), for
        ``seconds`` or until ``until()`` holds (bounded)."""
        deadline = time.monotonic() + (seconds if seconds is not None else 20.0)
        while not (until is not None and until()):
            if time.monotonic() > deadline:
                if until is None:
                    return
                raise AssertionError(f"timed out after 20 s of /joy input waiting for {what}")
            measured.publish(JointState(name=list(reversed(JOINTS)), position=list(reversed(start))))
            joy.publish(Joy(axes=axes, buttons=buttons))
            time.sleep(JOY_PERIOD_S)

    def targets_stopped(quiet_messages: int = 10):
        """A check: true once ``quiet_messages`` /joy messages in a row brought no new target."""
        counts: list[int] = []

        def check() -> bool:
            counts.append(len(commands))
            return len(counts) > quiet_messages and counts[-1] == counts[-1 - quiet_messages]

        return check

    stream([1.0], [0, 0, 0, 0, 0], seconds=1.0)  # full deflection without the deadman: nothing
    assert commands == []
    stream([1.0], [0, 0, 0, 0, 1], until=lambda: len(commands) >= 20, what="teleop targets")  # shoulder_pan at 0.5 rad/s
    received = list(commands)
    assert list(received[0].name) == JOINTS
    positions = np.array([c.position for c in received])
    assert positions[0, 0] == pytest.approx(0.3, abs=0.05)  # engaged from the measured position
    assert np.all(np.diff(positions[:, 0]) > 0) and positions[-1, 0] > positions[0, 0] + 0.15
    np.testing.assert_allclose(positions[:, 1:], np.tile(start[1:], (len(positions), 1)), atol=1e-9)
    stream([0.0], [0, 0, 0, 0, 0], until=targets_stopped(), what="the targets to stop after the release")
    count = len(commands)
    stream([0.0], [0, 0, 0, 0, 0], seconds=0.5)  # released: no target at all (the executor holds)
    assert len(commands) == count

    # The episode manager starts episode 7: the operator's takeover names it.
    wait_until(lambda: manager.get_subscription_count() >= 2, 60.0, "teleop subscribed to episode events")
    manager.publish(EpisodeEvent(event=EpisodeEvent.START, episode_index=7, task="pick up the cube", source="policy"))
    # Acknowledged = in the node's reader before any press is sent; its executor serves that subscription
    # (created first) before /joy when both are ready.
    assert manager.wait_for_all_acked(Duration(seconds=10.0)), "the teleop node did not receive the START event"
    teleop_events = lambda: [(e.event, e.episode_index, e.task) for e in events if e.source == "teleop"]  # noqa: E731
    stream([0.0], [0, 0, 0, 1, 0], until=teleop_events, what="the takeover event")
    stream([0.0], [0, 0, 0, 1, 0], seconds=0.3)  # held on: one toggle per press, not one per message
    stream([0.0], [0, 0, 0, 0, 0], seconds=0.3)
    manager.publish(EpisodeEvent(event=EpisodeEvent.FAILURE, episode_index=7, source="policy"))
    assert manager.wait_for_all_acked(Duration(seconds=10.0)), "the teleop node did not receive the FAILURE event"
    stream([0.0], [0, 0, 0, 1, 0], until=lambda: len(teleop_events()) >= 2, what="the hand-back event")  # after the episode
    # A target made from a later /joy message shows that the node has handled every press before it.
    count = len(commands)
    stream([0.0], [0, 0, 0, 0, 1], until=lambda: len(commands) > count, what="a target after the last press")
    assert teleop_events() == [(EpisodeEvent.INTERVENTION_START, 7, "pick up the cube"), (EpisodeEvent.INTERVENTION_END, -1, "")]


def test_leader_source_refuses_to_start_without_the_arm(launch_node, tmp_path):
    from ros_harness import wait_until

    port = tmp_path / "ttyACM_missing"
    teleop = launch_node(TELEOP, "teleop", params={"source": "leader", "leader.port": str(port)})
    wait_until(lambda: not teleop.alive(), 60.0, "the teleop node to refuse")
    assert teleop.process.returncode == 2
    output = teleop.output()
    assert f"configuration: leader.port: {port} does not exist" in output


def test_unknown_source_is_named(launch_node):
    from ros_harness import wait_until

    teleop = launch_node(TELEOP, "teleop", params={"source": "spacemouse"})
    wait_until(lambda: not teleop.alive(), 60.0, "the teleop node to refuse")
    assert teleop.process.returncode == 2 and "configuration: source" in teleop.output()


def test_sim_expert_publishes_targets_within_limits_but_never_moves_the_arm_itself(ros, launch_node):
    from ros_harness import wait_until
    from sensor_msgs.msg import JointState

    from vla_mbpo_ros.conversions import stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS, SENSOR_QOS

    targets = ros.subscribe(JointState, COMMAND_TOPIC, RELIABLE_QOS)
    states = ros.subscribe(JointState, "/joint_states", SENSOR_QOS)
    launch_node("vla_mbpo_ros.nodes.sim_robot", "sim_robot",
                params={"sim.image_size": [48, 64], "sim.camera_fps": 10.0, "sim.control_fps": 30.0, "expert_teleop": True})
    wait_until(lambda: len(targets) >= 60 and states, 90.0, "two seconds of expert targets")
    received = list(targets)
    assert list(received[-1].name) == JOINTS
    stamps = np.array([stamp_to_seconds(t.header.stamp) for t in received])
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 30, abs=2e-3)
    positions = np.array([t.position for t in received])
    assert np.all(positions >= POSITION_MIN - 1e-9) and np.all(positions <= POSITION_MAX + 1e-9)
    # The expert heads for its ready pose, but nothing forwards its targets: the arm stays home.
    assert np.max(np.abs(positions[-1] - positions[0])) > 0.1
    np.testing.assert_allclose(states[-1].position, np.zeros(6), atol=0.05)
