"""The ``vla_mbpo_ros`` robot: LeRobot's Robot interface over vla_mbpo_ros.clients.GatedArm.

Observations: ``"<joint>.pos"`` (radians) from the joint states, and one frame per camera, raw or
compressed. ``send_action`` publishes the targets to the safety gate's input, never to the arm:
the gate clamps or holds them, and a latched e-stop holds the arm whatever LeRobot sends. rclpy
lives in a Context of this robot's own, made in connect() and shut down in disconnect() only;
disconnect() is idempotent.
"""

from __future__ import annotations

import os

from lerobot.robots.robot import Robot
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from vla_mbpo_ros.core.robot.lerobot_features import (
    check_joint_names, joint_dict, joint_features, joint_vector, observation_features,
)

from .config_gated_ros_arm import GatedRosArmConfig


class GatedRosArm(Robot):
    config_class = GatedRosArmConfig
    name = "vla_mbpo_ros"

    def __init__(self, config: GatedRosArmConfig) -> None:
        super().__init__(config)
        self.config = config
        self.joint_names = check_joint_names(config.joint_names, "robot.joint_names")
        self.streams = config.camera_streams()
        self.cameras = dict(config.cameras)  # LeRobot sizes its image writers by len(robot.cameras)
        self.arm = None

    @property
    def observation_features(self) -> dict:
        return observation_features(self.joint_names, self.streams)

    @property
    def action_features(self) -> dict:
        return joint_features(self.joint_names)

    @property
    def is_connected(self) -> bool:
        return self.arm is not None and self.arm.connected

    @property
    def is_calibrated(self) -> bool:
        return True  # the graph's driver owns calibration

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        from vla_mbpo_ros.clients.gated_arm import GatedArm  # rclpy and the package's messages: only now

        c = self.config
        arm = GatedArm(
            self.joint_names, self.streams, node_name=f"lerobot_robot_{os.getpid()}", joint_state_topic=c.joint_state_topic,
            command_topic=c.command_topic, safety_status_topic=c.safety_status_topic, executor_services=c.executor_services,
            manage_episodes=c.manage_episodes, task=c.task, connect_timeout_s=c.connect_timeout_s,
            max_observation_age_s=c.max_observation_age_s, domain_id=c.domain_id,
        )
        arm.connect()  # closes itself (context included) when it fails
        self.arm = arm

    def _connected_arm(self):
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        return self.arm

    def get_observation(self) -> dict:
        arm = self._connected_arm()
        return {**joint_dict(arm.joint_positions(), self.joint_names), **{s.name: arm.frame(s) for s in self.streams}}

    def send_action(self, action: dict) -> dict:
        """Targets to the safety gate's input; returns them as proposed (the gate may clamp or hold
        them: what reached the arm is on /vla_mbpo/executed_command)."""
        arm = self._connected_arm()
        positions = joint_vector(action, self.joint_names)
        arm.send_targets(positions)
        return joint_dict(positions, self.joint_names)

    def disconnect(self) -> None:
        arm, self.arm = self.arm, None
        if arm is not None:
            arm.close()
