"""Raw recording of an episode's ROS topics to MCAP (rosbag2's storage format), and back to a dataset.

The recorder optionally writes, next to the LeRobotDataset, one MCAP file per saved episode with
the raw topics (cameras, joint states, gated commands, events) exactly as they crossed DDS: the
serialized CDR bytes of each message, untouched, with the ROS 2 message definition as schema
(``ros2msg`` / ``cdr``, profile ``ros2``: what ``rosbag2_storage_mcap`` writes, so ``ros2 bag
play <file>.mcap``, Foxglove and the ``mcap`` CLI read it). The episode's label is appended as an
EpisodeEvent when it is saved.

Crash safety matches the dataset's: an episode is written to ``episode_<index>.mcap.partial``
and renamed to ``.mcap`` only once finished and fsynced; a discarded episode leaves nothing, and
``.partial`` files left by a killed recorder are removed when it starts again.

``python -m vla_mbpo_ros.bag to-dataset OUT BAG...`` rebuilds a LeRobotDataset from such bags with
the recorder's own pipeline (observation sync, frame pairing, sampling at the dataset fps, the
crash-safe store), so it has the same features as the dataset recorded live.

Any other rosbag2 recording (``ros2 bag record``: a directory, split files, mcap or sqlite3, zstd)
converts with a small YAML mapping of topics to features (core/data/bag_mapping.py,
core/data/bag_conversion.py; docs/lerobot_ros2.md)::

    python -m vla_mbpo_ros.bag info BAG                          # topics, types, counts
    python -m vla_mbpo_ros.bag to-lerobot BAG MAPPING.yaml OUT   # bag -> LeRobotDataset v3
    python -m vla_mbpo_ros.bag to-bag DATASET OUT_BAG            # dataset episodes -> rosbag2 MCAP
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla_mbpo_ros.core.data.recording import Outcome
from vla_mbpo_ros.core.util.durable import fsync_path
from vla_mbpo_ros.core.util.worker import SerialWorker

SUFFIX = ".mcap"
PARTIAL = ".mcap.partial"
EVENT_TOPIC = "/vla_mbpo/episode_event"
_SEPARATOR = "=" * 80


def message_class(type_name: str) -> Any:
    """``sensor_msgs/msg/Image`` -> the generated Python class."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def type_name_of(msg_class: Any) -> str:
    module = msg_class.__module__.split(".")  # sensor_msgs.msg._image
    return f"{module[0]}/{module[1]}/{msg_class.__name__}"


def message_definition(type_name: str) -> str:
    """The full ``ros2msg`` definition (the type's .msg text followed by every type it uses, each
    after a separator line and ``MSG: pkg/msg/Type``), read from the packages' share directories."""
    from ament_index_python.packages import get_package_share_directory

    def text_of(name: str) -> str:
        package, _, type_ = name.split("/")
        return (Path(get_package_share_directory(package)) / "msg" / f"{type_}.msg").read_text()

    def dependencies(name: str, text: str) -> list[str]:
        package = name.split("/")[0]
        found = []
        for line in text.splitlines():
            tokens = line.split("#", 1)[0].split()
            if len(tokens) < 2 or "=" in "".join(tokens[1:]):  # blank, comment or constant
                continue
            field_type = re.sub(r"\[.*\]$", "", tokens[0])
            if field_type in _PRIMITIVES or field_type.startswith(("string<=", "wstring<=")):
                continue
            if field_type == "Header":
                found.append("std_msgs/msg/Header")
            elif "/" in field_type:
                found.append(field_type if field_type.count("/") == 2 else field_type.replace("/", "/msg/"))
            else:
                found.append(f"{package}/msg/{field_type}")
        return found

    parts, seen, pending = [text_of(type_name)], {type_name}, dependencies(type_name, text_of(type_name))
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        text = text_of(name)
        parts.append(f"{_SEPARATOR}\nMSG: {name}\n{text}")
        pending += dependencies(name, text)
    return "\n".join(part.rstrip("\n") for part in parts) + "\n"


