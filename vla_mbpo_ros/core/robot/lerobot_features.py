"""LeRobot's view of an arm behind the safety gate: camera streams, feature dicts, action vectors.

LeRobot robots and teleoperators describe what they produce as flat dicts: ``"<joint>.pos"`` ->
float and ``"<camera>"`` -> a (height, width, 3) uint8 frame. Here every ``.pos`` is in radians,
the package's unit for every joint (gripper included), in the robot's joint order. Everything is
built from the plugin's config (joint names, cameras), so the features are known before anything
connects, as LeRobot requires. Pure Python: the LeRobot plugins (plugins/) and their ROS clients
(vla_mbpo_ros.clients) share it, and it is tested without ROS or LeRobot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_mbpo_ros.core.data.image_transport import IMAGE_TRANSPORTS



@dataclass(frozen=True)
class CameraStream:
    """One camera of the arm as LeRobot sees it: a ROS topic and the frame size and rate it has."""

    name: str  # LeRobot's feature name (observation.images.<name> in a dataset)
    topic: str
    height: int
    width: int
    fps: int
    transport: str = "raw"  # core.data.image_transport: raw (Image) or compressed (CompressedImage)

    def __post_init__(self) -> None:
        where = f"cameras.{self.name}"
        if not self.name or "." in self.name or "/" in self.name:
            raise ValueError(f"{where}: a camera name must be non-empty without '.' or '/', got {self.name!r}")
        if not isinstance(self.topic, str) or not self.topic.startswith("/"):
            raise ValueError(f"{where}.topic: expected an absolute ROS topic name, got {self.topic!r}")
        for field in ("height", "width", "fps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{where}.{field}: expected an integer > 0, got {value!r}")
        if self.transport not in IMAGE_TRANSPORTS:
            raise ValueError(f"{where}.transport: expected one of {list(IMAGE_TRANSPORTS)}, got {self.transport!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


def check_joint_names(joint_names: Sequence[str], what: str = "joint_names") -> tuple[str, ...]:
    names = tuple(joint_names)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise ValueError(f"{what}: expected a non-empty list of joint names, got {list(names)!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: joint names repeat: {list(names)}")
    return names


def joint_key(joint: str) -> str:
    return f"{joint}.pos"


def joint_features(joint_names: Sequence[str]) -> dict[str, type]:
    """``{"<joint>.pos": float}`` in joint order: the action features, and the state part of the observation."""
    return {joint_key(j): float for j in joint_names}


def observation_features(joint_names: Sequence[str], cameras: Sequence[CameraStream]) -> dict[str, Any]:
    return {**joint_features(joint_names), **{c.name: c.shape for c in cameras}}


def joint_vector(values: Mapping[str, Any], joint_names: Sequence[str], what: str = "action") -> np.ndarray:
    """``{"<joint>.pos": value}`` -> float64 vector in ``joint_names`` order. ValueError naming missing
    or unknown keys: an action for another robot must not be half-applied. Non-finite values pass
    through (the gate holds on them)."""
    expected = [joint_key(j) for j in joint_names]
    missing = [k for k in expected if k not in values]
    unknown = sorted(set(values) - set(expected))
    if missing or unknown:
        raise ValueError(f"{what}: missing keys {missing}, unknown keys {unknown}; expected {expected}")
    return np.array([float(values[k]) for k in expected], dtype=np.float64)


def joint_dict(positions: Sequence[float], joint_names: Sequence[str]) -> dict[str, float]:
    return {joint_key(j): float(q) for j, q in zip(joint_names, positions, strict=True)}


def check_positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what}: expected a number > 0, got {value!r}")
    return float(value)
