"""Operator input -> joint-position targets, for the teleop node (gamepad, keyboard).

Every source produces absolute joint targets (rad, the arm's joint order) that the policy
executor gates like any other command. Velocity-style inputs (gamepad axes, keys) are integrated
from the arm's measured position at the moment the operator engages, so taking over never jumps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _int_list(name: str, values, length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or any(isinstance(v, bool) or not isinstance(v, int) or v < -1 for v in values):
        raise ValueError(f"{name} must be {length} integers >= -1 (-1: unused), got {list(values)!r}")
    return values


def _float_list(name: str, values, length: int) -> tuple[float, ...]:
    values = tuple(values)
    if len(values) != length or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be {length} finite numbers, got {list(values)!r}")
    return tuple(float(v) for v in values)


@dataclass
class JoyMapping:
    """sensor_msgs/Joy -> joint velocities. Lists are per joint, in the arm's joint order.

    A joint moves at ``axis_speeds[j]`` rad/s at full deflection of ``axes[j]`` (sign flips the
    direction) and at ``button_speeds[j]`` while ``increase_buttons[j]`` / ``decrease_buttons[j]``
    is held; -1 leaves an input unused. Nothing moves unless ``deadman_button`` is held.
    ``intervention_button`` toggles an operator takeover of a policy episode (edge-triggered).
    """

    joints: int = 6
    axes: tuple[int, ...] = (0, 1, 4, 3, -1, -1)
    axis_speeds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
    increase_buttons: tuple[int, ...] = (-1, -1, -1, -1, 1, 5)
    decrease_buttons: tuple[int, ...] = (-1, -1, -1, -1, 2, 7)
    button_speeds: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 1.5, 1.5)
    deadman_button: int = 4
    intervention_button: int = 3
    deadzone: float = 0.1  # |axis| below this counts as 0

    def __post_init__(self) -> None:
        n = self.joints
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"joints must be an integer >= 1, got {n!r}")
        self.axes = _int_list("axes", self.axes, n)
        self.increase_buttons = _int_list("increase_buttons", self.increase_buttons, n)
        self.decrease_buttons = _int_list("decrease_buttons", self.decrease_buttons, n)
        self.axis_speeds = _float_list("axis_speeds", self.axis_speeds, n)
        self.button_speeds = _float_list("button_speeds", self.button_speeds, n)
        if isinstance(self.deadman_button, bool) or not isinstance(self.deadman_button, int) or self.deadman_button < 0:
            raise ValueError(f"deadman_button must be a button index >= 0, got {self.deadman_button!r}")
        if isinstance(self.intervention_button, bool) or not isinstance(self.intervention_button, int) or self.intervention_button < -1:
            raise ValueError(f"intervention_button must be a button index or -1, got {self.intervention_button!r}")
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {self.deadzone!r}")

    @staticmethod
    def _pressed(buttons: Sequence[int], index: int) -> bool:
        return 0 <= index < len(buttons) and bool(buttons[index])

    def deadman(self, buttons: Sequence[int]) -> bool:
        return self._pressed(buttons, self.deadman_button)

    def intervention(self, buttons: Sequence[int]) -> bool:
        return self._pressed(buttons, self.intervention_button)

    def velocities(self, axes: Sequence[float], buttons: Sequence[int]) -> np.ndarray:
        """Joint velocities (rad/s) commanded by one Joy message (zero without the deadman)."""
        velocity = np.zeros(self.joints)
        if not self.deadman(buttons):
            return velocity
        for j in range(self.joints):
            axis = self.axes[j]
            if 0 <= axis < len(axes) and abs(axes[axis]) >= self.deadzone:
                velocity[j] += self.axis_speeds[j] * float(axes[axis])
            if self._pressed(buttons, self.increase_buttons[j]):
                velocity[j] += self.button_speeds[j]
            if self._pressed(buttons, self.decrease_buttons[j]):
                velocity[j] -= self.button_speeds[j]
        return velocity


class JointTargetIntegrator:
    """Integrates joint velocities into position targets within the joint limits."""

    def __init__(self, lower: Sequence[float], upper: Sequence[float]) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        if self.lower.shape != self.upper.shape or np.any(self.lower >= self.upper):
            raise ValueError(f"joint limits: lower {self.lower} must be below upper {self.upper}, same length")
        self.target: np.ndarray | None = None

    @property
    def engaged(self) -> bool:
        return self.target is not None

    def engage(self, measured: Sequence[float]) -> None:
        """Start from the arm's measured position (no jump when the operator takes over)."""
        measured = np.asarray(measured, dtype=np.float64)
        if measured.shape != self.lower.shape:
            raise ValueError(f"measured position has shape {measured.shape}, expected {self.lower.shape}")
        self.target = np.clip(measured, self.lower, self.upper)

    def release(self) -> None:
        self.target = None

    def step(self, velocity: np.ndarray, dt: float) -> np.ndarray:
        if self.target is None:
            raise RuntimeError("engage() before step()")
        self.target = np.clip(self.target + np.asarray(velocity) * dt, self.lower, self.upper)
        return self.target.copy()


# Keyboard layout for development: key -> (joint index, direction). Two keys per joint.
KEYBOARD_BINDINGS: dict[str, tuple[int, float]] = {
    "q": (0, 1.0), "a": (0, -1.0),
    "w": (1, 1.0), "s": (1, -1.0),
    "e": (2, 1.0), "d": (2, -1.0),
    "r": (3, 1.0), "f": (3, -1.0),
    "t": (4, 1.0), "g": (4, -1.0),
    "y": (5, 1.0), "h": (5, -1.0),
}
KEYBOARD_INTERVENTION_KEY = " "


def keyboard_velocity(key: str, joints: int, speed: float) -> np.ndarray:
    """Joint velocities for one pressed key (zero for unbound keys)."""
    velocity = np.zeros(joints)
    if key in KEYBOARD_BINDINGS:
        joint, direction = KEYBOARD_BINDINGS[key]
        if joint < joints:
            velocity[joint] = direction * speed
    return velocity

