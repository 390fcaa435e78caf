"""Safety gate and e-stop supervision for commanding a real arm.

Written for the case where a person stands next to the arm:

* ``SafetyGate`` turns every proposed joint-position target into a command that respects the
  position limits, the per-cycle step limit and the velocity limit relative to the *last command
  sent*, or holds the last command. NaN/inf/wrong shapes always hold. Nothing non-finite leaves.
* ``EStopMonitor`` is a small latched state machine (IDLE / ACTIVE / LATCHED). Time is passed in
  by the caller (monotonic seconds); it never reads a clock, so it is deterministic to test.
  A latch is only cleared by an explicit reset, which is refused while the e-stop input is held
  or the cause is still present, and a reset never resumes motion: it returns to IDLE and an
  episode has to be started explicitly.

Pure Python + numpy; no ROS.
"""

from __future__ import annotations

import enum
import math
from collections import deque
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


@dataclass(frozen=True)
class GateResult:
    """What the gate lets through for one control cycle.

    ``command`` is None only when there is nothing safe to send at all: no command was sent yet
    and no valid measured position is available to hold. The caller then publishes nothing.
    """

    command: np.ndarray | None
    held: bool
    clamped: bool
    reasons: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()  # violation kinds behind ``reasons`` (see VIOLATION_KINDS)

    @property
    def violated(self) -> bool:
        return bool(self.kinds)


