"""Plain data types shared by every part of the package (no ROS, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Joint names of the SO-101 arm, in the order used for state and action vectors everywhere
# (sim, real driver, safety limits, datasets). Units: radians for the five arm joints; the
# gripper is radians of the gripper jaw joint as well, so one vector has one unit.
SO101_JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)


@dataclass
class Observation:
    """One time-synchronized observation: named camera views, joint state and the task text.

    ``views`` maps a view name ("head", "wrist", ...) to an HxWx3 uint8 RGB image. The first
    view in ``view_order`` is the head (global) view; the rest are wrist views.
    """

    views: dict[str, np.ndarray]
    state: np.ndarray  # (d,) float32 joint positions, SO101_JOINT_NAMES order by default
    instruction: str = ""
    stamp: float = 0.0  # seconds, reference time of the set
    view_order: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.view_order:
            self.view_order = tuple(self.views)
        self.state = np.asarray(self.state, dtype=np.float32)


@dataclass
class ActionChunk:
    """k consecutive joint-position targets proposed by a policy for one observation."""

    actions: np.ndarray  # (k, d) float32
    chunk_id: int = 0
    policy_version: str = ""
    stamp: float = 0.0  # stamp of the observation the chunk was computed from

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.ndim != 2:
            raise ValueError(f"ActionChunk.actions must be (k, d), got shape {self.actions.shape}")