_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string", "wstring"}


class EpisodeBag:
    """MCAP files of one episode at a time in ``directory`` (see the module docstring). Not thread-safe."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.removed_partials = [p.name for p in self.directory.glob(f"*{PARTIAL}")]
        for path in self.directory.glob(f"*{PARTIAL}"):
            path.unlink()  # a killed recorder's unfinished episode: the dataset dropped it too
        self._file = None
        self._writer = None
        self._path: Path | None = None
        self._channels: dict[str, int] = {}
        self._schemas: dict[str, int] = {}
        self._count = 0

    @property
    def recording(self) -> bool:
        return self._writer is not None

    def begin(self, index: int) -> None:
        from mcap.writer import CompressionType, Writer

        if self._writer is not None:
            raise RuntimeError("an episode bag is already open")
        self._path = self.directory / f"episode_{index:06d}{PARTIAL}"
        self._file = open(self._path, "wb")
        # LZ4: fast enough for camera streams on a small CPU; zstd compresses better but costs more.
        self._writer = Writer(self._file, compression=CompressionType.LZ4)
        self._writer.start(profile="ros2", library="vla_mbpo_ros")
        self._channels, self._schemas, self._count = {}, {}, 0

    def write(self, topic: str, type_name: str, data: bytes, log_time_ns: int) -> None:
        """One serialized message (CDR bytes as received) on ``topic``."""
        if self._writer is None:
            return
        channel = self._channels.get(topic)
        if channel is None:
            schema = self._schemas.get(type_name)
            if schema is None:
                schema = self._writer.register_schema(type_name, "ros2msg", message_definition(type_name).encode())
                self._schemas[type_name] = schema
            channel = self._writer.register_channel(topic, "cdr", schema)
            self._channels[topic] = channel
        self._writer.add_message(channel, log_time=log_time_ns, data=bytes(data), publish_time=log_time_ns, sequence=self._count)
        self._count += 1

    def save(self) -> Path:
        """Finish, fsync and rename the episode's file into place; returns its path."""
        assert self._writer is not None and self._path is not None
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._path.with_name(self._path.name.removesuffix(PARTIAL) + SUFFIX)
        os.replace(self._path, final)
        fsync_path(final.parent)
        self._writer = self._file = self._path = None
        return final

    def discard(self) -> None:
        if self._writer is None:
            return
        self._file.close()
        self._path.unlink(missing_ok=True)
        self._writer = self._file = self._path = None

    def close(self) -> None:
        self.discard()  # an episode still open at shutdown was not saved: no trace


class BagRecorder:
    """An ``EpisodeBag`` written on a thread of its own: a subscription callback only queues the
    bytes, and the dataset writer never waits behind the bag (or the bag behind video encoding)."""

    def __init__(self, directory: str | Path) -> None:
        self.bag = EpisodeBag(directory)
        self._writer = SerialWorker("bag_writer")
        self._open = False  # read in callbacks without a lock: a stale read costs one message at a boundary

    def begin(self, index: int) -> None:
        self._writer.call(lambda: self.bag.begin(index))
        self._open = True

    def offer(self, topic: str, type_name: str, data: bytes, log_time_ns: int) -> None:
        if self._open:
            self._writer.submit(lambda: self.bag.write(topic, type_name, data, log_time_ns))

    def stop(self) -> None:
        """Take no more messages (the episode ended); ``save`` or ``discard`` follows."""
        self._open = False

    def save(self, label: tuple[str, str, bytes, int] | None, timeout: float | None = None) -> Path:
        """Append ``label`` (topic, type, serialized message, time) and save; blocks until durable."""
        self._open = False

        def finish() -> Path:
            if label is not None:
                self.bag.write(*label)
            return self.bag.save()

        return self._writer.call(finish, timeout)

    def discard(self, timeout: float | None = None) -> None:
        self._open = False
        self._writer.call(self.bag.discard, timeout)

    def close(self, timeout: float | None = None) -> None:
        self._open = False
        self._writer.close(last=self.bag.close, timeout=timeout)


