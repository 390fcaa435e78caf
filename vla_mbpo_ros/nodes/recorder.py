"""Episode recorder: synchronized observations + the commands actually sent -> LeRobotDataset v3.

Frames are MultiViewObservations (/vla_mbpo/observation) paired with the ExecutedCommand the gate
sent first at or after each observation's stamp (core.data.EpisodeFrames decides), while an episode is open:
/vla_mbpo/recorder/start_episode (task, source) ... /vla_mbpo/recorder/end_episode (SUCCESS,
FAILURE, UNLABELLED: saved with that label; DISCARD: dropped without a trace). end_episode answers
once the episode is durable on disk. Policy rollouts and demonstrations go into the same dataset,
told apart by the ``episode_source`` and ``command_source`` features.

Disk work (PNG staging, video encoding, parquet, fsync) runs on one writer thread fed by a queue,
never in a subscription callback. Crash safety and resume are core.data.EpisodeStore's: a kill
mid-episode loses that episode only; on restart the existing dataset is opened and appended to.
The node refuses to start (exit 2, one line naming the cause) on a bad feature config, a dataset
recorded with other features, or less free disk than ``min_free_disk_mb``. An episode still
open at shutdown is discarded, not saved.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

from rclpy.node import Node
from rclpy.serialization import serialize_message

from vla_mbpo_ros.bag import EVENT_TOPIC, BagRecorder, message_class
from vla_mbpo_ros.conversions import observation_from_msg, stamp_to_seconds
from vla_mbpo_ros.core.data.episode import RunningEpisode
from vla_mbpo_ros.core.data.episode_frames import EpisodeFrames
from vla_mbpo_ros.core.data.episode_store import EpisodeStore, InsufficientDiskSpace
from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig
from vla_mbpo_ros.core.util.worker import SerialWorker
from vla_mbpo_ros.msg import EpisodeEvent, ExecutedCommand, MultiViewObservation
from vla_mbpo_ros.nodes._diagnostics import OK, WARN, DiagnosticsPublisher
from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS, RELIABLE_QOS, SENSOR_QOS, ConfigError, declare, declare_config, run_node
from vla_mbpo_ros.srv import EndEpisode, StartEpisode

# What the raw recording (record_raw) subscribes to by default: the sim's / drivers' raw streams,
# the gated commands and the episode's events (config/recorder.yaml lists them).
RAW_TOPICS = (
    "/cameras/head/image_raw sensor_msgs/msg/Image",
    "/cameras/wrist/image_raw sensor_msgs/msg/Image",
    "/joint_states sensor_msgs/msg/JointState",
    "/vla_mbpo/executed_command vla_mbpo_ros/msg/ExecutedCommand",
    "/vla_mbpo/episode_event vla_mbpo_ros/msg/EpisodeEvent",
)

_OUTCOMES = {
    EndEpisode.Request.OUTCOME_SUCCESS: Outcome.SUCCESS,
    EndEpisode.Request.OUTCOME_FAILURE: Outcome.FAILURE,
    EndEpisode.Request.OUTCOME_UNLABELLED: Outcome.UNLABELLED,
    EndEpisode.Request.OUTCOME_DISCARD: Outcome.DISCARD,
}


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.config = declare_config(self, RecordingConfig)
        output_dir = declare(self, "output_dir", "outputs", "datasets are written under this directory")
        dataset_name = declare(self, "dataset_name", "dataset", "the dataset directory under output_dir")
        observation_topic = declare(self, "observation_topic", "/vla_mbpo/observation")
        command_topic = declare(self, "executed_command_topic", "/vla_mbpo/executed_command")
        self.save_timeout = declare(self, "save_timeout_s", 300.0, "longest end_episode waits for the save (s)")
        if not dataset_name or "/" in dataset_name:
            raise ConfigError(f"dataset_name: expected a directory name, got {dataset_name!r}")
        root = Path(output_dir) / dataset_name
        try:
            self.store = EpisodeStore(root, self.config)
        except (InsufficientDiskSpace, ValueError) as err:
            raise ConfigError(str(err)) from err
        if self.store.recovered:
            self.get_logger().warning(f"recovered {root}: {self.store.recovered}")

        cfg = self.config
        logger = self.get_logger()
        self._lock = threading.Lock()  # self.frames
        self.frames = EpisodeFrames(cfg, warn=lambda message: logger.warning(message, throttle_duration_sec=5.0),
                                    error=lambda message: logger.error(message, throttle_duration_sec=5.0))
        self._last_save_s = float("nan")
        self.writer = SerialWorker("dataset_writer")  # disk work, in the order the frames came

        # (The services wait for the writer thread: no frame is being recorded then.)
        self.create_subscription(MultiViewObservation, observation_topic, self._on_observation, OBSERVATION_QOS)
        self.create_subscription(ExecutedCommand, command_topic, self._on_command, RELIABLE_QOS)
        self.bags = self._raw_recording(root, declare(self, "record_raw", False, "also write the raw topics of every episode to MCAP"))
        self.create_service(StartEpisode, "/vla_mbpo/recorder/start_episode", self._on_start)
        self.create_service(EndEpisode, "/vla_mbpo/recorder/end_episode", self._on_end)
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=1.0)
        self.get_logger().info(
            f"recording to {self.store.root} ({self.store.num_episodes} episode(s) so far): {cfg.fps} fps, "
            f"views {list(cfg.views)} {cfg.image_size}, {'video ' + cfg.video_codec if cfg.use_videos else 'images'}"
        )

    def _raw_recording(self, root: Path, enabled: bool) -> BagRecorder | None:
        """With ``record_raw``: an MCAP file per saved episode in <dataset>_raw/ (see vla_mbpo_ros.bag)."""
        topics = declare(self, "raw_topics", list(RAW_TOPICS), "'<topic> <pkg/msg/Type>' recorded raw")
        if not enabled:
            return None
        bags = BagRecorder(root.with_name(root.name + "_raw"))
        if bags.bag.removed_partials:
            self.get_logger().warning(f"removed unfinished raw episodes {bags.bag.removed_partials}")
        for entry in topics:
            try:
                topic, type_name = entry.split()
                msg_class = message_class(type_name)
            except (ValueError, ImportError, AttributeError) as err:
                raise ConfigError(f"raw_topics: {entry!r} is not '<topic> <pkg/msg/Type>' of a known type ({err})") from err
            qos = RELIABLE_QOS if topic.startswith("/vla_mbpo/") else SENSOR_QOS  # both match any publisher's reliability
            self.create_subscription(msg_class, topic, partial(self._on_raw, topic, type_name), qos, raw=True)
        return bags

    def _on_raw(self, topic: str, type_name: str, data: bytes) -> None:
        self.bags.offer(topic, type_name, data, self.get_clock().now().nanoseconds)

    # ------------------------------------------------------------------ writer thread
    def _write_frame(self, frame: RecordedFrame) -> None:
        started = time.monotonic()
        try:
            self.store.add(frame)
        except ValueError as err:
            with self._lock:
                self.frames.invalid(f"frame not recorded: {err}")
            return
        with self._lock:
            self.frames.written(time.monotonic() - started)

    # ------------------------------------------------------------------ inputs
    def _on_observation(self, msg: MultiViewObservation) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        age = stamp_to_seconds(self.get_clock().now().to_msg()) - stamp
        with self._lock:
            self._queue(self.frames.add_observation(stamp, age, lambda: observation_from_msg(msg, self.config.joint_names)))

    def _on_command(self, msg: ExecutedCommand) -> None:
        with self._lock:
            self._queue(self.frames.add_command(stamp_to_seconds(msg.header.stamp), msg))

    def _queue(self, frames: list[RecordedFrame]) -> None:
        """Called with the lock held."""
        for frame in frames:
            if self.frames.admit(self.writer.pending):
                self.writer.submit(partial(self._write_frame, frame))

    # ------------------------------------------------------------------ services
    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response) -> StartEpisode.Response:
        with self._lock:
            running = self.frames.episode
        if running is not None:
            response.success, response.episode_index = False, running.index
            response.message = f"episode {running.index} is still being recorded: end it first"
            return response
        try:
            index = self.writer.call(lambda: self.store.begin(request.task, request.source), self.save_timeout)
        except (InsufficientDiskSpace, ValueError, RuntimeError) as err:
            response.success, response.episode_index, response.message = False, -1, str(err)
            self.get_logger().error(f"episode not started: {err}")
            return response
        if self.bags is not None:
            self.bags.begin(index)
        with self._lock:
            self.frames.begin(RunningEpisode(index, request.task, request.source, time.monotonic()),
                              stamp_to_seconds(self.get_clock().now().to_msg()))
        response.success, response.episode_index = True, index
        response.message = f"recording episode {index}: {request.task!r} ({request.source})"
        self.get_logger().info(response.message)
        return response

    def _on_end(self, request: EndEpisode.Request, response: EndEpisode.Response) -> EndEpisode.Response:
        outcome = _OUTCOMES.get(request.outcome)
        with self._lock:
            episode = self.frames.end()  # observations still waiting for a command are not recorded
        if episode is None:
            response.success, response.episode_index, response.message = False, -1, "no episode is being recorded"
            return response
        if self.bags is not None:
            self.bags.stop()  # the bag ends with the episode, like the dataset
        response.episode_index = episode.index
        if outcome is None:
            outcome = Outcome.DISCARD
            self.get_logger().error(f"unknown outcome {request.outcome}: discarding episode {episode.index}")
        try:
            if outcome is Outcome.DISCARD:
                self.writer.call(self.store.discard, self.save_timeout)
                if self.bags is not None:
                    self.bags.discard(self.save_timeout)
                response.success, response.message = True, f"discarded episode {episode.index}"
            else:
                saved = self.writer.call(lambda: self.store.save(outcome), self.save_timeout)
                if self.bags is not None:
                    self.bags.save(self._label(episode, request.outcome), self.save_timeout)
                with self._lock:  # every frame of the episode has been written by now
                    self._last_save_s = saved.save_seconds
                    summary = self.frames.summary()
                response.success = True
                response.message = (f"saved episode {saved.index} ({outcome.value}) in {saved.save_seconds:.2f} s: "
                                    f"{summary}")
        except Exception as err:  # noqa: BLE001  (answered, not raised: the caller must know)
            response.success, response.message = False, f"episode {episode.index} not saved: {err}"
            self.get_logger().error(response.message)
            if self.bags is not None:  # no bag for an episode the dataset lacks; the next one opens its own
                self.bags.discard(self.save_timeout)
            return response
        self.get_logger().info(response.message)
        return response

    def _label(self, episode: RunningEpisode, outcome: int) -> tuple[str, str, bytes, int]:
        """The episode's label as an EpisodeEvent for its bag (the manager publishes its own after this)."""
        event = {EndEpisode.Request.OUTCOME_SUCCESS: EpisodeEvent.SUCCESS, EndEpisode.Request.OUTCOME_FAILURE: EpisodeEvent.FAILURE}
        msg = EpisodeEvent(event=event.get(outcome, EpisodeEvent.END), episode_index=episode.index, task=episode.task,
                           source=episode.source)
        now = self.get_clock().now()
        msg.header.stamp = now.to_msg()
        return EVENT_TOPIC, "vla_mbpo_ros/msg/EpisodeEvent", serialize_message(msg), now.nanoseconds

    # ------------------------------------------------------------------ diagnostics
    def _report(self):
        with self._lock:
            episode = self.frames.episode
            values: dict[str, object] = {
                "recording": episode is not None,
                "episode_index": episode.index if episode else -1,
                "episodes_saved": self.store.num_episodes,
                "writer_queue": self.writer.pending,
                "last_save_s": self._last_save_s,
                **self.frames.values(),
            }
            dropping = self.frames.dropping
        if dropping:
            return WARN, "dropping frames", values
        return OK, f"recording episode {episode.index}" if episode else "idle", values

    def close(self) -> None:
        with self._lock:
            self.frames.end()
        self.writer.close(last=self.store.close, timeout=self.save_timeout)  # an unfinished episode is discarded
        if self.bags is not None:
            self.bags.close(timeout=self.save_timeout)


def main() -> int:
    return run_node(RecorderNode)


if __name__ == "__main__":
    raise SystemExit(main())
