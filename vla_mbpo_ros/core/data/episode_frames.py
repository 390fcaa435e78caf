"""Which messages become frames of the running episode: the recorder's decisions, ROS-free.

While an episode is open, an observation becomes a frame when it was stamped after the episode started,
arrived within ``max_observation_age`` of its stamp, is due at the dataset rate (``FrameSampler``), has every
configured view, and is paired with a command the gate sent (``FramePairer``, core.data.recording); the
command's joints are put in the dataset's order. Commands are paired outside episodes too, so the first
observations of an episode find the commands sent just before. Whatever is dropped is counted
(``FrameCounters``) for the episode's summary and /diagnostics, and reported through ``warn`` / ``error``.
Not thread-safe: the recorder node calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vla_mbpo_ros.core.data.episode import Observation, RunningEpisode
from vla_mbpo_ros.core.data.recording import FramePairer, FrameSampler, PairedFrame, PairingStats, RecordedFrame, RecordingConfig
from vla_mbpo_ros.core.robot.joints import reorder


class GateCommand(Protocol):
    """A command the gate sent (vla_mbpo_ros/ExecutedCommand has these fields)."""

    joint_names: Sequence[str]
    positions: Sequence[float]
    intervention: bool
    policy_version: str
    source: str


@dataclass
class FrameCounters:
    frames_queued: int = 0
    frames_written: int = 0
    backlog_drops: int = 0  # frames dropped because the writer queue was full
    stale: int = 0  # observations received more than max_observation_age after their stamp
    invalid: int = 0  # observations, commands or frames that did not fit the config
    write_seconds: float = 0.0  # time the writer spent adding frames


def _ignore(_message: str) -> None:
    pass


class EpisodeFrames:
    def __init__(self, config: RecordingConfig, warn: Callable[[str], None] = _ignore,
                 error: Callable[[str], None] = _ignore) -> None:
        self.config = config
        self._warn, self._error = warn, error
        self.pairer: FramePairer[tuple[dict, Any], GateCommand] = FramePairer(
            config.max_command_delay, config.command_history, config.max_pending_observations)
        self.sampler = FrameSampler(config.fps, config.frame_slack)
        self.counters = FrameCounters()
        self.episode: RunningEpisode | None = None
        self._episode_stamp = float("inf")  # ROS time the running episode started

    # ------------------------------------------------------------------ episode window
    def begin(self, episode: RunningEpisode, stamp: float) -> None:
        """Frames from observations stamped at or after ``stamp`` belong to ``episode``; counters restart."""
        self.pairer.clear()
        self.pairer.stats = PairingStats()
        self.sampler = FrameSampler(self.config.fps, self.config.frame_slack)
        self.counters = FrameCounters()
        self.episode, self._episode_stamp = episode, stamp

    def end(self) -> RunningEpisode | None:
        """Close the episode (None if none was open); observations still waiting for a command are dropped."""
        episode, self.episode = self.episode, None
        if episode is not None:
            self.pairer.clear()
        return episode

    # ------------------------------------------------------------------ messages
    def add_observation(self, stamp: float, age: float, decode: Callable[[], Observation]) -> list[RecordedFrame]:
        """Frames completed by an observation stamped ``stamp`` and received ``age`` s later; ``decode`` is
        called only for an observation that will be kept (it raises ValueError for one that does not fit)."""
        if self.episode is None or stamp < self._episode_stamp:
            return []  # not during an episode (frames still queued from before its start included)
        if age > self.config.max_observation_age:
            self.counters.stale += 1
            self._warn(f"observation received {age:.2f} s after its stamp (> max_observation_age): not recorded; "
                       "is the sim running behind real time, or are clocks out of sync?")
            return []
        if not self.sampler.accept(stamp):
            return []
        try:
            observation = decode()
            missing = [view for view in self.config.views if view not in observation.views]
            if missing:
                raise ValueError(f"observation has no view(s) {missing} (views: {list(observation.views)})")
        except ValueError as err:
            self.invalid(f"observation not recorded: {err}")
            return []
        images = {view: observation.views[view] for view in self.config.views}
        return self._frames(self.pairer.add_observation(stamp, (images, observation.state)))

    def add_command(self, stamp: float, command: GateCommand) -> list[RecordedFrame]:
        """Frames completed by a command the gate sent, stamped ``stamp``."""
        paired = self.pairer.add_command(stamp, command)
        return self._frames(paired) if self.episode is not None else []

    def _frames(self, paired: list[PairedFrame[tuple[dict, Any], GateCommand]]) -> list[RecordedFrame]:
        frames = []
        for p in paired:
            images, state = p.observation
            command = p.command
            try:
                action = reorder(command.joint_names, command.positions, self.config.joint_names, "executed_command")
            except ValueError as err:
                self.invalid(f"command not recorded: {err}")
                continue
            frames.append(RecordedFrame(
                images=images, state=state, action=action, obs_stamp=p.obs_stamp, command_stamp=p.command_stamp,
                intervention=command.intervention, policy_version=command.policy_version, command_source=command.source))
        return frames

    # ------------------------------------------------------------------ the writer's side
    def admit(self, queued: int) -> bool:
        """Whether a frame may join the ``queued`` frames waiting for the writer (counted either way)."""
        if queued >= self.config.max_queued_frames:
            self.counters.backlog_drops += 1
            self._warn("writer backlog full: dropping frames (disk or encoder too slow)")
            return False
        self.counters.frames_queued += 1
        return True

    def written(self, seconds: float) -> None:
        self.counters.frames_written += 1
        self.counters.write_seconds += seconds

    def invalid(self, message: str) -> None:
        self.counters.invalid += 1
        self._error(message)

    # ------------------------------------------------------------------ reporting
    @property
    def dropping(self) -> bool:
        c = self.counters
        return bool(c.backlog_drops or c.invalid or c.stale)

    def summary(self) -> str:
        c = self.counters
        return (f"{c.frames_written} frames, {self.sampler.gaps} gap(s), {c.stale} stale observation(s), "
                f"{self.pairer.stats.late} late command(s), {c.backlog_drops} backlog drop(s), {c.invalid} invalid message(s)")

    def values(self) -> dict[str, object]:
        """The counters for /diagnostics."""
        c = self.counters
        return {
            "frames_written": c.frames_written,
            "gaps": self.sampler.gaps,
            "stale_observations": c.stale,
            "late_commands": self.pairer.stats.late,
            "pending_observations": self.pairer.pending,
            "backlog_drops": c.backlog_drops,
            "invalid_messages": c.invalid,
            # Frames per second of writer time: how far above the recording rate the writer is.
            "write_capacity_fps": c.frames_written / c.write_seconds if c.write_seconds > 0 else float("nan"),
        }
