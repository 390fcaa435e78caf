"""Any rosbag2 recording -> LeRobotDataset v3, and dataset episodes -> a rosbag2 MCAP bag, on ``rosbags``.

``rosbags`` is pure Python (no ROS install, no rclpy): it reads rosbag2 directories (``metadata.yaml``
plus one or more split files), bare ``.mcap`` / ``.db3`` files, sqlite3 and mcap storage, zstd file,
message and chunk compression. Messages are decoded with the definitions the bag embeds (mcap always,
sqlite3 from Iron on), then the ROS 2 Jazzy type store, plus this package's own messages read from its
``msg/`` files, so an EpisodeEvent decodes in a bag that does not carry its definition.

Bag -> dataset (``convert_bag``): the mapping (``core.data.bag_mapping``) is checked against the bag's
topics and first messages before anything is written, every problem named by its field; then the bag is
read once, in log order, and frames are assembled as the mapping's docstring says and appended to the
dataset through the recorder's crash-safe ``EpisodeStore`` (so the result has this package's features and
is finetuned here like a recorded dataset). Dataset -> bag (``dataset_to_bag``): views as
``sensor_msgs/Image`` (rgb8) or ``CompressedImage`` (jpeg), the state as ``JointState``, the action as a
one-point ``JointTrajectory`` on ``/lerobot/action`` (no controller listens there: playing the bag moves
nothing), the episode's task and label as EpisodeEvents; message definitions are embedded, so Foxglove
opens it and ``ros2 bag play`` plays it. ``mapping_for_bag`` gives the mapping that converts it back.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_mbpo_ros.core.data.bag_mapping import (
    ACTION_TYPES,
    BOOL,
    CAMERA_TYPES,
    COMPRESSED_IMAGE,
    EPISODE_EVENT,
    EXECUTED_COMMAND,
    FLOAT64_ARRAY,
    IMAGE,
    JOINT_STATE,
    JOINT_TRAJECTORY,
    STATE_TYPES,
    BagMapping,
)
from vla_mbpo_ros.core.data.recording import FrameSampler, Outcome, RecordedFrame, RecordingConfig
from vla_mbpo_ros.core.robot.joints import reorder

# EpisodeEvent.event values (msg/EpisodeEvent.msg)
EVENT_START, EVENT_END, EVENT_SUCCESS, EVENT_FAILURE, EVENT_DISCARD, INTERVENTION_START, INTERVENTION_END = range(7)
_EVENT_OUTCOMES = {EVENT_END: Outcome.UNLABELLED, EVENT_SUCCESS: Outcome.SUCCESS, EVENT_FAILURE: Outcome.FAILURE,
                   EVENT_DISCARD: Outcome.DISCARD}
_NS = 1_000_000_000


# ----------------------------------------------------------------------------------------- reading a bag
def package_message_types() -> dict:
    """rosbags type definitions of this package's messages, from its ``msg/*.msg`` files."""
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    for path in sorted(_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vla_mbpo_ros/msg/{path.stem}"))
    return types


def _msg_dir() -> Path:
    source = Path(__file__).resolve().parents[3] / "msg"  # a source checkout
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory  # an installed package

    return Path(get_package_share_directory("vla_mbpo_ros")) / "msg"


def bag_typestore(connections: Sequence[Any]) -> Any:
    """A type store for the bag: its embedded definitions first, then Jazzy's and this package's types."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    types = dict(get_typestore(Stores.ROS2_JAZZY).fielddefs)
    types.update(package_message_types())
    for connection in connections:
        definition = connection.msgdef
        if definition.format == MessageDefinitionFormat.MSG and definition.data:
            types.update(get_types_from_msg(definition.data, connection.msgtype))
        elif definition.format == MessageDefinitionFormat.IDL and definition.data:
            separator = "=" * 80 + "\n"
            parts = definition.data.split(separator)[1:] if definition.data.startswith(separator) else [definition.data]
            for part in parts:
                types.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ") else part))
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


def deserialize(store: Any, raw: bytes, msgtype: str) -> Any:
    """A CDR message, ignoring bytes after its end: rmw_fastrtps pads some serialized messages (a
    JointState by 8 zero bytes, so bags recorded from DDS carry them); ROS's own deserializer ignores
    them, rosbags' ``deserialize_cdr`` refuses more than 3."""
    from rosbags.serde import SerdeError

    try:
        return store.deserialize_cdr(raw, msgtype)
    except SerdeError as err:
        if "size mismatch" not in str(err):
            raise
    msgdef = store.get_msgdef(msgtype)
    decode = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    return decode(raw[4:], 0, msgdef.cls, store)[0]


class Bag:
    """An open rosbag2 recording (directory, or a bare .mcap / .db3 file) with its type store."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not (self.path / "metadata.yaml").is_file() and self.path.suffix not in (".mcap", ".db3"):
            raise ValueError(f"bag: {self.path} is neither a rosbag2 directory (with metadata.yaml) nor a .mcap/.db3 file")
        self.reader = Reader(self.path)
        self.reader.open()
        self.store = bag_typestore(self.reader.connections)

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.reader.is_open:
            self.reader.close()

    @property
    def types(self) -> dict[str, str]:
        """topic -> message type (ROS 2 name, e.g. sensor_msgs/msg/Image)."""
        return {c.topic: c.msgtype for c in self.reader.connections}

    @property
    def start_ns(self) -> int:
        return self.reader.start_time

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        return counts

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, type, log time ns, decoded message) of ``topics``, file by file in log order."""
        wanted = [c for c in self.reader.connections if c.topic in set(topics)]
        if not wanted:
            return
        for connection, log_ns, raw in self.reader.messages(connections=wanted):
            yield connection.topic, connection.msgtype, log_ns, deserialize(self.store, raw, connection.msgtype)

    def first(self, topic: str) -> tuple[str, int, Any] | None:
        for _, msgtype, log_ns, message in self.messages([topic]):
            return msgtype, log_ns, message
        return None


@dataclass
class TopicInfo:
    topic: str
    type: str
    count: int


def bag_info(path: str | Path) -> dict[str, Any]:
    """What ``info`` prints: storage, compression, duration and every topic with its type and count."""
    with Bag(path) as bag:
        reader = bag.reader
        counts = bag.counts()
        return {
            "path": str(bag.path),
            "storage": _storage_of(bag),
            "compression": f"{reader.compression_mode} {reader.compression_format}" if reader.compression_mode else "none",
            "duration_s": reader.duration / _NS if reader.message_count else 0.0,
            "messages": reader.message_count,
            "topics": [TopicInfo(t, ty, counts[t]) for t, ty in sorted(bag.types.items())],
        }


def _storage_of(bag: Bag) -> str:
    if (bag.path / "metadata.yaml").is_file():
        import yaml

        meta = yaml.safe_load((bag.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        files = meta.get("relative_file_paths", [])
        return f"{meta.get('storage_identifier', '?')}, {len(files)} file(s)"
    return {".mcap": "mcap", ".db3": "sqlite3"}[bag.path.suffix] + ", 1 file"


def format_info(info: dict[str, Any]) -> str:
    lines = [f"bag: {info['path']}", f"storage: {info['storage']}   compression: {info['compression']}",
             f"duration: {info['duration_s']:.3f} s   messages: {info['messages']}", ""]
    width = max([len(t.topic) for t in info["topics"]] + [5])
    type_width = max([len(t.type) for t in info["topics"]] + [4])
    lines.append(f"{'topic':<{width}}  {'type':<{type_width}}  count")
    lines += [f"{t.topic:<{width}}  {t.type:<{type_width}}  {t.count}" for t in info["topics"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- messages -> values
def stamp_ns(message: Any) -> int | None:
    header = getattr(message, "header", None)
    if header is None:
        return None
    return int(header.stamp.sec) * _NS + int(header.stamp.nanosec)


_RAW_ENCODINGS = {  # encoding -> (dtype, channels, kind)
    "rgb8": (np.uint8, 3, "rgb"), "bgr8": (np.uint8, 3, "bgr"), "rgba8": (np.uint8, 4, "rgb"),
    "bgra8": (np.uint8, 4, "bgr"), "mono8": (np.uint8, 1, "mono"), "8UC1": (np.uint8, 1, "mono"),
    "8UC3": (np.uint8, 3, "bgr"), "mono16": (np.uint16, 1, "depth_mm"), "16UC1": (np.uint16, 1, "depth_mm"),
    "32FC1": (np.float32, 1, "depth_m"),
}


def image_kind(message: Any, msgtype: str) -> str:
    """'rgb', 'bgr', 'mono', 'depth_mm', 'depth_m', 'compressed' or 'compressed_depth'; ValueError for others."""
    if msgtype == COMPRESSED_IMAGE:
        return "compressed_depth" if "compresseddepth" in message.format.lower() else "compressed"
    if message.encoding not in _RAW_ENCODINGS:
        raise ValueError(f"Image encoding {message.encoding!r} is not supported; supported: {sorted(_RAW_ENCODINGS)}")
    return _RAW_ENCODINGS[message.encoding][2]


def image_to_rgb(message: Any, msgtype: str, depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image or CompressedImage message; depth images (16UC1 mm, 32FC1 m,
    compressedDepth) are scaled from ``depth_range`` metres onto 0..255 (invalid depth: 0)."""
    kind = image_kind(message, msgtype)
    if kind in ("compressed", "compressed_depth"):
        array = _decode_compressed(message, kind)
        if kind == "compressed":
            return array
        return _depth_to_rgb(array, depth_range)
    dtype, channels, _ = _RAW_ENCODINGS[message.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if message.is_bigendian else "<")
    row_items = message.step // dtype.itemsize
    if message.step % dtype.itemsize or row_items < message.width * channels:
        raise ValueError(f"Image step {message.step} is too small for width {message.width} x {channels} x {dtype.itemsize} B")
    flat = np.frombuffer(np.asarray(message.data, dtype=np.uint8), dtype=dtype, count=message.height * row_items)
    image = flat.reshape(message.height, row_items)[:, : message.width * channels].reshape(message.height, message.width, channels)
    if kind == "rgb":
        return np.ascontiguousarray(image[..., :3])
    if kind == "bgr":
        return np.ascontiguousarray(image[..., 2::-1])
    if kind == "mono":
        return np.repeat(image, 3, axis=2)
    depth = image[..., 0].astype(np.float32) * (0.001 if kind == "depth_mm" else 1.0)
    return _depth_to_rgb(depth, depth_range)


def _decode_compressed(message: Any, kind: str) -> np.ndarray:
    import cv2

    data = np.asarray(message.data, dtype=np.uint8)
    if kind == "compressed":
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # BGR whatever the source (jpeg/png, colour or mono)
        if image is None:
            raise ValueError(f"CompressedImage ({message.format!r}) could not be decoded")
        return np.ascontiguousarray(image[..., ::-1])
    # compressed_depth_image_transport: a 12-byte header (int32 format, float32 depthQuantA, depthQuantB), then PNG.
    fmt = message.format.lower()
    if "rvl" in fmt:
        raise ValueError(f"CompressedImage format {message.format!r}: RVL depth is not supported (use png)")
    quant_a, quant_b = np.frombuffer(data[4:12].tobytes(), dtype="<f4")
    png = cv2.imdecode(data[12:], cv2.IMREAD_UNCHANGED)
    if png is None:
        raise ValueError(f"CompressedImage ({message.format!r}) could not be decoded")
    if fmt.startswith("32fc1"):  # inverse depth, quantized: depth = A / (value - B); 0 = invalid
        value = png.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(value > 0, quant_a / (value - quant_b), np.nan).astype(np.float32)
    return png.astype(np.float32) * 0.001  # 16UC1: millimetres


def _depth_to_rgb(depth_m: np.ndarray, depth_range: tuple[float, float] | None) -> np.ndarray:
    if depth_range is None:
        raise ValueError("a depth image needs depth_range: [near, far] (metres mapped onto 0..255)")
    near, far = depth_range
    valid = np.isfinite(depth_m) & (depth_m > 0)
    scaled = np.where(valid, np.clip((depth_m - near) / (far - near), 0.0, 1.0) * 255.0, 0.0)
    gray = np.round(scaled).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def joint_values(message: Any, msgtype: str, joints: Sequence[str], rename: dict[str, str], order: Sequence[str],
                 what: str) -> np.ndarray:
    """The joint vector of a state/command message in ``joints`` order (float64); ValueError names ``what``."""
    if msgtype == FLOAT64_ARRAY:
        data = np.asarray(message.data, dtype=np.float64)
        if len(data) != len(order):
            raise ValueError(f"{what}: Float64MultiArray has {len(data)} values, action.joints names {len(order)}")
        return reorder(list(order), data, joints, what)
    if msgtype == JOINT_TRAJECTORY:
        if not message.points:
            raise ValueError(f"{what}: JointTrajectory without points")
        names, values = message.joint_names, message.points[0].positions
    elif msgtype == EXECUTED_COMMAND:
        names, values = message.joint_names, message.positions
    else:  # JointState
        names, values = message.name, message.position
    return reorder([rename.get(n, n) for n in names], np.asarray(values, dtype=np.float64), joints, what)


# ----------------------------------------------------------------------------------------- checking a mapping
def check_mapping(mapping: BagMapping, bag: Bag) -> dict[str, tuple[int, int]]:
    """Every problem of ``mapping`` against ``bag`` in one ValueError, each named by its field: a topic
    the bag lacks, a topic of the wrong type, joints its first message lacks, a camera that does not
    decode. Returns each view's (height, width)."""
    types = bag.types
    problems: list[str] = []
    allowed = {f"cameras.{v}.topic": CAMERA_TYPES for v in mapping.views}
    allowed["state.topic"] = STATE_TYPES
    allowed["action.topic"] = ACTION_TYPES
    for where, topic in mapping.topics().items():
        if topic not in types:
            problems.append(f"{where}: {topic} is not in the bag")
        elif where in allowed and types[topic] not in allowed[where]:
            problems.append(f"{where}: {topic} is {types[topic]}, expected {' or '.join(allowed[where])}")
    if problems:
        width = max(len(t) for t in types)
        listing = "\n".join(f"  {t:<{width}}  {ty}" for t, ty in sorted(types.items()))
        raise ValueError("the mapping does not fit the bag:\n- " + "\n- ".join(problems) + f"\nthe bag's topics:\n{listing}")
    sizes: dict[str, tuple[int, int]] = {}
    for view, camera in mapping.cameras.items():
        msgtype, _, message = bag.first(camera.topic) or (None, 0, None)
        if message is None:
            problems.append(f"cameras.{view}.topic: {camera.topic} has no messages")
            continue
        try:
            kind = image_kind(message, msgtype)
            if kind.startswith(("depth", "compressed_depth")) and camera.depth_range is None:
                raise ValueError(f"{camera.topic} carries depth ({getattr(message, 'encoding', message.format)}): "
                                 "set depth_range: [near, far] in metres")
            sizes[view] = image_to_rgb(message, msgtype, camera.depth_range).shape[:2]
        except ValueError as err:
            problems.append(f"cameras.{view}: {err}")
    state = mapping.state
    first = bag.first(state.topic)
    if first is None:
        problems.append(f"state.topic: {state.topic} has no messages")
    else:
        try:
            joint_values(first[2], first[0], state.joints, state.rename, (), "state.joints")
        except ValueError as err:
            problems.append(str(err))
    action = mapping.action
    if action.topic and (first := bag.first(action.topic)) is not None:
        try:
            joint_values(first[2], first[0], state.joints, action.rename, action.joints or state.joints, "action")
        except ValueError as err:
            problems.append(str(err))
    elif action.topic:
        problems.append(f"action.topic: {action.topic} has no messages")
    if mapping.time == "header":
        for where, topic in mapping.topics().items():
            first = bag.first(topic)
            if first is not None and stamp_ns(first[2]) == 0:
                problems.append(f"{where}: {topic} has unstamped headers (stamp 0): use time: log")
    if mapping.image_size is None and len(set(sizes.values())) > 1:
        problems.append(f"image_size: the views have different sizes {sizes}; set image_size: [height, width] to resize them to one")
    if problems:
        raise ValueError("the mapping does not fit the bag:\n- " + "\n- ".join(problems))
    return sizes


# ----------------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeSpan:
    start_ns: int
    end_ns: int
    task: str
    source: str
    outcome: Outcome = Outcome.UNLABELLED
    interventions: list[tuple[int, int]] = field(default_factory=list)

    def intervened(self, t: int) -> bool:
        return any(a <= t <= b for a, b in self.interventions)


def episode_spans(mapping: BagMapping, bag: Bag) -> list[EpisodeSpan]:
    """The episodes of the bag, in time order (the mapping's time base; messages without a header: log time)."""
    end_of_bag = 2**63 - 1  # an episode never ended runs to the end of the recording
    split = mapping.episodes
    if split.ranges:
        return [EpisodeSpan(bag.start_ns + round(a * _NS), bag.start_ns + round(b * _NS), mapping.task, mapping.source)
                for a, b in split.ranges]
    if not split.topic:
        return [EpisodeSpan(0, end_of_bag, mapping.task, mapping.source)]
    spans: list[EpisodeSpan] = []
    open_span: EpisodeSpan | None = None
    intervention_start: int | None = None
    cuts: list[int] = []
    for _, msgtype, log_ns, message in bag.messages([split.topic]):
        t = _time_of(message, log_ns, mapping.time)
        if msgtype == EPISODE_EVENT:
            if message.event == EVENT_START:
                if open_span is not None:  # started again without an end: the earlier one ends here, unlabelled
                    open_span.end_ns = t - 1
                open_span = EpisodeSpan(t, end_of_bag, message.task or mapping.task, message.source or mapping.source)
                spans.append(open_span)
            elif message.event in _EVENT_OUTCOMES and open_span is not None:
                open_span.end_ns, open_span.outcome = t, _EVENT_OUTCOMES[message.event]
                open_span.task = message.task or open_span.task
                open_span = None
            elif message.event == INTERVENTION_START:
                intervention_start = t
            elif message.event == INTERVENTION_END and intervention_start is not None and spans:
                spans[-1].interventions.append((intervention_start, t))
                intervention_start = None
        elif msgtype == BOOL:
            if message.data and open_span is None:
                open_span = EpisodeSpan(t, end_of_bag, mapping.task, mapping.source)
                spans.append(open_span)
            elif not message.data and open_span is not None:
                open_span.end_ns, open_span = t, None
        else:
            cuts.append(t)
    if cuts:  # a marker of another type: every message ends one episode and starts the next
        edges = [0, *cuts, end_of_bag]
        spans = [EpisodeSpan(a, b - 1, mapping.task, mapping.source) for a, b in zip(edges, edges[1:])]
    return [s for s in spans if s.outcome is not Outcome.DISCARD]


def _time_of(message: Any, log_ns: int, base: str) -> int:
    if base == "header":
        stamp = stamp_ns(message)
        if stamp is not None:
            return stamp
    return log_ns


# ----------------------------------------------------------------------------------------- assembling frames
class RecentMessages:
    """Recent messages of one topic, kept in time order."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.items: list[tuple[Any, str]] = []
        self.latest = -(2**63)

    def add(self, t: int, message: Any, msgtype: str) -> None:
        i = bisect.bisect_right(self.times, t)
        self.times.insert(i, t)
        self.items.insert(i, (message, msgtype))
        self.latest = max(self.latest, t)

    def nearest(self, t: int, tolerance: int) -> tuple[int, Any, str] | None:
        i = bisect.bisect_left(self.times, t)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.times)), key=lambda j: abs(self.times[j] - t), default=None)
        if best is None or abs(self.times[best] - t) > tolerance:
            return None
        return (self.times[best], *self.items[best])

    def first_after(self, t: int, max_delay: int) -> tuple[int, Any, str] | None:
        i = bisect.bisect_left(self.times, t)
        if i == len(self.times) or self.times[i] - t > max_delay:
            return None
        return (self.times[i], *self.items[i])

    def forget_before(self, t: int) -> None:
        """Drop what no frame at or after ``t`` can use (keeps the last message before ``t``)."""
        i = max(0, bisect.bisect_left(self.times, t) - 1)
        del self.times[:i], self.items[:i]


@dataclass
class ConversionReport:
    episodes: list[int] = field(default_factory=list)  # dataset indices written
    frames: int = 0
    messages: int = 0
    seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> frames
    empty_episodes: int = 0  # spans with no frame (not written)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def summary(self) -> str:
        drops = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return (f"{len(self.episodes)} episode(s) {self.episodes}, {self.frames} frames from {self.messages} messages "
                f"in {self.seconds:.1f} s ({self.frames / max(self.seconds, 1e-9):.1f} frames/s, the dataset library's "
                f"start not counted); dropped frames: {drops}"
                + (f"; {self.empty_episodes} episode(s) without frames skipped" if self.empty_episodes else ""))


def recording_config(mapping: BagMapping, image_size: tuple[int, int]) -> RecordingConfig:
    """The dataset layout a mapping gives (the recorder's features, so it trains here unchanged)."""
    return RecordingConfig(repo_id=mapping.repo_id, fps=mapping.fps, views=mapping.views, image_size=image_size,
                           joint_names=mapping.state.joints, robot_type=mapping.robot_type, use_videos=mapping.use_videos,
                           video_codec=mapping.video_codec, min_free_disk_mb=0.0)


def convert_bag(bag_path: str | Path, mapping: BagMapping, output: str | Path,
                progress: Callable[[str], None] | None = None) -> ConversionReport:
    """Append the bag's episodes to the LeRobotDataset at ``output`` (created if absent; an existing
    one must have the same features). Raises ValueError, before writing anything, when the mapping
    does not fit the bag."""
    from vla_mbpo_ros.core.data.episode_store import EpisodeStore
    from vla_mbpo_ros.core.util.images import resize_uint8

    report = ConversionReport()
    with Bag(bag_path) as bag:
        sizes = check_mapping(mapping, bag)
        image_size = tuple(mapping.image_size or sizes[mapping.views[0]])
        spans = episode_spans(mapping, bag)
        if not spans:
            raise ValueError(f"episodes.topic: {mapping.episodes.topic} marks no episode in {bag_path}")
        config = recording_config(mapping, image_size)
        if not mapping.task and any(not s.task for s in spans):
            raise ValueError("task: the episodes have no task text (set task:, or record EpisodeEvents with one)")
        store = EpisodeStore(output, config)
        began = time.perf_counter()  # from here: LeRobot's import (10-20 s, once per process) is not conversion
        writer = _EpisodeWriter(store, report, progress)
        try:
            for frame, span in assemble_frames(bag, mapping, spans, report):
                images = {v: resize_uint8(frame.images[v][None], image_size)[0] for v in mapping.views}
                frame.images = images
                writer.add(span, frame)
            writer.finish()
        finally:
            store.close()
        report.empty_episodes = len(spans) - len(report.episodes)
    report.seconds = time.perf_counter() - began
    return report


class _EpisodeWriter:
    """Opens, fills and saves one dataset episode per span as frames arrive in time order."""

    def __init__(self, store: Any, report: ConversionReport, progress: Callable[[str], None] | None) -> None:
        self.store, self.report, self.progress = store, report, progress
        self.span: EpisodeSpan | None = None

    def add(self, span: EpisodeSpan, frame: RecordedFrame) -> None:
        if span is not self.span:
            self.finish()
            self.store.begin(span.task, span.source)
            self.span = span
        self.store.add(frame)
        self.report.frames += 1

    def finish(self) -> None:
        if self.span is None:
            return
        saved = self.store.save(self.span.outcome)
        self.report.episodes.append(saved.index)
        if self.progress:
            self.progress(f"episode {saved.index}: {saved.frames} frames ({saved.outcome.value}), {self.report.frames} frames so far")
        self.span = None


def assemble_frames(bag: Bag, mapping: BagMapping, spans: list[EpisodeSpan], report: ConversionReport) -> Iterator[tuple[RecordedFrame, EpisodeSpan]]:
    """Frames of every span, in time order (see core.data.bag_mapping for the rules)."""
    views = mapping.views
    clock_topic = mapping.cameras[views[0]].topic
    observed = {mapping.cameras[v].topic: f"cameras.{v}" for v in views[1:]}
    observed[mapping.state.topic] = "state"
    action = mapping.action
    streams = {topic: RecentMessages() for topic in [*observed, *([action.topic] if action.topic else [])]}
    tolerance, max_delay = round(mapping.tolerance_s * _NS), round(mapping.max_action_delay_s * _NS)
    pending: deque[tuple[int, Any, str, EpisodeSpan]] = deque()
    max_pending = 4 * mapping.fps  # frames waiting for slower streams; beyond, the oldest is decided with what is there
    sampler, sampler_span = FrameSampler(mapping.fps), None
    previous: list[tuple[RecordedFrame, EpisodeSpan]] = []  # next_state: a frame waits for its successor
    span_starts = [s.start_ns for s in spans]
    joints = mapping.state.joints
    cameras = mapping.cameras

    def span_of(t: int) -> EpisodeSpan | None:
        i = bisect.bisect_right(span_starts, t) - 1
        return spans[i] if i >= 0 and t <= spans[i].end_ns else None

    def ready(t: int) -> bool:
        return all(stream.latest >= t for stream in streams.values())

    def decide(t: int, clock_message: Any, clock_type: str, span: EpisodeSpan) -> RecordedFrame | None:
        picks = {}
        for topic, what in observed.items():
            pick = streams[topic].nearest(t, tolerance)
            if pick is None:
                report.drop(f"without {what} within tolerance")
                return None
            picks[topic] = pick
        command = None
        if action.topic:
            command = streams[action.topic].first_after(t, max_delay)
            if command is None:
                report.drop("without an action within max_delay")
                return None
        try:
            images = {views[0]: image_to_rgb(clock_message, clock_type, cameras[views[0]].depth_range)}
            for view in views[1:]:
                _, message, msgtype = picks[cameras[view].topic]
                images[view] = image_to_rgb(message, msgtype, cameras[view].depth_range)
            _, message, msgtype = picks[mapping.state.topic]
            state = joint_values(message, msgtype, joints, mapping.state.rename, (), "state")
            action_values, command_t = state, t
            if command is not None:
                command_t, message, msgtype = command
                action_values = joint_values(message, msgtype, joints, action.rename, action.joints or joints, "action")
        except ValueError as err:
            report.drop(f"undecodable ({err})")
            return None
        return RecordedFrame(images=images, state=state, action=action_values, obs_stamp=t / _NS,
                             command_stamp=command_t / _NS, intervention=span.intervened(t), command_source=span.source)

    def emit(final: bool) -> Iterator[tuple[RecordedFrame, EpisodeSpan]]:
        while pending and (final or ready(pending[0][0]) or len(pending) > max_pending):
            t, message, msgtype, span = pending.popleft()
            frame = decide(t, message, msgtype, span)
            if frame is None:
                continue
            if not action.next_state:
                yield frame, span
                continue
            if previous and previous[0][1] is span:  # the earlier frame's action is this frame's state
                earlier, _ = previous.pop()
                earlier.action, earlier.command_stamp = frame.state, frame.obs_stamp
                yield earlier, span
            elif previous:
                previous.pop()
                report.drop("last of its episode (no next state)")
            previous.append((frame, span))
        horizon = (pending[0][0] if pending else clock_t) - max(tolerance, 1)
        for stream in streams.values():
            stream.forget_before(horizon)

    clock_t = -(2**63)  # the latest frame time seen: no later frame needs anything older
    for topic, msgtype, log_ns, message in bag.messages([clock_topic, *streams]):
        report.messages += 1
        t = _time_of(message, log_ns, mapping.time)
        if topic == clock_topic:
            clock_t = max(clock_t, t)
            span = span_of(t)
            if span is None:
                continue
            if span is not sampler_span:
                sampler, sampler_span = FrameSampler(mapping.fps), span
            if sampler.accept(t):
                pending.append((t, message, msgtype, span))
        if topic in streams:
            streams[topic].add(t, message, msgtype)
        yield from emit(final=False)
    yield from emit(final=True)
    if previous:
        report.drop("last of its episode (no next state)")


# ----------------------------------------------------------------------------------------- dataset -> bag
ACTION_TOPIC = "/lerobot/action"
STATE_TOPIC = "/joint_states"
EVENT_TOPIC = "/vla_mbpo/episode_event"


def camera_topic(view: str, compressed: bool) -> str:
    return f"/cameras/{view}/image_raw" + ("/compressed" if compressed else "")


def mapping_for_bag(views: Sequence[str], joints: Sequence[str], fps: int, compressed: bool, use_videos: bool = True) -> dict:
    """The mapping that converts a bag written by ``dataset_to_bag`` back into a dataset."""
    return {
        "fps": int(fps),
        "time": "header",
        "cameras": {view: {"topic": camera_topic(view, compressed)} for view in views},
        "state": {"topic": STATE_TOPIC, "joints": list(joints)},
        "action": {"topic": ACTION_TOPIC},
        "episodes": {"topic": EVENT_TOPIC},
        "use_videos": bool(use_videos),
    }


def dataset_features(root: str | Path) -> tuple[list[str], list[str], int, bool]:
    """(views, joint names, fps, use_videos) of the LeRobotDataset at ``root``."""
    import json

    info = json.loads((Path(root) / "meta" / "info.json").read_text())
    features = info["features"]
    views = [k.removeprefix("observation.images.") for k, f in features.items()
             if k.startswith("observation.images.") and f["dtype"] in ("video", "image")]
    names = features.get("observation.state", {}).get("names")
    if isinstance(names, dict):  # LeRobot's {"motors": [...]} form
        names = next(iter(names.values()))
    size = features.get("observation.state", {}).get("shape", [0])[0]
    joints = list(names) if names and len(names) == size else [f"joint_{i}" for i in range(size)]
    use_videos = any(f["dtype"] == "video" for f in features.values())
    return views, joints, int(info["fps"]), use_videos


def dataset_to_bag(root: str | Path, out: str | Path, episodes: Sequence[int] | None = None, compressed: bool = False,
                   storage: str = "mcap", repo_id: str = "local/vla_mbpo", jpeg_quality: int = 95) -> dict:
    """Write dataset episodes (all, or ``episodes``) into the rosbag2 bag directory ``out``, one after the
    other; returns the mapping that converts the bag back (``mapping_for_bag``)."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from vla_mbpo_ros.core.data.reader import open_dataset, read_episodes

    views, joints, fps, use_videos = dataset_features(root)
    if not views or not joints:
        raise ValueError(f"dataset at {root}: needs observation.images.* and observation.state features to make a bag")
    dataset = open_dataset(root, repo_id, episodes)
    stamps = _dataset_stamps(dataset)
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(package_message_types())
    T = store.types
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    writer = Writer(out, version=9, storage_plugin=plugin)
    image_type = COMPRESSED_IMAGE if compressed else IMAGE
    with writer:
        connections = {view: writer.add_connection(camera_topic(view, compressed), image_type, typestore=store) for view in views}
        state_conn = writer.add_connection(STATE_TOPIC, JOINT_STATE, typestore=store)
        action_conn = writer.add_connection(ACTION_TOPIC, JOINT_TRAJECTORY, typestore=store)
        event_conn = writer.add_connection(EVENT_TOPIC, EPISODE_EVENT, typestore=store)

        def put(connection: Any, msgtype: str, message: Any, t: int) -> None:
            writer.write(connection, t, store.serialize_cdr(message, msgtype))

        def header(t: int, frame_id: str = "") -> Any:
            return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // _NS, nanosec=t % _NS), frame_id=frame_id)

        def event(kind: int, t: int, episode: Any) -> Any:
            return T[EPISODE_EVENT](header=header(t), event=kind, episode_index=episode.index, task=episode.instruction,
                                    source=episode.source, policy_version="")

        end = -(2**63)
        for episode in read_episodes(dataset, views):
            obs_t, cmd_t = stamps(episode.index, len(episode.actions), fps)
            # Episodes keep their recorded times; ones on the dataset's clock (each from 0) follow a second apart.
            shift = 0 if obs_t[0] > end else end - int(obs_t[0]) + _NS
            obs_t, cmd_t = obs_t + shift, cmd_t + shift
            put(event_conn, EPISODE_EVENT, event(EVENT_START, int(obs_t[0]), episode), int(obs_t[0]))
            for i in range(len(episode.actions)):
                t, c = int(obs_t[i]), int(cmd_t[i])
                for view in views:
                    rgb = episode.views[view][i]
                    if compressed:
                        ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                        message = T[COMPRESSED_IMAGE](header=header(t, view), format="rgb8; jpeg compressed bgr8",
                                                      data=np.asarray(data, dtype=np.uint8).reshape(-1))
                    else:
                        height, width = rgb.shape[:2]
                        message = T[IMAGE](header=header(t, view), height=height, width=width, encoding="rgb8",
                                           is_bigendian=0, step=width * 3, data=np.ascontiguousarray(rgb).reshape(-1))
                    put(connections[view], image_type, message, t)
                state = T[JOINT_STATE](header=header(t), name=list(joints), position=episode.states[i].astype(np.float64),
                                       velocity=np.zeros(0), effort=np.zeros(0))
                put(state_conn, JOINT_STATE, state, t)
                point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=episode.actions[i].astype(np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
                    effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=_NS // fps))
                put(action_conn, JOINT_TRAJECTORY, T[JOINT_TRAJECTORY](header=header(c), joint_names=list(joints), points=[point]), c)
            end = int(max(obs_t[-1], cmd_t[-1])) + 1
            label = {None: EVENT_END, True: EVENT_SUCCESS, False: EVENT_FAILURE}[episode.success]
            put(event_conn, EPISODE_EVENT, event(label, end, episode), end)
    return mapping_for_bag(views, joints, fps, compressed, use_videos)


def _dataset_stamps(dataset: Any) -> Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]:
    """(episode, frames, fps) -> observation and command times (ns) of its frames: the recorder's
    ``obs_stamp`` / ``command_stamp`` where the dataset has them, else its timestamps."""
    from vla_mbpo_ros.core.data.recording import COMMAND_STAMP_KEY, OBS_STAMP_KEY

    columns = dataset.hf_dataset.with_format("numpy")
    index = np.asarray(columns["episode_index"]).reshape(-1)
    timestamp = np.asarray(columns["timestamp"], dtype=np.float64).reshape(-1)
    has_stamps = OBS_STAMP_KEY in dataset.features and COMMAND_STAMP_KEY in dataset.features
    obs = np.asarray(columns[OBS_STAMP_KEY], dtype=np.float64).reshape(-1) if has_stamps else timestamp
    cmd = np.asarray(columns[COMMAND_STAMP_KEY], dtype=np.float64).reshape(-1) if has_stamps else timestamp

    def stamps(episode: int, frames: int, fps: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(index == episode)
        assert len(rows) == frames, (len(rows), frames)
        o, c = np.round(obs[rows] * _NS).astype(np.int64), np.round(cmd[rows] * _NS).astype(np.int64)
        if np.any(np.diff(o) <= 0) or np.any(c < o):  # not the recorder's stamps: the dataset's clock
            o = c = np.round(timestamp[rows] * _NS).astype(np.int64)
        return o, c

    return stamps
