"""The arm of a running vla_mbpo_ros graph, as a program outside the graph drives it.

Observations come from the arm's own topics: the joint states and each camera, raw
(sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage), chosen per camera. The newest
message of each is kept and decoded only when asked for, once. Targets go out as
sensor_msgs/JointState on the safety gate's input (the policy executor's
/vla_mbpo/teleop/joint_command): the gate clamps or holds them like any operator's targets, and
under a latched e-stop nothing they say reaches the arm. There is no other way to the arm here.

The gate passes operator targets only during an episode it runs (source "teleop"): with
``manage_episodes`` the client starts one on connect and ends it on close. It never starts one
again by itself: after an e-stop latch and reset, the gate holds until a person starts a session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, JointState

from vla_mbpo_ros.clients.session import RosSession
from vla_mbpo_ros.conversions import compressed_image_to_rgb, image_to_rgb
from vla_mbpo_ros.core.robot.joints import reorder
from vla_mbpo_ros.core.robot.lerobot_features import CameraStream
from vla_mbpo_ros.msg import ExecutedCommand, SafetyStatus
from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS
from vla_mbpo_ros.srv import EndEpisode, StartEpisode

log = logging.getLogger("vla_mbpo_ros.clients.gated_arm")

GRAPH_HINT = (": is the graph running (python -m vla_mbpo_ros.bringup lerobot, or ros2 launch vla_mbpo_ros "
              "lerobot.launch.py) on this ROS_DOMAIN_ID, with the same discovery range?")


class GatedArm:
    def __init__(
        self,
        joint_names: Sequence[str],
        cameras: Sequence[CameraStream],
        *,
        node_name: str,
        joint_state_topic: str = "/joint_states",
        command_topic: str = "/vla_mbpo/teleop/joint_command",
        safety_status_topic: str = "/vla_mbpo/safety_status",
        executor_services: str = "/vla_mbpo/executor",
        executed_topic: str = "/vla_mbpo/executed_command",
        settle_timeout_s: float = 1.0,
        manage_episodes: bool = True,
        task: str = "",
        connect_timeout_s: float = 30.0,
        max_observation_age_s: float = 1.0,
        domain_id: int | None = None,
    ) -> None:
        self.joint_names = tuple(joint_names)
        self.cameras = tuple(cameras)
        self.node_name = node_name
        self.joint_state_topic = joint_state_topic
        self.command_topic = command_topic
        self.safety_status_topic = safety_status_topic
        self.executor_services = executor_services.rstrip("/")
        self.executed_topic = executed_topic
        self.settle_timeout_s = settle_timeout_s
        self.manage_episodes = manage_episodes
        self.task = task
        self.connect_timeout_s = connect_timeout_s
        self.max_observation_age_s = max_observation_age_s
        self.domain_id = domain_id
        self.session: RosSession | None = None
        self.episode_index: int | None = None  # the executor episode this client started
        self._status_lock = threading.Lock()
        self._safety_state: int | None = None
        self._last_target: np.ndarray | None = None
        self._last_target_executed = threading.Event()

    @property
    def connected(self) -> bool:
        return self.session is not None and not self.session.closed

    @property
    def latched(self) -> bool:
        with self._status_lock:
            return self._safety_state == SafetyStatus.STATE_LATCHED

    def connect(self) -> None:
        session = self.session = RosSession(self.node_name, self.domain_id)
        try:
            session.keep_latest(JointState, self.joint_state_topic, SENSOR_QOS)
            for camera in self.cameras:
                session.keep_latest(CompressedImage if camera.transport == "compressed" else Image, camera.topic, SENSOR_QOS)
            session.keep_latest(SafetyStatus, self.safety_status_topic, LATCHED_QOS, self._on_safety_status)
            session.keep_latest(ExecutedCommand, self.executed_topic, RELIABLE_QOS, self._on_executed)
            self._command_pub = session.node.create_publisher(JointState, self.command_topic, RELIABLE_QOS)
            session.wait_for_messages([self.joint_state_topic, *(c.topic for c in self.cameras), self.safety_status_topic],
                                      self.connect_timeout_s, GRAPH_HINT)
            if not session.wait_for_matches(self._command_pub, self.connect_timeout_s):
                raise ConnectionError(f"nothing subscribes to {self.command_topic}: the safety gate (policy_executor) "
                                      f"is not running{GRAPH_HINT}")
            if self.manage_episodes:
                self._start_episode()
        except BaseException:
            self.close()
            raise

    def _start_episode(self) -> None:
        response = self.session.call(StartEpisode, f"{self.executor_services}/start_episode",
                                     StartEpisode.Request(task=self.task, source="teleop"), self.connect_timeout_s)
        if not response.success:
            raise ConnectionError(f"the policy executor refused to start an episode: {response.message}")
        with self._status_lock:
            self.episode_index = response.episode_index
        log.info("executor episode %d started: the safety gate passes this session's targets", response.episode_index)

    def _on_safety_status(self, msg: SafetyStatus) -> None:
        with self._status_lock:
            was, self._safety_state = self._safety_state, msg.state
            if was == SafetyStatus.STATE_LATCHED and msg.state != SafetyStatus.STATE_LATCHED:
                self.episode_index = None  # the reset ended this client's episode; any later one is not ours
        if msg.state == SafetyStatus.STATE_LATCHED and was != SafetyStatus.STATE_LATCHED:
            log.error("e-stop latched (%s): the safety gate holds the arm and ignores every target until "
                      "/vla_mbpo/reset_estop and a new session", msg.latch_reason)

    def _on_executed(self, msg: ExecutedCommand) -> None:
        with self._status_lock:
            target = self._last_target
        if target is None or msg.source != "teleop":
            return
        try:
            positions = reorder(msg.joint_names, msg.positions, self.joint_names, self.executed_topic)
        except ValueError:
            return
        with self._status_lock:  # still the last target: a newer one sent meanwhile is not reached by this
            if self._last_target is target and np.allclose(positions, target, rtol=0.0, atol=1e-6):
                self._last_target_executed.set()

    # ------------------------------------------------------------------ streams
    def joint_positions(self) -> np.ndarray:
        msg = self.session.latest(self.joint_state_topic, self.max_observation_age_s)
        return reorder(msg.name, msg.position, self.joint_names, self.joint_state_topic)

    def frame(self, camera: CameraStream) -> np.ndarray:
        """The camera's newest frame as (height, width, 3) uint8 RGB, decoded now (a copy)."""
        msg = self.session.latest(camera.topic, self.max_observation_age_s)
        rgb = compressed_image_to_rgb(msg) if camera.transport == "compressed" else image_to_rgb(msg)
        if rgb.shape != camera.shape:
            raise ValueError(f"cameras.{camera.name}: {camera.topic} delivers {rgb.shape[0]}x{rgb.shape[1]} frames, "
                             f"the config says height {camera.height}, width {camera.width}")
        return np.array(rgb, dtype=np.uint8)

    def send_targets(self, positions: np.ndarray) -> None:
        """Joint targets (radians, ``joint_names`` order) to the safety gate's input."""
        msg = JointState(name=list(self.joint_names), position=[float(q) for q in positions])
        msg.header.stamp = self.session.node.get_clock().now().to_msg()
        with self._status_lock:
            self._last_target = np.asarray(msg.position, dtype=np.float64)
            self._last_target_executed.clear()
        self._command_pub.publish(msg)

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """End the executor episode this client started (the gate holds), then the session.
        Idempotent; a failure to end the episode is logged, not raised (the gate holds anyway
        once targets stop: they go stale)."""
        session, self.session = self.session, None
        if session is None or session.closed:
            return
        with self._status_lock:
            episode, self.episode_index = self.episode_index, None
            last_target = self._last_target
        try:
            if episode is not None:
                # The gate moves towards a target by at most its per-cycle step: the last target sent (a
                # replay's last action) may still be a few cycles away. Let it get there, bounded, before
                # the episode ends and the gate holds where the arm is.
                if last_target is not None and not self.latched and not self._last_target_executed.wait(self.settle_timeout_s):
                    log.info("the gate had not reached the last target %.1f s into the close; ending the episode",
                             self.settle_timeout_s)
                response = session.call(EndEpisode, f"{self.executor_services}/end_episode",
                                        EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_UNLABELLED), 5.0)
                log.info("executor: %s", response.message)
        except Exception as err:  # noqa: BLE001 - closing must finish
            log.warning("could not end executor episode %s: %s", episode, err)
        finally:
            session.close()
