"""Config of the ``vla_mbpo_ros`` teleoperator: which joints, from which topic.

Its targets are sensor_msgs/JointState on ``topic``, published by the graph's operator device: the
teleop node (gamepad, keyboard, SO-101 leader arm) or the sim's scripted expert. The ``lerobot``
bringup profile points both at the default topic. Every ``.pos`` value is in radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.teleoperators.config import TeleoperatorConfig

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.robot.lerobot_features import check_joint_names, check_positive


@TeleoperatorConfig.register_subclass("vla_mbpo_ros")
@dataclass(kw_only=True)
class RosOperatorConfig(TeleoperatorConfig):
    joint_names: list[str] = field(default_factory=lambda: list(SO101_JOINT_NAMES))
    topic: str = "/vla_mbpo/operator/joint_targets"
    # Older targets are an error, not repeated: a silent device must leave the gate holding.
    max_age_s: float = 0.5
    connect_timeout_s: float = 30.0
    domain_id: int | None = None  # None: ROS_DOMAIN_ID of the environment

    def __post_init__(self) -> None:
        check_joint_names(self.joint_names, "teleop.joint_names")
        for name in ("max_age_s", "connect_timeout_s"):
            check_positive(getattr(self, name), f"teleop.{name}")
        if not self.topic.startswith("/"):
            raise ValueError(f"teleop.topic: expected an absolute ROS topic name, got {self.topic!r}")
