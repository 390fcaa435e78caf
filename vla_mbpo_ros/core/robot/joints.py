"""Joint names and joint-vector ordering: the one place a message's joints are put in a robot's order."""

from __future__ import annotations

from collections.abc import Sequence

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


def joint_order(names: Sequence[str], wanted: Sequence[str], what: str = "joint_names") -> np.ndarray:
    """Indices that put values listed in ``names`` order into ``wanted`` order; ValueError naming
    the missing joints. Extra joints in ``names`` are ignored (e.g. a driver's passive joints)."""
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ValueError(f"{what}: missing {missing} (got {list(names)})")
    return np.array([index[name] for name in wanted], dtype=int)


def reorder(names: Sequence[str], values: Sequence[float], wanted: Sequence[str], what: str = "joint_names") -> np.ndarray:
    """``values`` (parallel to ``names``) in ``wanted`` order as float64; ValueError when a wanted
    joint is missing or the message has a different number of values than names."""
    if len(values) != len(names):
        raise ValueError(f"{what}: {len(names)} names but {len(values)} values")
    return np.asarray(values, dtype=np.float64)[joint_order(names, wanted, what)]