class SafetyGate:
    """Per-cycle command filter. Stateful: it remembers the last command it let out.

    Order of checks: shape/finiteness/dt (always hold) -> position and gripper range -> step
    and velocity relative to the last command -> optional Cartesian workspace box. Clamping a
    step scales the whole joint delta uniformly, so the arm keeps the policy's direction in
    joint space and just moves slower, instead of bending the path joint by joint.

    If the anchor (last command, or measured position before any command) is outside the
    position limits, the position bounds are widened to include it: joints may stay or move back
    toward the allowed range, never further out. Within limits the invariant is strict.
    """

    def __init__(self, config: SafetyConfig, forward_kinematics: ForwardKinematics | None = None) -> None:
        if config.has_workspace and forward_kinematics is None:
            raise ValueError("safety.workspace: a workspace box is configured but no forward_kinematics was given")
        self.config = config
        self._fk = forward_kinematics
        self._lo, self._hi = config.effective_position_bounds()
        names = config.limits.names
        self._gripper_mask = np.array([n == config.gripper_joint for n in names])
        self._last: np.ndarray | None = None

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last is None else self._last.copy()

    def reset(self) -> None:
        """Forget the last command, e.g. at episode start after the arm was moved by hand."""
        self._last = None

    # ---- helpers -------------------------------------------------------------------------
    def _as_joint_vector(self, value: Any, label: str) -> tuple[np.ndarray | None, str, str]:
        """(vector, kind, reason): vector is None with a violation kind when it is unusable."""
        d = self.config.limits.dim
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None, "shape", f"shape: {label} is not a numeric array"
        if arr.shape != (d,):
            return None, "shape", f"shape: {label} has shape {arr.shape}, expected ({d},)"
        if not np.all(np.isfinite(arr)):
            bad = [self.config.limits.names[i] for i in np.flatnonzero(~np.isfinite(arr))]
            return None, "nonfinite", f"nonfinite: {label} has NaN/inf at {bad}"
        return arr, "", ""

    def _box_distance(self, q: np.ndarray) -> float:
        """Distance of FK(q) outside the workspace box (0 inside, inf if FK is unusable)."""
        try:
            p = np.asarray(self._fk(q), dtype=np.float64).reshape(-1)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - a broken FK hook must hold, not crash the loop
            return math.inf
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            return math.inf
        below = np.maximum(self.config.workspace_min - p, 0.0)
        above = np.maximum(p - self.config.workspace_max, 0.0)
        return float(np.linalg.norm(below + above))

    def _hold(self, anchor: np.ndarray | None, reasons: list[str], kinds: list[str], clamped: bool = False) -> GateResult:
        if anchor is not None:
            self._last = anchor.copy()
        command = None if anchor is None else anchor.copy()
        return GateResult(command=command, held=True, clamped=clamped, reasons=tuple(reasons), kinds=tuple(kinds))

    # ---- main entry -----------------------------------------------------------------------
    def check(self, proposed: Any, current: Any | None, dt: float) -> GateResult:
        """Filter one proposed joint-position target; ``dt`` = seconds since the last command."""
        cfg = self.config
        names = cfg.limits.names
        reasons: list[str] = []
        kinds: list[str] = []

        cur = None
        if current is not None:
            cur, kind, reason = self._as_joint_vector(current, "measured position")
            if cur is None:
                reasons.append(reason)
                kinds.append(kind)
        anchor = self._last if self._last is not None else cur
        if reasons:  # a broken joint-state reading means we don't know where the arm is
            return self._hold(anchor, reasons, kinds)

        target, kind, reason = self._as_joint_vector(proposed, "proposed command")
        if target is None:
            return self._hold(anchor, [reason], [kind])
        if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not math.isfinite(dt) or dt <= 0:
            return self._hold(anchor, [f"dt: invalid control period {dt!r}"], ["dt"])
        if anchor is None:
            return self._hold(None, ["no_anchor: no last command and no measured position to hold"], ["no_anchor"])

        policy = cfg.violation_policy
        clamped = False
        # Position / gripper range. Bounds widened to the anchor so a start outside can recover.
        lo = np.minimum(self._lo, anchor)
        hi = np.maximum(self._hi, anchor)
        outside = (target < self._lo) | (target > self._hi)
        for kind, mask in (("position", outside & ~self._gripper_mask), ("gripper", outside & self._gripper_mask)):
            if not np.any(mask):
                continue
            detail = ", ".join(
                f"{names[i]}={target[i]:.4g} not in [{self._lo[i]:.4g}, {self._hi[i]:.4g}]" for i in np.flatnonzero(mask)
            )
            reasons.append(f"{kind}: {detail} ({policy[kind]})")
            kinds.append(kind)
            if policy[kind] == "hold":
                return self._hold(anchor, reasons, kinds)
            clamped = True
        target = np.clip(target, lo, hi)

        # Step and velocity relative to the last command.
        delta = target - anchor
        step_bound = cfg.limits.max_step
        vel_bound = cfg.limits.max_velocity * float(dt)
        for kind, bound, unit in (("step", step_bound, "rad/cycle"), ("velocity", vel_bound, "rad in dt")):
            over = np.abs(delta) > bound
            if not np.any(over):
                continue
            detail = ", ".join(f"{names[i]} |{delta[i]:.4g}| > {bound[i]:.4g}" for i in np.flatnonzero(over))
            reasons.append(f"{kind}: {detail} {unit} ({policy[kind]})")
            kinds.append(kind)
            if policy[kind] == "hold":
                return self._hold(anchor, reasons, kinds)
            clamped = True
        bound = np.minimum(step_bound, vel_bound)
        abs_delta = np.abs(delta)
        over = abs_delta > bound
        if np.any(over):
            # Joints within their bound have ratio >= 1, so the tightest ratio is among ``over``.
            delta = delta * float(np.min(bound[over] / abs_delta[over]))
        # Final clips guard against floating-point rounding only; both are no-ops in exact math.
        delta = np.clip(delta, -bound, bound)
        command = np.clip(anchor + delta, lo, hi)

        if cfg.has_workspace:
            command, ws_reason, ws_hold, ws_clamped = self._apply_workspace(anchor, command)
            if ws_reason:
                reasons.append(ws_reason)
                kinds.append("workspace")
            if ws_hold:
                return self._hold(anchor, reasons, kinds, clamped=clamped)
            clamped = clamped or ws_clamped

        self._last = command.copy()
        return GateResult(command=command, held=False, clamped=clamped, reasons=tuple(reasons), kinds=tuple(kinds))

    def _apply_workspace(self, anchor: np.ndarray, command: np.ndarray) -> tuple[np.ndarray, str, bool, bool]:
        """(command, reason, hold, clamped) after the Cartesian box check."""
        dist = self._box_distance(command)
        if dist == 0.0:
            return command, "", False, False
        anchor_dist = self._box_distance(anchor)
        if math.isinf(dist) or math.isinf(anchor_dist):
            return command, "workspace: forward kinematics failed or returned no finite xyz", True, False
        if anchor_dist > 0.0:
            # Started outside the box (commands never leave it): allow moves that don't go further out.
            if dist <= anchor_dist:
                return command, "", False, False
            return command, f"workspace: end effector outside box and moving away ({dist:.4g} m > {anchor_dist:.4g} m)", True, False
        if self.config.violation_policy["workspace"] == "hold":
            return command, f"workspace: end effector {dist:.4g} m outside box (hold)", True, False
        # Clamp: bisect along the joint-space segment anchor -> command for the last point inside.
        inside, outside = 0.0, 1.0
        for _ in range(self.config.workspace_search_steps):
            mid = 0.5 * (inside + outside)
            if self._box_distance(anchor + mid * (command - anchor)) == 0.0:
                inside = mid
            else:
                outside = mid
        reason = f"workspace: end effector {dist:.4g} m outside box (clamp to {inside:.3f} of the move)"
        if inside == 0.0:
            return command, reason, True, True
        return anchor + inside * (command - anchor), reason, False, True

    def check_chunk(self, actions: Any, limit_margin: float = 0.0) -> list[str]:
        """Problems with a (k, d) action chunk (shape, NaN/inf, more than ``limit_margin`` outside
        the position limits); [] if none.

        Used on a candidate policy's outputs before it is hot-swapped in. A learned policy that
        works near a limit overshoots it a little (the gate clamps those targets), so the margin
        lets such a policy through while one that aims far outside its arm's range is refused.
        """
        d = self.config.limits.dim
        names = self.config.limits.names
        try:
            arr = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError):
            return ["chunk is not a numeric array"]
        if arr.ndim != 2:
            return [f"chunk must be 2-D (k, {d}), got shape {arr.shape}"]
        if arr.shape[0] < 1:
            return ["chunk has no actions"]
        if arr.shape[1] != d:
            return [f"chunk has {arr.shape[1]} action dims, expected {d} ({', '.join(names)})"]
        problems = []
        finite = np.isfinite(arr)
        if not np.all(finite):
            rows = sorted(set(np.nonzero(~finite)[0].tolist()))
            problems.append(f"chunk has NaN/inf at steps {rows}")
        with np.errstate(invalid="ignore"):
            low = finite & (arr < self._lo - limit_margin)
            high = finite & (arr > self._hi + limit_margin)
        for j in range(d):
            if np.any(low[:, j]) or np.any(high[:, j]):
                col = arr[finite[:, j], j]
                problems.append(
                    f"{names[j]} outside [{self._lo[j]:.4g}, {self._hi[j]:.4g}] by more than {limit_margin:.4g}: "
                    f"range in chunk [{col.min():.4g}, {col.max():.4g}]"
                )
        return problems