@dataclass
class BagMessage:
    topic: str
    log_time: float  # seconds
    message: Any


def read_bag(path: str | Path, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
    """The messages of an MCAP file of ROS 2 CDR messages, deserialized, in log-time order."""
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message

    classes: dict[str, Any] = {}
    with open(path, "rb") as stream:
        for schema, channel, message in make_reader(stream).iter_messages(topics=topics, log_time_order=True):
            cls = classes.get(schema.name) or classes.setdefault(schema.name, message_class(schema.name))
            yield BagMessage(channel.topic, message.log_time * 1e-9, deserialize_message(message.data, cls))


_OUTCOMES = {"SUCCESS": Outcome.SUCCESS, "FAILURE": Outcome.FAILURE, "END": Outcome.UNLABELLED}


def bag_to_dataset(bags: Sequence[Path], root: Path, config: Any, views: Sequence[str], slop: float = 0.02,
                   queue_size: int = 10, camera_topic: str = "/cameras/{view}/image_raw",
                   joint_state_topic: str = "/joint_states", command_topic: str = "/vla_mbpo/executed_command") -> list[int]:
    """Append one episode per bag to the LeRobotDataset at ``root`` (created with ``config``, a
    RecordingConfig): the raw streams go through the recorder's own pipeline (synchronization, then
    core.data.EpisodeFrames). Returns the new episode indices; a bag without a label event is saved
    unlabelled. A bag has no receipt time of a synchronized set, so no observation is too old here."""
    from vla_mbpo_ros.conversions import image_to_numpy, stamp_to_seconds, to_rgb
    from vla_mbpo_ros.core.data.episode import Observation, RunningEpisode
    from vla_mbpo_ros.core.data.episode_frames import EpisodeFrames
    from vla_mbpo_ros.core.data.episode_store import EpisodeStore
    from vla_mbpo_ros.core.data.sync import ApproximateTimeSync
    from vla_mbpo_ros.core.robot.joints import reorder
    from vla_mbpo_ros.msg import EpisodeEvent

    event_names = {getattr(EpisodeEvent, name): name for name in ("START", "END", "SUCCESS", "FAILURE", "DISCARD")}
    store = EpisodeStore(root, config)
    topics = {camera_topic.format(view=v): v for v in views}
    indices = []
    try:
        for bag in bags:
            sync = ApproximateTimeSync([*views, "joint_state"], slop=slop, queue_size=queue_size, reference=views[0])
            episode = EpisodeFrames(config, error=lambda message, bag=bag: print(f"{bag.name}: {message}", file=sys.stderr))
            episode.begin(RunningEpisode(-1, "", "", 0.0), stamp=float("-inf"))  # the bag holds the episode
            task, source, outcome = "", "", Outcome.UNLABELLED
            frames = []
            for item in read_bag(bag, [*topics, joint_state_topic, command_topic, EVENT_TOPIC]):
                msg = item.message
                if item.topic == EVENT_TOPIC:
                    name = event_names.get(msg.event, "")
                    task, source = msg.task or task, msg.source or source
                    outcome = _OUTCOMES.get(name, outcome)
                    continue
                if item.topic == command_topic:
                    frames += episode.add_command(stamp_to_seconds(msg.header.stamp), msg)
                    continue
                stream = topics.get(item.topic, "joint_state")
                for matched in sync.add(stream, stamp_to_seconds(msg.header.stamp), msg, item.log_time):
                    def decode(items=matched.items) -> Observation:
                        images = {v: to_rgb(image_to_numpy(items[v]), items[v].encoding) for v in views}
                        joints = items["joint_state"]
                        return Observation(images, reorder(joints.name, joints.position, config.joint_names, "joint_states"))

                    frames += episode.add_observation(matched.stamp, 0.0, decode)
            indices.append(store.begin(task, source))
            for frame in frames:
                store.add(frame)
            store.save(outcome)
    finally:
        store.close()
    return indices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_mbpo_ros.bag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("to-dataset", help="rebuild a LeRobotDataset from this package's episode bags")
    convert.add_argument("output", type=Path, help="dataset directory (created, or appended to)")
    convert.add_argument("bags", type=Path, nargs="+")
    convert.add_argument("--recorder-config", type=Path, help="recorder parameter file (default: the package's)")
    convert.add_argument("--sync-config", type=Path, help="observation_sync parameter file (default: the package's)")
    info = sub.add_parser("info", help="list a bag's topics, types and message counts")
    info.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    lerobot = sub.add_parser("to-lerobot", help="convert any rosbag2 recording to a LeRobotDataset v3 with a YAML mapping")
    lerobot.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    lerobot.add_argument("mapping", type=Path, help="YAML mapping of topics to features (docs/lerobot_ros2.md)")
    lerobot.add_argument("output", type=Path, help="dataset directory (created, or appended to)")
    lerobot.add_argument("--fps", type=int, help="override the mapping's fps")
    lerobot.add_argument("--task", help="override the mapping's task text")
    lerobot.add_argument("--time", choices=("header", "log"), help="override the mapping's time base")
    to_bag = sub.add_parser("to-bag", help="write LeRobotDataset episodes as a rosbag2 MCAP bag")
    to_bag.add_argument("dataset", type=Path, help="LeRobotDataset directory")
    to_bag.add_argument("output", type=Path, help="bag directory to create")
    to_bag.add_argument("--episodes", type=int, nargs="+", help="episode indices (default: all)")
    to_bag.add_argument("--compressed", action="store_true", help="cameras as sensor_msgs/CompressedImage (jpeg)")
    to_bag.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    to_bag.add_argument("--mapping-out", type=Path, help="where to write the mapping that converts the bag back "
                                                          "(default: OUTPUT.mapping.yaml)")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info(args)
    if args.command == "to-lerobot":
        return _to_lerobot(args)
    if args.command == "to-bag":
        return _to_bag(args)
    from vla_mbpo_ros.bringup import config_dir
    from vla_mbpo_ros.core.data.recording import RecordingConfig
    from vla_mbpo_ros.core.util.config import load_config, read_params

    recorder = read_params(args.recorder_config or config_dir() / "recorder.yaml", "recorder")
    sync = read_params(args.sync_config or config_dir() / "observation_sync.yaml", "observation_sync")
    fields = {k: v for k, v in recorder.items() if k in RecordingConfig.__dataclass_fields__}
    config = load_config(RecordingConfig, fields, "recorder")
    indices = bag_to_dataset(sorted(args.bags), args.output, config, config.views, sync.get("slop", 0.02), sync.get("queue_size", 10))
    print(f"added episodes {indices} to {args.output}")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _info(args: argparse.Namespace) -> int:
    from vla_mbpo_ros.core.data.bag_conversion import bag_info, format_info

    try:
        print(format_info(bag_info(args.bag)))
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    return 0


def _to_lerobot(args: argparse.Namespace) -> int:
    from vla_mbpo_ros.core.data.bag_conversion import convert_bag
    from vla_mbpo_ros.core.data.bag_mapping import load_mapping

    try:
        mapping = load_mapping(args.mapping, fps=args.fps, task=args.task, time=args.time)
        report = convert_bag(args.bag, mapping, args.output, progress=print)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    print(f"{args.output}: {report.summary()}")
    return 0


def _to_bag(args: argparse.Namespace) -> int:
    import yaml

    from vla_mbpo_ros.core.data.bag_conversion import dataset_to_bag

    try:
        mapping = dataset_to_bag(args.dataset, args.output, args.episodes, compressed=args.compressed, storage=args.storage)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return _fail(str(err))
    mapping_out = args.mapping_out or args.output.with_name(args.output.name + ".mapping.yaml")
    mapping_out.write_text(yaml.safe_dump(mapping, sort_keys=False))
    print(f"wrote {args.output} (mapping back to a dataset: {mapping_out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
