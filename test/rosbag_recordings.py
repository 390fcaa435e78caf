"""Bags made the way ``ros2 bag record`` makes them, with ``rosbags``' writer (not this package's recorder):
a rosbag2 directory (metadata.yaml + storage files), mcap or sqlite3, zstd file / message / chunk
compression, and split files (``--max-bag-size``: ``<name>_0.mcap``, ``<name>_1.mcap`` listed in one
metadata.yaml). A scripted arm recording (``SyntheticRecording``) fills them with known values, so a
test can compare the dataset frame by frame with what was written.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

NS = 1_000_000_000
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    from vla_mbpo_ros.core.data.bag_conversion import package_message_types

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(package_message_types())
    return store


@dataclass
class Message:
    topic: str
    msgtype: str
    log_ns: int
    message: Any


def write_bag(path: Path, messages: Iterable[Message], storage: str = "mcap", compression: str = "none",
              split_at_ns: int | None = None) -> Path:
    """A rosbag2 bag at ``path``. ``compression``: none | file | message (zstd, ``--compression-mode``) |
    storage (mcap chunks, zstd: ``ros2 bag record``'s default mcap preset). ``split_at_ns``: messages
    logged from then on go to a second file, as ``--max-bag-size`` does."""
    messages = sorted(messages, key=lambda m: m.log_ns)
    if split_at_ns is None:
        _write_one(path, messages, storage, compression)
        return path
    parts = [m for m in messages if m.log_ns < split_at_ns], [m for m in messages if m.log_ns >= split_at_ns]
    topics = {m.topic: m.msgtype for m in messages}
    tmp = [path.with_name(path.name + f".part{i}") for i in range(2)]
    metas = []
    for part, part_path in zip(parts, tmp):
        _write_one(part_path, part, storage, compression, topics)
        metas.append(yaml.safe_load((part_path / "metadata.yaml").read_text())["rosbag2_bagfile_information"])
    path.mkdir(parents=True)
    names = []
    for i, (part_path, meta) in enumerate(zip(tmp, metas)):
        (source,) = meta["relative_file_paths"]
        name = f"{path.name}_{i}{source[len(part_path.name):]}"  # <bag>_0.mcap, <bag>_1.mcap
        shutil.move(part_path / source, path / name)
        shutil.rmtree(part_path)
        names.append(name)
        meta["files"][0]["path"] = name
    first, second = metas
    merged = dict(first)
    merged["relative_file_paths"] = names
    merged["files"] = first["files"] + second["files"]
    merged["message_count"] = first["message_count"] + second["message_count"]
    start = first["starting_time"]["nanoseconds_since_epoch"]
    end = second["starting_time"]["nanoseconds_since_epoch"] + second["duration"]["nanoseconds"]
    merged["duration"] = {"nanoseconds": end - start}
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in second["topics_with_message_count"]}
    for entry in merged["topics_with_message_count"]:
        entry["message_count"] += counts.get(entry["topic_metadata"]["name"], 0)
    (path / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": merged}))
    return path


def _write_one(path: Path, messages: list[Message], storage: str, compression: str,
               topics: dict[str, str] | None = None) -> None:
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    store = typestore()
    writer = Writer(path, version=9, storage_plugin={"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage])
    if compression != "none":
        writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    with writer:
        connections = {}
        for topic, msgtype in (topics or {m.topic: m.msgtype for m in messages}).items():
            connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
        for m in messages:
            writer.write(connections[m.topic], m.log_ns, store.serialize_cdr(m.message, m.msgtype))


# ----------------------------------------------------------------------------------------- a scripted arm
def header(store: Any, t_ns: int, frame_id: str = "") -> Any:
    T = store.types
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // NS, nanosec=t_ns % NS), frame_id=frame_id)


def image_of(index: int, view: int, height: int, width: int) -> np.ndarray:
    """A smooth RGB image that differs per frame and view (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / width * 2 * np.pi + index * 0.3 + view)
    g = 128 + 100 * np.cos(y / height * 2 * np.pi + index * 0.2)
    b = np.full_like(r, (40 * view + 7 * index) % 256)
    return np.stack([r, g, b], axis=2).round().clip(0, 255).astype(np.uint8)


def joint_positions(t_s: float) -> np.ndarray:
    return np.array([np.sin(t_s + k) * (k + 1) * 0.1 for k in range(len(JOINTS))], dtype=np.float64)


@dataclass
class SyntheticRecording:
    """An arm recorded at known times: cameras at ``fps``, joint states at ``state_rate``, commands at
    ``fps`` slightly after each camera frame, episode events around ``episodes`` spans (seconds)."""

    fps: int = 10
    seconds: float = 3.0
    start_ns: int = 1_700_000_000 * NS
    height: int = 24
    width: int = 32
    state_rate: int = 50
    command_delay_ns: int = 20_000_000
    log_latency_ns: int = 3_000_000  # log time = stamp + latency (the recorder's receipt)
    camera_types: dict[str, str] = field(default_factory=lambda: {"head": "rgb8", "wrist": "jpeg"})
    bag_joint_names: tuple[str, ...] = tuple(f"joint_{i}" for i in range(len(JOINTS))) + ("passive",)
    command: str = "trajectory"  # trajectory | float64 | leader
    store: Any = None

    def __post_init__(self) -> None:
        self.store = self.store or typestore()

    def frame_times(self) -> list[int]:
        return [self.start_ns + round(k * NS / self.fps) for k in range(int(self.seconds * self.fps))]

    def camera_topic(self, view: str) -> str:
        kind = self.camera_types[view]
        return f"/{view}/image_raw" + ("/compressed" if kind in ("jpeg", "png") else "/compressedDepth" if kind == "depth" else "")

    def messages(self) -> list[Message]:
        T, out = self.store.types, []
        for k, t in enumerate(self.frame_times()):
            for v, (view, kind) in enumerate(self.camera_types.items()):
                msgtype, message = self.camera_message(kind, k, v, t)
                out.append(Message(self.camera_topic(view), msgtype, t + self.log_latency_ns, message))
            c = t + self.command_delay_ns
            values = self.command_values(c)
            if self.command == "trajectory":
                point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=values, velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                    time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=NS // self.fps))
                message = T["trajectory_msgs/msg/JointTrajectory"](header=header(self.store, c), joint_names=list(self.bag_joint_names[:6]), points=[point])
                out.append(Message("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", c + self.log_latency_ns, message))
            elif self.command == "float64":
                layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
                message = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=values)
                out.append(Message("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray", c, message))
        period = NS // self.state_rate
        for t in range(self.start_ns - 5 * period, self.start_ns + int(self.seconds * NS) + 5 * period, period):
            out.append(Message("/joint_states", "sensor_msgs/msg/JointState", t + self.log_latency_ns, self.joint_state(t, self.state_values(t))))
            if self.command == "leader":
                out.append(Message("/leader/joint_states", "sensor_msgs/msg/JointState", t + self.log_latency_ns,
                                   self.joint_state(t, self.command_values(t))))
        return out

    def joint_state(self, t: int, values: np.ndarray) -> Any:
        T = self.store.types
        names = list(self.bag_joint_names)
        position = np.concatenate([values, [0.5]])  # the passive joint, not in the dataset
        return T["sensor_msgs/msg/JointState"](header=header(self.store, t), name=names[::-1], position=position[::-1].copy(),
                                               velocity=np.zeros(0), effort=np.zeros(0))

    def state_values(self, t: int) -> np.ndarray:
        return joint_positions((t - self.start_ns) / NS)

    def command_values(self, t: int) -> np.ndarray:
        return joint_positions((t - self.start_ns) / NS + 0.05)

    def camera_message(self, kind: str, k: int, v: int, t: int) -> tuple[str, Any]:
        import cv2

        T = self.store.types
        rgb = image_of(k, v, self.height, self.width)
        if kind in ("rgb8", "bgr8", "mono8"):
            data = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., 0]}[kind]
            channels = 1 if kind == "mono8" else 3
            message = T["sensor_msgs/msg/Image"](header=header(self.store, t, "cam"), height=self.height, width=self.width,
                                                 encoding=kind, is_bigendian=0, step=self.width * channels,
                                                 data=np.ascontiguousarray(data).reshape(-1))
            return "sensor_msgs/msg/Image", message
        if kind == "depth":
            depth_mm = self.depth_mm(k)
            ok, png = cv2.imencode(".png", depth_mm)
            assert ok
            config = np.array([0], dtype="<i4").tobytes() + np.array([0.0, 0.0], dtype="<f4").tobytes()
            data = np.frombuffer(config + png.tobytes(), dtype=np.uint8)
            return "sensor_msgs/msg/CompressedImage", T["sensor_msgs/msg/CompressedImage"](
                header=header(self.store, t, "cam"), format="16UC1; compressedDepth png", data=data)
        ext = {"jpeg": ".jpg", "png": ".png"}[kind]
        ok, encoded = cv2.imencode(ext, rgb[..., ::-1])
        assert ok
        return "sensor_msgs/msg/CompressedImage", T["sensor_msgs/msg/CompressedImage"](
            header=header(self.store, t, "cam"), format=f"rgb8; {kind} compressed bgr8", data=encoded.reshape(-1))

    def depth_mm(self, k: int) -> np.ndarray:
        y, x = np.mgrid[0:self.height, 0:self.width]
        depth = (300 + 40 * x + 10 * y + 5 * k).astype(np.uint16)
        depth[0, 0] = 0  # invalid
        return depth

    def event(self, kind: int, t: int, task: str = "", source: str = "teleop") -> Message:
        message = self.store.types["vla_mbpo_ros/msg/EpisodeEvent"](
            header=header(self.store, t), event=kind, episode_index=-1, task=task, source=source, policy_version="")
        return Message("/vla_mbpo/episode_event", "vla_mbpo_ros/msg/EpisodeEvent", t, message)
