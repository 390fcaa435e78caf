"""The ``vla_mbpo_ros`` teleoperator: LeRobot's Teleoperator over vla_mbpo_ros.clients.OperatorTargets.

rclpy lives in a Context of this teleoperator's own, made in connect() and shut down in
disconnect() only; disconnect() is idempotent. ``get_action`` raises TimeoutError when the
device's newest targets are older than ``max_age_s``: LeRobot's loop stops, the robot disconnects,
and the gate holds.
"""

from __future__ import annotations

import os

from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from vla_mbpo_ros.core.robot.lerobot_features import check_joint_names, joint_dict, joint_features

from .config_ros_operator import RosOperatorConfig


class RosOperator(Teleoperator):
    config_class = RosOperatorConfig
    name = "vla_mbpo_ros"

    def __init__(self, config: RosOperatorConfig) -> None:
        super().__init__(config)
        self.config = config
        self.joint_names = check_joint_names(config.joint_names, "teleop.joint_names")
        self.targets = None

    @property
    def action_features(self) -> dict:
        return joint_features(self.joint_names)

    @property
    def feedback_features(self) -> dict:
        return {}

    @property
    def is_connected(self) -> bool:
        return self.targets is not None and self.targets.connected

    @property
    def is_calibrated(self) -> bool:
        return True  # the device's own driver owns calibration

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        from vla_mbpo_ros.clients.operator_targets import OperatorTargets  # rclpy: only now

        c = self.config
        targets = OperatorTargets(self.joint_names, node_name=f"lerobot_teleop_{os.getpid()}", topic=c.topic,
                                  max_age_s=c.max_age_s, connect_timeout_s=c.connect_timeout_s, domain_id=c.domain_id)
        targets.connect()  # closes itself (context included) when it fails
        self.targets = targets

    def get_action(self) -> dict:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        return joint_dict(self.targets.targets(), self.joint_names)

    def send_feedback(self, feedback: dict) -> None:
        pass  # no force feedback over this interface

    def disconnect(self) -> None:
        targets, self.targets = self.targets, None
        if targets is not None:
            targets.close()
