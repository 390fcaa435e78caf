"""The YAML mapping that says which topics of a rosbag2 recording become which LeRobotDataset features.

Example (every key is documented on its dataclass; ``docs/lerobot_ros2.md`` has the walk-through)::

    fps: 10
    task: put the cube in the bowl
    time: header                      # header stamps (log time for messages without a header) | log
    cameras:                          # view name -> topic (sensor_msgs/Image or CompressedImage)
      head: {topic: /cameras/head/image_raw}
      wrist: {topic: /cameras/wrist/image_raw/compressed}
    state:
      topic: /joint_states            # sensor_msgs/JointState
      joints: [shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper]
      rename: {joint_1: shoulder_pan} # optional: name in the bag -> name in the dataset
    action:
      topic: /arm_controller/joint_trajectory   # or `next_state: true`
    episodes:
      topic: /vla_mbpo/episode_event  # or `ranges: [[0.0, 12.5], [14.0, 30.0]]`; neither: one episode

How frames are made (``core.data.bag_conversion``): the first camera is the clock; its messages,
subsampled to ``fps``, are the frames. Every other camera and the joint state contribute their message
nearest to the frame's time, if within ``tolerance``; the action is the first command at or after the
frame's time within ``action.max_delay`` (what the gate sent right after the observation: the live
recorder's pairing rule), or the next frame's state. A frame missing any of them is dropped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_mbpo_ros.core.util.config import load_config, read_params

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
EXECUTED_COMMAND = "vla_mbpo_ros/msg/ExecutedCommand"
EPISODE_EVENT = "vla_mbpo_ros/msg/EpisodeEvent"
BOOL = "std_msgs/msg/Bool"

CAMERA_TYPES = (IMAGE, COMPRESSED_IMAGE)
STATE_TYPES = (JOINT_STATE,)
ACTION_TYPES = (JOINT_TRAJECTORY, FLOAT64_ARRAY, JOINT_STATE, EXECUTED_COMMAND)
TIME_BASES = ("header", "log")


def _topic_ok(topic: str, where: str) -> None:
    if not isinstance(topic, str) or not topic.startswith("/"):
        raise ValueError(f"{where}: expected a topic name starting with '/', got {topic!r}")


@dataclass
class CameraTopic:
    """One camera view: its topic, and for a depth camera the range (m) mapped onto 0..255."""

    topic: str = ""
    depth_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _topic_ok(self.topic, "topic")
        if self.depth_range is not None:
            near, far = self.depth_range
            if not (math.isfinite(near) and math.isfinite(far) and 0 <= near < far):
                raise ValueError(f"depth_range: expected [near, far] metres with 0 <= near < far, got {list(self.depth_range)}")


@dataclass
class StateTopic:
    """``joints``: the dataset's joint order (observation.state, action); ``rename``: bag name -> dataset name."""

    topic: str = ""
    joints: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _topic_ok(self.topic, "topic")
        if not self.joints or len(set(self.joints)) != len(self.joints):
            raise ValueError(f"joints: expected a non-empty list of distinct joint names, got {list(self.joints)}")
        _check_rename(self.rename)


def _check_rename(rename: dict) -> None:
    for key, value in rename.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"rename: expected joint name -> joint name, got {key!r}: {value!r}")


@dataclass
class ActionSource:
    """Where actions come from: a command ``topic`` (JointTrajectory: its first point; Float64MultiArray;
    a leader arm's JointState; vla_mbpo_ros/ExecutedCommand) or ``next_state`` (the next frame's state;
    an episode's last frame has none and is dropped).

    ``joints``: for Float64MultiArray (which names nothing) the dataset joint of each entry, default the
    state's joints. ``rename``: the command's joint names -> dataset names. ``max_delay`` (s, default one
    frame period): latest a command may follow the frame's time.
    """

    topic: str = ""
    next_state: bool = False
    joints: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    max_delay: float | None = None

    def __post_init__(self) -> None:
        if bool(self.topic) == self.next_state:
            raise ValueError("expected either topic (a command topic) or next_state: true")
        if self.topic:
            _topic_ok(self.topic, "topic")
        if self.max_delay is not None and not (math.isfinite(self.max_delay) and self.max_delay >= 0):
            raise ValueError(f"max_delay: expected seconds >= 0, got {self.max_delay!r}")
        _check_rename(self.rename)


