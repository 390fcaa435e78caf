"""The executor as a real process, fed by this test as a live robot would be (joint states, observations
at 10 Hz, no simulator): the e-stop is a level that survives discovery, a vanished e-stop source stops the
arm on hardware, and data is judged by its capture stamp, not by its arrival.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


class LiveRobot:
    """Joint states at 30 Hz and observation sets at 10 Hz, stamped now, until ``freeze()``: from then
    on the sets keep coming at the same rate with the frozen capture stamp (a stuck camera behind a
    live sync node)."""

    def __init__(self, ros) -> None:
        from sensor_msgs.msg import JointState
        from vla_mbpo_ros.msg import MultiViewObservation, SafetyStatus

        from vla_mbpo_ros.conversions import numpy_to_image
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from vla_mbpo_ros.msg import ExecutedCommand

        from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS, SENSOR_QOS

        self.ros = ros
        deep = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.status = ros.subscribe(SafetyStatus, "/vla_mbpo/safety_status", deep)
        self.executed = ros.subscribe(ExecutedCommand, "/vla_mbpo/executed_command", QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        self._joints = ros.publisher(JointState, "/joint_states", SENSOR_QOS)
        self._observations = ros.publisher(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
        image = numpy_to_image(np.full((24, 32, 3), 90, np.uint8), "rgb8")
        self.observation = MultiViewObservation(view_names=["head", "wrist"], images=[image, image], view_offsets=[0.0, 0.0],
                                                joint_state=JointState(name=JOINTS, position=[0.0] * 6))
        self.frozen_stamp = None
        self.sets_after_freeze = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from sensor_msgs.msg import JointState

        tick = 0
        while not self._stop.wait(1 / 30):
            now = self.ros.node.get_clock().now().to_msg()
            self._joints.publish(JointState(header=self._header(now), name=JOINTS, position=[0.0] * 6))
            tick += 1
            if tick % 3 == 0:
                self.observation.header.stamp = self.frozen_stamp or now
                self.sets_after_freeze += self.frozen_stamp is not None
                self._observations.publish(self.observation)

    @staticmethod
    def _header(stamp):
        from std_msgs.msg import Header

        return Header(stamp=stamp)

    def freeze(self) -> None:
        self.frozen_stamp = self.ros.node.get_clock().now().to_msg()

    def start(self, source: str = "policy"):
        from ros_harness import wait_until
        from vla_mbpo_ros.srv import StartEpisode

        def attempt():
            response = self.ros.call(StartEpisode, "/vla_mbpo/executor/start_episode", StartEpisode.Request(task="t", source=source))
            return response if response.success else None

        return wait_until(attempt, 60.0, f"a {source} episode to start", poll=0.2)

    def latched(self, cause: str, since: int = 0, timeout: float = 30.0):
        """The first SafetyStatus after the ``since``-th one that reports a latch by ``cause``."""
        from ros_harness import wait_until
        from vla_mbpo_ros.msg import SafetyStatus

        return wait_until(lambda: next((s for s in list(self.status)[since:] if s.state == SafetyStatus.STATE_LATCHED
                                        and s.latch_reason.startswith(cause)), None), timeout, f"a latch by {cause}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def start_executor(launch_node, tmp_path: Path, *param_files: str, **params):
    from vla_mbpo_ros.core.policy.replay import ReplayPolicy

    checkpoint = tmp_path / "policy"
    ReplayPolicy(np.zeros((3, 10, 6), np.float32), ("head", "wrist"), "v1").save(checkpoint)
    values = {"trusted_checkpoint_roots": [str(tmp_path)], "policy_checkpoint": str(checkpoint), "status_period": 0.5, **params}
    files = [REPO / "config" / "policy_executor.yaml", *(REPO / "config" / f for f in param_files)]
    return launch_node("vla_mbpo_ros.nodes.policy_executor", "policy_executor", param_files=files, params=values)


def test_a_press_published_right_after_its_publisher_is_created_always_latches(ros, launch_node, tmp_path):
    """No waiting for discovery: the press is published in the same breath as the publisher is made."""
    from ros_harness import RosTestNode, wait_until
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    from vla_mbpo_ros.nodes._runtime import ESTOP_QOS

    start_executor(launch_node, tmp_path)
    robot = LiveRobot(ros)
    try:
        wait_until(lambda: robot.status, 60.0, "the executor's first SafetyStatus")
        for attempt in range(3):
            robot.start()
            before = len(robot.status)
            button = RosTestNode(f"estop_button_{attempt}")  # a new participant each time: discovery from zero
            try:
                button.publisher(Bool, "/vla_mbpo/estop", ESTOP_QOS).publish(Bool(data=True))
                status = robot.latched("estop_input", since=before)
                assert status.estop_input
            finally:
                button.close()  # the source is gone; its last level (pressed) stays latched
            release = ros.publisher(Bool, "/vla_mbpo/estop", ESTOP_QOS)
            release.publish(Bool(data=False))
            wait_until(lambda: ros.call(Trigger, "/vla_mbpo/reset_estop", Trigger.Request()).success, 30.0,
                       "a reset after the release", poll=0.2)
            ros.node.destroy_publisher(release)
    finally:
        robot.close()


def test_a_silent_estop_source_holds_the_arm_on_hardware(ros, launch_node, tmp_path):
    from ros_harness import wait_until

    start_executor(launch_node, tmp_path, "policy_executor_hardware.yaml")
    robot = LiveRobot(ros)
    try:
        wait_until(lambda: robot.status, 60.0, "the executor's first SafetyStatus")
        from vla_mbpo_ros.srv import StartEpisode

        refused = ros.call(StartEpisode, "/vla_mbpo/executor/start_episode", StartEpisode.Request(task="t", source="policy"))
        assert not refused.success and "estop_source: no e-stop source heard" in refused.message, refused.message
        source = launch_node("vla_mbpo_ros.nodes.estop_source", "estop_source",
                             param_files=[REPO / "config" / "estop_source.yaml"])
        robot.start()
        wait_until(lambda: any(c.source == "policy" for c in list(robot.executed)), 30.0, "policy commands")
        # As a cut wire or a hung process: no release, no goodbye. Frozen (SIGSTOP) rather than killed: a
        # SIGKILLed participant leaves a Fast DDS shared-memory port behind that can starve later tests'
        # participants of data (eProsima/Fast-DDS#5053).
        os.kill(source.pid, signal.SIGSTOP)
        try:
            status = robot.latched("estop_source: silent")
        finally:
            os.kill(source.pid, signal.SIGCONT)
        assert not status.estop_input
        after = len(robot.executed)
        wait_until(lambda: len(robot.executed) >= after + 10, 10.0, "commands after the latch")
        assert all(c.held and c.source == "hold" for c in list(robot.executed)[after + 1:])
    finally:
        robot.close()


def test_a_frozen_camera_behind_a_live_sync_node_holds_the_arm(ros, launch_node, tmp_path):
    """Sets keep arriving at 10 Hz, their capture stamp frozen: arrival would keep the watchdog fed."""
    from ros_harness import wait_until

    start_executor(launch_node, tmp_path)
    robot = LiveRobot(ros)
    try:
        robot.start()
        wait_until(lambda: any(c.source == "policy" for c in list(robot.executed)), 30.0, "policy commands")
        robot.freeze()
        status = robot.latched("stale_observation", timeout=10.0)
        assert robot.sets_after_freeze >= 3, "the sets kept coming"
        assert "old" in status.latch_reason
    finally:
        robot.close()
