"""Joint-trajectory following with ros2_control JointTrajectoryController semantics, ROS-free.

A trajectory is a list of (time_from_start, positions) points in the trajectory's own joint order.
It starts at its header stamp, or on receipt when the stamp is zero; a new trajectory replaces the
previous one. Between points targets are interpolated linearly; before the first point they move
from the state at receipt; after the last point the last point is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vla_mbpo_ros.core.robot.joints import joint_order


@dataclass
class Trajectory:
    start_time: float
    times: np.ndarray  # (P,) seconds from start, strictly increasing
    positions: np.ndarray  # (P, d) in the follower's joint order
    start_positions: np.ndarray  # (d,) state when received: the segment before the first point

    @classmethod
    def build(
        cls,
        joint_names: Sequence[str],
        expected: Sequence[str],
        times: Sequence[float],
        positions: Sequence[Sequence[float]],
        start_time: float,
        current: np.ndarray,
    ) -> Trajectory:
        order = joint_order(joint_names, expected)
        times = np.asarray(times, dtype=float)
        if len(times) == 0:
            raise ValueError("trajectory has no points")
        if np.any(np.diff(times) <= 0) or times[0] < 0:
            raise ValueError(f"time_from_start must be >= 0 and strictly increasing, got {times.tolist()}")
        rows = [np.asarray(p, dtype=float) for p in positions]
        if any(r.shape != (len(joint_names),) for r in rows):
            raise ValueError(f"every point needs {len(joint_names)} positions")
        points = np.stack(rows)[:, order]
        if not np.all(np.isfinite(points)):
            raise ValueError("trajectory positions must be finite")
        return cls(start_time, times, points, np.asarray(current, dtype=float).copy())

    def target(self, now: float) -> np.ndarray:
        t = now - self.start_time
        if t <= 0.0:
            return self.start_positions.copy()
        if t < self.times[0]:
            alpha = t / self.times[0]
            return (1 - alpha) * self.start_positions + alpha * self.positions[0]
        if t >= self.times[-1]:
            return self.positions[-1].copy()
        i = int(np.searchsorted(self.times, t, side="right"))
        alpha = (t - self.times[i - 1]) / (self.times[i] - self.times[i - 1])
        return (1 - alpha) * self.positions[i - 1] + alpha * self.positions[i]