@dataclass
class EpisodeSplit:
    """Episode boundaries: a ``topic`` (vla_mbpo_ros/EpisodeEvent: START .. SUCCESS/FAILURE/END, DISCARD
    drops; std_msgs/Bool: true starts, false ends; any other type: every message cuts the recording),
    or time ``ranges`` [start, end] in seconds from the bag's start; neither: the whole bag is one episode."""

    topic: str = ""
    ranges: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.topic and self.ranges:
            raise ValueError("give either topic or ranges, not both")
        if self.topic:
            _topic_ok(self.topic, "topic")
        previous = -math.inf
        for i, (start, end) in enumerate(self.ranges):
            if not (0 <= start < end) or start < previous:
                raise ValueError(f"ranges[{i}]: expected 0 <= start < end, in order and not overlapping, got {[start, end]}")
            previous = end


@dataclass
class BagMapping:
    """Topics -> features of one conversion (see the module docstring)."""

    fps: int = 0
    cameras: dict[str, Any] = field(default_factory=dict)  # view -> CameraTopic (or its mapping)
    state: StateTopic | None = None
    action: ActionSource | None = None
    task: str = ""  # the episodes' instruction (an EpisodeEvent's own task wins)
    episodes: EpisodeSplit = field(default_factory=EpisodeSplit)
    time: str = "header"
    image_size: tuple[int, int] | None = None  # (height, width); default: the first camera's size
    tolerance: float | None = None  # s; default half a frame period
    source: str = "teleop"  # episode_source of the frames (an EpisodeEvent's own source wins)
    robot_type: str = "unknown"
    repo_id: str = "local/rosbag"
    use_videos: bool = True
    video_codec: str = "h264"

    def __post_init__(self) -> None:
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or not 1 <= self.fps <= 1000:
            raise ValueError(f"fps: expected an integer in [1, 1000], got {self.fps!r}")
        if not self.cameras:
            raise ValueError("cameras: expected at least one view (name -> {topic: ...})")
        self.cameras = {view: load_config(CameraTopic, value, f"cameras.{view}") for view, value in self.cameras.items()}
        for view in self.cameras:
            if not isinstance(view, str) or not view.replace("_", "").isalnum():
                raise ValueError(f"cameras: {view!r} is not a valid view name (letters, digits, _)")
        if self.state is None:
            raise ValueError("state: expected {topic: ..., joints: [...]}")
        if self.action is None:
            raise ValueError("action: expected {topic: ...} or {next_state: true}")
        if self.time not in TIME_BASES:
            raise ValueError(f"time: expected one of {TIME_BASES}, got {self.time!r}")
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"tolerance: expected seconds >= 0, got {self.tolerance!r}")
        if self.action.joints and len(self.action.joints) != len(set(self.action.joints)):
            raise ValueError(f"action.joints: duplicate names in {list(self.action.joints)}")
        unknown = [j for j in self.action.joints if j not in self.state.joints]
        if unknown:
            raise ValueError(f"action.joints: {unknown} are not in state.joints {list(self.state.joints)}")

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.cameras)

    @property
    def tolerance_s(self) -> float:
        return 0.5 / self.fps if self.tolerance is None else self.tolerance

    @property
    def max_action_delay_s(self) -> float:
        return 1.0 / self.fps if self.action.max_delay is None else self.action.max_delay

    def topics(self) -> dict[str, str]:
        """Mapping field -> topic, for every topic the mapping reads."""
        topics = {f"cameras.{view}.topic": cam.topic for view, cam in self.cameras.items()}
        topics["state.topic"] = self.state.topic
        if self.action.topic:
            topics["action.topic"] = self.action.topic
        if self.episodes.topic:
            topics["episodes.topic"] = self.episodes.topic
        return topics


def load_mapping(source: str | Path | dict, **overrides: Any) -> BagMapping:
    """A BagMapping from a YAML file (errors name the file and the field) or a plain mapping;
    ``overrides`` (e.g. fps=, task= from the command line) replace the file's values when not None."""
    values = dict(source) if isinstance(source, dict) else read_params(source)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return load_config(BagMapping, values)
    except ValueError as err:
        if isinstance(source, dict):
            raise
        raise ValueError(f"{source}: {err}") from None
