"""What a recorded frame is: the dataset's features, and how observations are paired with actions.

Feature layout of the LeRobotDataset (v3) written by the recorder:

* ``observation.images.<view>``: video (or image) (H, W, 3) per camera view of the config.
* ``observation.state``: float32 joint positions (rad), ``joint_names`` order.
* ``action``: float32 joint-position targets (rad) *as sent to the arm after the safety gate*.
* ``intervention`` (bool): the operator had taken over from the policy for this frame's action.
* ``success`` (int8): the episode's label on every frame: 1 success, 0 failure, -1 unlabelled.
* ``policy_version``, ``episode_source`` ("teleop", "policy", "scripted_expert", ...) and
  ``command_source`` ("policy", "teleop", "hold": who produced the action) as strings.
* ``obs_stamp`` / ``command_stamp`` (float64, s): ROS stamps of the observation and of the paired
  command, for auditing the pairing. These names deliberately start with neither ``observation``
  nor ``action``: LeRobot would take such features as policy inputs/outputs. They are exact in the
  parquet files, but LeRobot's torch reader (``dataset[i]``) returns float64 scalars as float32:
  read them with ``hf_dataset.with_format("arrow")`` or pandas.

Pairing rule: the action of a frame is the *first command the gate sent at or after the
observation's stamp* (the target in effect right after the frame was captured, as in LeRobot's
own record loop: observe, then act), if it was sent within ``max_command_delay``; otherwise the
observation is dropped, as is an observation received more than ``max_observation_age`` after
its stamp (stamps and the gate's clock disagree: pairing would shift actions). Dataset timestamps are LeRobot's ``frame_index / fps``; observations
arriving faster than ``fps`` are subsampled by stamp, and missing ones are counted as gaps.
With the dataset fps below the control rate, the commands between two frames are not stored:
use fps == control rate to record every command.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.util.config import load_config

IMAGE_KEY_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
# Per-frame metadata features (not policy inputs/outputs, see the module docstring).
INTERVENTION_KEY = "intervention"
SUCCESS_KEY = "success"
POLICY_VERSION_KEY = "policy_version"
EPISODE_SOURCE_KEY = "episode_source"
COMMAND_SOURCE_KEY = "command_source"
OBS_STAMP_KEY = "obs_stamp"
COMMAND_STAMP_KEY = "command_stamp"


class Outcome(enum.Enum):
    """How an episode ends (EndEpisode.srv outcomes)."""

    SUCCESS = "success"
    FAILURE = "failure"
    UNLABELLED = "unlabelled"
    DISCARD = "discard"


# Value of the ``success`` feature per saved outcome.
SUCCESS_LABELS: dict[Outcome, int] = {Outcome.SUCCESS: 1, Outcome.FAILURE: 0, Outcome.UNLABELLED: -1}

_SVTAV1_MIN_WIDTH = 32
_VIDEO_CODECS = ("libsvtav1", "h264", "hevc", "libaom-av1")  # LeRobot 0.6.1 software encoders


@dataclass
class RecordingConfig:
    """Everything the recorder needs to lay out and fill the dataset."""

    repo_id: str = "local/vla_mbpo"  # dataset id stored in the metadata (never pushed from here)
    fps: int = 10  # dataset frame rate; should equal the observation (head camera) rate
    views: tuple[str, ...] = ("head", "wrist")  # one video feature per view, same order as the sync node
    image_size: tuple[int, int] = (96, 96)  # (height, width) every view is recorded at
    joint_names: tuple[str, ...] = SO101_JOINT_NAMES  # order of observation.state and action
    robot_type: str = "so101"
    use_videos: bool = True  # False: PNG images embedded in the parquet files
    video_codec: str = "h264"  # fast on small CPUs; LeRobot's default libsvtav1 (AV1) is smaller but slower
    video_crf: int = 30
    video_gop: int = 2  # keyframe interval: small for fast random access when training
    encoder_threads: int = 0  # 0: the codec decides
    min_free_disk_mb: float = 2048.0  # refuse to start (or to start an episode) below this free space
    max_command_delay: float = 0.2  # s, latest a paired command may be sent after the observation
    # s, an observation received later than this after its stamp is dropped: its clock is off
    # (e.g. the sim running behind real time) and pairing it by stamp would shift the actions.
    max_observation_age: float = 0.3
    command_history: float = 1.0  # s of commands kept for observations that arrive after them
    max_pending_observations: int = 30  # observations waiting for a command; oldest dropped beyond
    frame_slack: float = 0.25  # fraction of 1/fps: observations closer than (1 - slack)/fps are skipped
    max_queued_frames: int = 300  # frames waiting for the disk writer; newer ones dropped beyond

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalise container types; raise ValueError naming the first bad field."""
        if not isinstance(self.repo_id, str) or self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"repo_id must look like 'owner/name', got {self.repo_id!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or not 1 <= self.fps <= 1000:
            raise ValueError(f"fps must be an integer in [1, 1000] (LeRobot stores an integer rate), got {self.fps!r}")
        if isinstance(self.views, str):
            raise ValueError(f"views must be a list of view names, got {self.views!r}")
        self.views = tuple(self.views)
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be a non-empty list of distinct names, got {list(self.views)!r}")
        for view in self.views:
            if not isinstance(view, str) or not view or not view.replace("_", "").isalnum():
                raise ValueError(f"views: {view!r} is not a valid view name (letters, digits, _)")
        try:
            height, width = (int(v) for v in self.image_size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be (height, width), got {self.image_size!r}") from None
        if height < 8 or width < 8:
            raise ValueError(f"image_size must be at least 8x8, got {(height, width)}")
        self.image_size = (height, width)
        if isinstance(self.joint_names, str):
            raise ValueError(f"joint_names must be a list of names, got {self.joint_names!r}")
        self.joint_names = tuple(self.joint_names)
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"joint_names must be a non-empty list of distinct names, got {list(self.joint_names)!r}")
        if not isinstance(self.use_videos, bool):
            raise ValueError(f"use_videos must be a boolean, got {self.use_videos!r}")
        if self.video_codec not in _VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {_VIDEO_CODECS}, got {self.video_codec!r}")
        if self.use_videos and self.video_codec == "libsvtav1" and width < _SVTAV1_MIN_WIDTH:
            # SVT-AV1 (PyAV's build) kills the process with SIGFPE on narrower frames.
            raise ValueError(f"image_size: width {width} < {_SVTAV1_MIN_WIDTH} is not encodable with libsvtav1; use h264")
        for name, low in (("video_crf", 0), ("video_gop", 1), ("encoder_threads", 0),
                          ("max_pending_observations", 1), ("max_queued_frames", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("min_free_disk_mb", "max_command_delay", "max_observation_age", "command_history"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if not 0.0 <= self.frame_slack < 1.0:
            raise ValueError(f"frame_slack must be in [0, 1), got {self.frame_slack!r}")

    @property
    def period(self) -> float:
        return 1.0 / self.fps

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RecordingConfig:
        """Build from a plain mapping (YAML, ROS parameters); a bad or unknown key raises ValueError naming it."""
        return load_config(cls, values, "recording")


def build_features(config: RecordingConfig) -> dict[str, dict]:
    """LeRobot feature spec (``LeRobotDataset.create(features=...)``) of the config."""
    height, width = config.image_size
    visual = "video" if config.use_videos else "image"
    features: dict[str, dict] = {
        f"{IMAGE_KEY_PREFIX}{view}": {"dtype": visual, "shape": (height, width, 3), "names": ["height", "width", "channels"]}
        for view in config.views
    }
    joints = list(config.joint_names)
    features[STATE_KEY] = {"dtype": "float32", "shape": (len(joints),), "names": joints}
    features[ACTION_KEY] = {"dtype": "float32", "shape": (len(joints),), "names": joints}
    features[INTERVENTION_KEY] = {"dtype": "bool", "shape": (1,), "names": None}
    features[SUCCESS_KEY] = {"dtype": "int8", "shape": (1,), "names": None}
    for key in (POLICY_VERSION_KEY, EPISODE_SOURCE_KEY, COMMAND_SOURCE_KEY):
        features[key] = {"dtype": "string", "shape": (1,), "names": None}
    for key in (OBS_STAMP_KEY, COMMAND_STAMP_KEY):
        features[key] = {"dtype": "float64", "shape": (1,), "names": None}
    return features


@dataclass
class RecordedFrame:
    """One frame as the recorder hands it to the store (images already RGB uint8)."""

    images: dict[str, np.ndarray]  # view -> (H, W, 3) uint8
    state: np.ndarray  # (d,) rad, joint_names order
    action: np.ndarray  # (d,) rad, the gated command
    obs_stamp: float
    command_stamp: float
    intervention: bool = False
    policy_version: str = ""
    command_source: str = ""

    def to_lerobot(self, config: RecordingConfig, task: str, episode_source: str) -> dict[str, Any]:
        """The ``add_frame`` dict; ValueError names the first field that does not fit the config."""
        expected = (*config.image_size, 3)
        frame: dict[str, Any] = {}
        for view in config.views:
            if view not in self.images:
                raise ValueError(f"frame has no image for view {view!r} (views: {sorted(self.images)})")
            image = np.asarray(self.images[view])
            if image.shape != expected or image.dtype != np.uint8:
                raise ValueError(f"{IMAGE_KEY_PREFIX}{view}: got {image.dtype} {image.shape}, expected uint8 {expected}")
            frame[f"{IMAGE_KEY_PREFIX}{view}"] = image
        for key, values in ((STATE_KEY, self.state), (ACTION_KEY, self.action)):
            vector = np.asarray(values, dtype=np.float32)
            if vector.shape != (len(config.joint_names),):
                raise ValueError(f"{key}: got shape {vector.shape}, expected ({len(config.joint_names)},)")
            if not np.all(np.isfinite(vector)):
                raise ValueError(f"{key}: non-finite values {vector}")
            frame[key] = vector
        frame[INTERVENTION_KEY] = np.array([bool(self.intervention)])
        frame[SUCCESS_KEY] = np.array([SUCCESS_LABELS[Outcome.UNLABELLED]], dtype=np.int8)  # set at save
        frame[POLICY_VERSION_KEY] = str(self.policy_version)
        frame[EPISODE_SOURCE_KEY] = str(episode_source)
        frame[COMMAND_SOURCE_KEY] = str(self.command_source)
        frame[OBS_STAMP_KEY] = np.array([self.obs_stamp], dtype=np.float64)
        frame[COMMAND_STAMP_KEY] = np.array([self.command_stamp], dtype=np.float64)
        frame["task"] = task
        return frame


Obs = TypeVar("Obs")
Cmd = TypeVar("Cmd")


@dataclass(frozen=True)
class PairedFrame(Generic[Obs, Cmd]):
    obs_stamp: float
    observation: Obs
    command_stamp: float
    command: Cmd


@dataclass
class PairingStats:
    paired: int = 0
    late: int = 0  # the first command after the observation came later than max_command_delay
    overflow: int = 0  # pending observations dropped when too many waited for a command
    stale_commands: int = 0  # commands older than the newest one (out of order), ignored


class FramePairer(Generic[Obs, Cmd]):
    """Pairs each observation with the first command stamped at or after it (see module docs).

    Commands are expected in stamp order (one gate publishes them); observations may arrive
    before or after the command that pairs with them, so recent commands are kept for
    ``history`` seconds and observations wait for at most ``max_pending`` commands' worth.
    Nothing here reads a clock: all times are message stamps.
    """

    def __init__(self, max_command_delay: float, history: float, max_pending: int) -> None:
        self.max_command_delay = max_command_delay
        self.history = max(history, max_command_delay)
        self._commands: deque[tuple[float, Cmd]] = deque()
        self._pending: deque[tuple[float, Obs]] = deque()
        self._max_pending = max_pending
        self.stats = PairingStats()

    def clear(self) -> None:
        """Forget pending observations (episode boundary); recent commands are kept."""
        self._pending.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add_observation(self, stamp: float, observation: Obs) -> list[PairedFrame[Obs, Cmd]]:
        for command_stamp, command in self._commands:
            if command_stamp >= stamp:
                return self._pair(stamp, observation, command_stamp, command)
        self._pending.append((stamp, observation))
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self.stats.overflow += 1
        return []

    def add_command(self, stamp: float, command: Cmd) -> list[PairedFrame[Obs, Cmd]]:
        if self._commands and stamp < self._commands[-1][0]:
            self.stats.stale_commands += 1
            return []
        self._commands.append((stamp, command))
        while self._commands and self._commands[0][0] < stamp - self.history:
            self._commands.popleft()
        paired: list[PairedFrame[Obs, Cmd]] = []
        while self._pending and self._pending[0][0] <= stamp:
            obs_stamp, observation = self._pending.popleft()
            paired += self._pair(obs_stamp, observation, stamp, command)
        return paired

    def _pair(self, obs_stamp: float, observation: Obs, command_stamp: float, command: Cmd) -> list[PairedFrame[Obs, Cmd]]:
        if command_stamp - obs_stamp > self.max_command_delay:
            self.stats.late += 1
            return []
        self.stats.paired += 1
        return [PairedFrame(obs_stamp, observation, command_stamp, command)]


@dataclass
class FrameSampler:
    """Keeps observations at most ``fps`` by stamp and counts the frames missing in between."""

    fps: int
    slack: float = 0.25
    accepted: int = 0
    skipped: int = 0  # observations closer than (1 - slack) / fps to the previous frame
    gaps: int = 0  # frame periods with no observation (estimated from stamp jumps)
    _last: float | None = field(default=None, repr=False)

    def reset(self) -> None:
        self._last = None

    def accept(self, stamp: float) -> bool:
        period = 1.0 / self.fps
        if self._last is not None:
            delta = stamp - self._last
            if delta < period * (1.0 - self.slack):
                self.skipped += 1
                return False
            self.gaps += max(0, round(delta / period) - 1)
        self._last = stamp
        self.accepted += 1
        return True
