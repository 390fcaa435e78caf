"""Joint limits and the safety configuration of an arm (config/robots/<robot>.yaml).

Every number the gate (``gate.py``) and the e-stop monitor (``estop.py``) use is a config value
here, validated when the config is built: a ValueError names the field. Pure Python + numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Kinds of gate violations. These always hold ("no_anchor": nothing sent yet and no valid
# measured position, so there is nothing to hold either: the command is None)...
ALWAYS_HOLD_KINDS: tuple[str, ...] = ("nonfinite", "shape", "dt", "no_anchor")
# ...and these follow ``violation_policy``.
POLICY_KINDS: tuple[str, ...] = ("position", "gripper", "step", "velocity", "workspace")
VIOLATION_KINDS: tuple[str, ...] = ALWAYS_HOLD_KINDS + POLICY_KINDS
VIOLATION_POLICIES: tuple[str, ...] = ("clamp", "hold")
# Out-of-range targets and rate limits are clamped (the arm keeps going, slower or at the
# limit); leaving the Cartesian box holds, since a clamp there needs a trusted FK model.
DEFAULT_VIOLATION_POLICY: dict[str, str] = {
    "position": "clamp",
    "gripper": "clamp",
    "step": "clamp",
    "velocity": "clamp",
    "workspace": "hold",
}

ForwardKinematics = Callable[[np.ndarray], np.ndarray]


def _vector(name: str, value: Any, size: int) -> np.ndarray:
    """A finite float64 vector of ``size`` values, or ValueError naming ``name``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected {size} numbers, got {value!r}") from exc
    if arr.ndim == 0:
        raise ValueError(f"{name}: expected a list of {size} values, got a single value {value!r}")
    if arr.shape != (size,):
        raise ValueError(f"{name}: expected {size} values (one per joint), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: all values must be finite, got {arr.tolist()}")
    return arr


