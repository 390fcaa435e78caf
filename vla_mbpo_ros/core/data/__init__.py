"""Data collection: LeRobotDataset (v3) recording of real episodes and teleop input mapping.

No ROS here: the recorder and teleop nodes are thin glue around these classes.
"""

from vla_mbpo_ros.core.data.episode_store import (
    EpisodeStore,
    InsufficientDiskSpace,
    SavedEpisode,
    free_disk_bytes,
)
from vla_mbpo_ros.core.data.recording import (
    SUCCESS_LABELS,
    FramePairer,
    FrameSampler,
    Outcome,
    PairedFrame,
    RecordedFrame,
    RecordingConfig,
    build_features,
)
from vla_mbpo_ros.core.data.teleop import JointTargetIntegrator, JoyMapping

__all__ = [
    "SUCCESS_LABELS",
    "EpisodeStore",
    "FramePairer",
    "FrameSampler",
    "InsufficientDiskSpace",
    "JointTargetIntegrator",
    "JoyMapping",
    "Outcome",
    "PairedFrame",
    "RecordedFrame",
    "RecordingConfig",
    "SavedEpisode",
    "build_features",
    "free_disk_bytes",
]
