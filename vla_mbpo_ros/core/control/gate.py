"""The safety gate: every proposed joint target becomes a command that respects the limits.

``SafetyGate`` turns every proposed joint-position target into a command that respects the
position limits, the per-cycle step limit and the velocity limit relative to the *last command
sent*, or holds the last command. NaN/inf/wrong shapes always hold. Nothing non-finite leaves.
Pure Python + numpy; no ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_mbpo_ros.core.control.limits import ForwardKinematics, SafetyConfig


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