class SafetyState(enum.Enum):
    IDLE = "idle"  # no episode: hold
    ACTIVE = "active"  # episode running: commands allowed
    LATCHED = "latched"  # e-stop: hold until an explicit, accepted reset


@dataclass
class SafetyCounters:
    commands: int = 0
    holds: int = 0
    clamps: int = 0
    violations: int = 0
    latches: int = 0


class EStopMonitor:
    """Latched e-stop supervision. The caller passes ``now`` (monotonic seconds) to every call.

    Latch causes: e-stop input pressed (any state); while ACTIVE also heartbeat loss (if
    required), stale observation, inference error/timeout, and too many gate violations within
    a window. Watchdogs are re-evaluated in ``motion_allowed(now)``, so a stale observation
    latches even when no new message arrives. While IDLE the same watchdogs block
    ``start_episode`` instead of latching, since nothing moves.
    """

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.state = SafetyState.IDLE
        self.counters = SafetyCounters()
        self.latch_causes: list[str] = []  # causes of the current latch, first cause first
        self.last_latch_causes: list[str] = []  # kept after a reset, for status reporting
        self._estop_pressed = False
        self._last_heartbeat: float | None = None
        self._last_observation: float | None = None  # time the newest observation was taken
        self._inference_started: float | None = None
        self._violation_times: deque[float] = deque()

    # ---- inputs ---------------------------------------------------------------------------
    @property
    def first_cause(self) -> str | None:
        return self.latch_causes[0] if self.latch_causes else None

    @property
    def estop_pressed(self) -> bool:
        return self._estop_pressed

    def set_estop_input(self, pressed: bool, now: float) -> None:
        """E-stop input level. Pressing latches at once; releasing never resumes anything."""
        self._estop_pressed = bool(pressed)
        if self._estop_pressed:
            self._latch("estop_input: e-stop pressed")

    def heartbeat(self, now: float) -> None:
        """Deadman / operator heartbeat."""
        self._last_heartbeat = now

    def observation(self, now: float, age: float = 0.0) -> None:
        """An observation arrived at ``now``; its data was ``age`` seconds old on arrival."""
        self._last_observation = now - max(0.0, age)

    def inference_started(self, now: float) -> None:
        self._inference_started = now

    def inference_finished(self, now: float, error: str | None = None) -> None:
        """Report the end of an inference call; an error or an over-long call latches."""
        started, self._inference_started = self._inference_started, None
        if error is not None:
            self._latch_if_active(f"inference_error: {error}")
        elif started is not None and now - started > self.config.inference_timeout_s:
            self._latch_if_active(f"inference_timeout: took {now - started:.3f} s > {self.config.inference_timeout_s} s")

    def record_gate(self, result: GateResult, now: float) -> None:
        """Count one gate result; latch after too many violations within the window."""
        c = self.counters
        if result.command is not None:
            c.commands += 1
        c.holds += int(result.held)
        c.clamps += int(result.clamped)
        if result.violated:
            c.violations += 1
        if not any(k in self.config.latch_violation_kinds for k in result.kinds):
            return
        self._violation_times.append(now)
        window = self.config.latch_violation_window_s
        while self._violation_times and self._violation_times[0] < now - window:
            self._violation_times.popleft()
        if len(self._violation_times) >= self.config.latch_violation_count:
            self._latch_if_active(
                f"violations: {len(self._violation_times)} in {window} s (last: {'; '.join(result.reasons)})"
            )

    # ---- watchdogs --------------------------------------------------------------------------
    def _heartbeat_problem(self, now: float) -> str | None:
        if not self.config.require_heartbeat:
            return None
        if self._last_heartbeat is None:
            return "heartbeat: no heartbeat received"
        age = now - self._last_heartbeat
        if age > self.config.heartbeat_timeout_s:
            return f"heartbeat: last one {age:.3f} s ago > {self.config.heartbeat_timeout_s} s"
        return None

    def _observation_problem(self, now: float) -> str | None:
        if self._last_observation is None:
            return "stale_observation: no observation received"
        age = now - self._last_observation
        if age > self.config.stale_observation_s:
            return f"stale_observation: {age:.3f} s old > {self.config.stale_observation_s} s"
        return None

    def _inference_problem(self, now: float) -> str | None:
        if self._inference_started is None:
            return None
        elapsed = now - self._inference_started
        if elapsed > self.config.inference_timeout_s:
            return f"inference_timeout: running for {elapsed:.3f} s > {self.config.inference_timeout_s} s"
        return None

    def _problems(self, now: float) -> list[str]:
        checks = (self._heartbeat_problem(now), self._observation_problem(now), self._inference_problem(now))
        return [p for p in checks if p is not None]

    def motion_allowed(self, now: float) -> bool:
        """Re-evaluate the watchdogs; True only while ACTIVE and nothing latched."""
        if self.state is SafetyState.ACTIVE:
            for problem in self._problems(now):
                self._latch(problem)
        return self.state is SafetyState.ACTIVE

    # ---- transitions ------------------------------------------------------------------------
    def _latch(self, cause: str) -> None:
        if self.state is not SafetyState.LATCHED:
            self.state = SafetyState.LATCHED
            self.counters.latches += 1
            self.latch_causes = []
        self.latch_causes.append(cause)
        self.last_latch_causes = list(self.latch_causes)

    def _latch_if_active(self, cause: str) -> None:
        # Watchdog-type causes only matter while moving; a second cause adds to an existing latch.
        if self.state is not SafetyState.IDLE:
            self._latch(cause)

    def start_episode(self, now: float) -> tuple[bool, str]:
        """IDLE -> ACTIVE, refused while latched or while any watchdog is unhappy."""
        if self.state is SafetyState.LATCHED:
            return False, f"refused: e-stop latched ({self.first_cause}); reset first"
        if self.state is SafetyState.ACTIVE:
            return False, "refused: an episode is already active"
        problems = self._problems(now)
        if problems:
            return False, "refused: " + "; ".join(problems)
        self._violation_times.clear()
        self.state = SafetyState.ACTIVE
        return True, "episode started"

    def end_episode(self) -> None:
        """ACTIVE -> IDLE. Does not clear a latch: only ``request_reset`` does."""
        if self.state is SafetyState.ACTIVE:
            self.state = SafetyState.IDLE

    def request_reset(self, now: float) -> tuple[bool, str]:
        """LATCHED -> IDLE when the e-stop input is released and no cause is present any more."""
        if self.state is not SafetyState.LATCHED:
            return True, f"not latched (state {self.state.value})"
        if self._estop_pressed:
            return False, "refused: e-stop input is still pressed"
        problems = self._problems(now)
        if problems:
            return False, "refused: " + "; ".join(problems)
        self.state = SafetyState.IDLE
        self.latch_causes = []
        self._violation_times.clear()
        return True, "reset: state idle; start an episode to move"