def _number(name: str, value: Any, minimum: float | None = None, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name}: must be {relation} {minimum}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, all in the order of ``names``. Radians, rad/s, rad per control cycle."""

    names: tuple[str, ...]
    position_min: np.ndarray
    position_max: np.ndarray
    max_velocity: np.ndarray
    max_step: np.ndarray

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"joint_names: expected unique, non-empty joint names, got {list(names)}")
        object.__setattr__(self, "names", names)
        d = len(names)
        for attr in ("position_min", "position_max", "max_velocity", "max_step"):
            object.__setattr__(self, attr, _vector(f"safety.{attr}", getattr(self, attr), d))
        bad = [n for n, lo, hi in zip(names, self.position_min, self.position_max) if not lo < hi]
        if bad:
            raise ValueError(f"safety.position_min: must be < position_max for joints {bad}")
        for attr in ("max_velocity", "max_step"):
            if np.any(getattr(self, attr) <= 0):
                raise ValueError(f"safety.{attr}: all values must be > 0, got {getattr(self, attr).tolist()}")

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class SafetyConfig:
    """Everything the gate and the e-stop monitor need. Every number is a config value."""

    limits: JointLimits
    # The gripper joint's allowed range (intersected with its position limits) and its own
    # violation kind, so a policy squeezing an object past "closed" can be clamped without
    # counting as an arm-limit violation. None: no gripper-specific handling.
    gripper_joint: str | None = "gripper"
    gripper_range: tuple[float, float] | None = None
    # Optional Cartesian box for the end effector (metres); needs a forward-kinematics hook.
    workspace_min: np.ndarray | None = None
    workspace_max: np.ndarray | None = None
    workspace_search_steps: int = 12  # bisection steps when clamping a move to the box
    violation_policy: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_VIOLATION_POLICY))
    # Watchdogs (seconds).
    stale_observation_s: float = 0.25
    require_heartbeat: bool = False
    heartbeat_timeout_s: float = 0.5
    inference_timeout_s: float = 2.0
    # Latch after this many violations of the listed kinds within the window. Step/velocity
    # and gripper clamps are normal rate limiting and are not listed by default.
    latch_violation_count: int = 5
    latch_violation_window_s: float = 1.0
    # Kinds that signal a malfunction rather than a policy leaning on a limit: a position clamp keeps
    # the arm inside its range by itself, while NaNs or wrong shapes mean the command source is broken.
    latch_violation_kinds: tuple[str, ...] = ("nonfinite", "shape", "dt", "workspace")

    def __post_init__(self) -> None:
        names = self.limits.names
        if self.gripper_joint is not None and self.gripper_joint not in names:
            raise ValueError(f"safety.gripper_joint: {self.gripper_joint!r} is not one of the joints {list(names)}")
        if self.gripper_range is not None:
            if self.gripper_joint is None:
                raise ValueError("safety.gripper_range: given but safety.gripper_joint is null")
            rng = _vector("safety.gripper_range", self.gripper_range, 2)
            if not rng[0] < rng[1]:
                raise ValueError(f"safety.gripper_range: min must be < max, got {rng.tolist()}")
            j = names.index(self.gripper_joint)
            if rng[0] >= self.limits.position_max[j] or rng[1] <= self.limits.position_min[j]:
                raise ValueError("safety.gripper_range: does not overlap the gripper joint's position limits")
            object.__setattr__(self, "gripper_range", (float(rng[0]), float(rng[1])))
        if (self.workspace_min is None) != (self.workspace_max is None):
            raise ValueError("safety.workspace: give both min and max, or neither")
        if self.workspace_min is not None:
            wmin = _vector("safety.workspace.min", self.workspace_min, 3)
            wmax = _vector("safety.workspace.max", self.workspace_max, 3)
            if np.any(wmin >= wmax):
                raise ValueError(
                    f"safety.workspace.min: must be < max on every axis, got {wmin.tolist()} / {wmax.tolist()}"
                )
            object.__setattr__(self, "workspace_min", wmin)
            object.__setattr__(self, "workspace_max", wmax)
        _integer("safety.workspace_search_steps", self.workspace_search_steps, 1)
        policy = dict(self.violation_policy)
        for kind, value in policy.items():
            field_name = f"safety.violation_policy.{kind}"
            if kind not in POLICY_KINDS:
                raise ValueError(f"{field_name}: unknown violation kind (known: {list(POLICY_KINDS)})")
            if value not in VIOLATION_POLICIES:
                raise ValueError(f"{field_name}: expected one of {list(VIOLATION_POLICIES)}, got {value!r}")
        missing = [k for k in POLICY_KINDS if k not in policy]
        if missing:
            raise ValueError(f"safety.violation_policy: missing kinds {missing}")
        object.__setattr__(self, "violation_policy", policy)
        _number("safety.stale_observation_s", self.stale_observation_s, 0.0)
        _number("safety.heartbeat_timeout_s", self.heartbeat_timeout_s, 0.0)
        _number("safety.inference_timeout_s", self.inference_timeout_s, 0.0)
        _number("safety.latch_violation_window_s", self.latch_violation_window_s, 0.0)
        if not isinstance(self.require_heartbeat, bool):
            raise ValueError(f"safety.require_heartbeat: expected true/false, got {self.require_heartbeat!r}")
        _integer("safety.latch_violation_count", self.latch_violation_count, 1)
        kinds = tuple(self.latch_violation_kinds)
        unknown = [k for k in kinds if k not in VIOLATION_KINDS]
        if unknown:
            raise ValueError(f"safety.latch_violation_kinds: unknown kinds {unknown} (known: {list(VIOLATION_KINDS)})")
        object.__setattr__(self, "latch_violation_kinds", kinds)

    @property
    def has_workspace(self) -> bool:
        return self.workspace_min is not None

    def effective_position_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Position bounds with the gripper range intersected into the gripper joint's limits."""
        lo = self.limits.position_min.copy()
        hi = self.limits.position_max.copy()
        if self.gripper_joint is not None and self.gripper_range is not None:
            j = self.limits.names.index(self.gripper_joint)
            lo[j] = max(lo[j], self.gripper_range[0])
            hi[j] = min(hi[j], self.gripper_range[1])
        return lo, hi

    _KEYS = (
        "position_min", "position_max", "max_velocity", "max_step", "gripper_joint", "gripper_range",
        "workspace", "workspace_search_steps", "violation_policy", "stale_observation_s",
        "require_heartbeat", "heartbeat_timeout_s", "inference_timeout_s", "latch_violation_count",
        "latch_violation_window_s", "latch_violation_kinds",
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], joint_names: Sequence[str]) -> SafetyConfig:
        """Build from the ``safety:`` mapping of a robot yaml; ValueError names the bad field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"safety: expected a mapping, got {type(d).__name__}")
        unknown = [k for k in d if k not in cls._KEYS]
        if unknown:
            raise ValueError(f"safety.{unknown[0]}: unknown key (known: {list(cls._KEYS)})")
        for key in ("position_min", "position_max", "max_velocity", "max_step"):
            if key not in d:
                raise ValueError(f"safety.{key}: required")
        limits = JointLimits(
            names=tuple(joint_names),
            position_min=d["position_min"],
            position_max=d["position_max"],
            max_velocity=d["max_velocity"],
            max_step=d["max_step"],
        )
        kwargs: dict[str, Any] = {}
        for key in ("gripper_joint", "gripper_range", "workspace_search_steps", "stale_observation_s",
                    "require_heartbeat", "heartbeat_timeout_s", "inference_timeout_s",
                    "latch_violation_count", "latch_violation_window_s"):
            if key in d:
                kwargs[key] = d[key]
        if "latch_violation_kinds" in d:
            kinds = d["latch_violation_kinds"]
            if not isinstance(kinds, (list, tuple)):
                raise ValueError(f"safety.latch_violation_kinds: expected a list, got {kinds!r}")
            kwargs["latch_violation_kinds"] = tuple(kinds)
        if "violation_policy" in d:
            policy = d["violation_policy"]
            if not isinstance(policy, Mapping):
                raise ValueError(f"safety.violation_policy: expected a mapping, got {policy!r}")
            # Kinds left out keep their defaults.
            kwargs["violation_policy"] = {**DEFAULT_VIOLATION_POLICY, **policy}
        workspace = d.get("workspace")
        if workspace is not None:
            if not isinstance(workspace, Mapping) or set(workspace) != {"min", "max"}:
                raise ValueError(f"safety.workspace: expected a mapping with 'min' and 'max' (xyz), got {workspace!r}")
            kwargs["workspace_min"] = workspace["min"]
            kwargs["workspace_max"] = workspace["max"]
        return cls(limits=limits, **kwargs)


def load_safety_config(path: str | Path) -> SafetyConfig:
    """Read ``joint_names`` and ``safety`` from a robot yaml (e.g. config/robots/so101.yaml)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "joint_names" not in doc:
        raise ValueError(f"joint_names: required in {path}")
    if "safety" not in doc:
        raise ValueError(f"safety: required in {path}")
    names = doc["joint_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"joint_names: expected a list of strings, got {names!r}")
    return SafetyConfig.from_dict(doc["safety"], joint_names=names)
