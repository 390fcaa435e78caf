"""Config of the ``vla_mbpo_ros`` robot: joints, cameras and the graph's topics, all from here.

Defaults fit the package's sim (``python -m vla_mbpo_ros.bringup lerobot``): the SO-101's six
joints and its head and wrist cameras at 96x96, 10 fps, raw. A real arm names its own, e.g.
``--robot.cameras='{front: {topic: /front/image_raw/compressed, height: 480, width: 640, fps: 30,
transport: compressed}}'``. Every ``.pos`` value is in radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.robots.config import RobotConfig

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.robot.lerobot_features import CameraStream, check_joint_names, check_positive


@dataclass
class RosCameraConfig:
    topic: str
    height: int
    width: int
    fps: int
    transport: str = "raw"  # raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage (JPEG/PNG)


def _sim_cameras() -> dict[str, RosCameraConfig]:
    return {view: RosCameraConfig(f"/cameras/{view}/image_raw", 96, 96, 10) for view in ("head", "wrist")}


@RobotConfig.register_subclass("vla_mbpo_ros")
@dataclass(kw_only=True)
class GatedRosArmConfig(RobotConfig):
    joint_names: list[str] = field(default_factory=lambda: list(SO101_JOINT_NAMES))
    cameras: dict[str, RosCameraConfig] = field(default_factory=_sim_cameras)
    joint_state_topic: str = "/joint_states"
    # The safety gate's operator input (the policy executor's): the only place targets go.
    command_topic: str = "/vla_mbpo/teleop/joint_command"
    safety_status_topic: str = "/vla_mbpo/safety_status"
    executor_services: str = "/vla_mbpo/executor"  # <this>/start_episode and <this>/end_episode
    # Start a teleop episode of the executor on connect and end it on disconnect (false: someone
    # else runs the executor's episodes, e.g. the episode manager).
    manage_episodes: bool = True
    task: str = "lerobot session"  # the executor episode's task (its logs and status)
    connect_timeout_s: float = 30.0
    max_observation_age_s: float = 1.0  # an older joint state or frame is an error, not an observation
    domain_id: int | None = None  # None: ROS_DOMAIN_ID of the environment

    def __post_init__(self) -> None:
        super().__post_init__()
        check_joint_names(self.joint_names, "robot.joint_names")
        self.camera_streams()
        for name in ("connect_timeout_s", "max_observation_age_s"):
            check_positive(getattr(self, name), f"robot.{name}")
        for name in ("joint_state_topic", "command_topic", "safety_status_topic", "executor_services"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(f"robot.{name}: expected an absolute ROS name, got {getattr(self, name)!r}")

    def camera_streams(self) -> tuple[CameraStream, ...]:
        try:
            return tuple(CameraStream(name, c.topic, c.height, c.width, c.fps, c.transport) for name, c in self.cameras.items())
        except ValueError as err:
            raise ValueError(f"robot.{err}") from None
