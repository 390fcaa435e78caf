"""The e-stop *source*: the operator's e-stop input as a level that is republished, never a one-shot edge.

A single message published once can be lost (a reader still being discovered) and silence cannot be
told from calm. So the source publishes its current level every period, reliable and transient local,
and the executor (with ``estop_source_timeout_s`` > 0, the hardware profiles) holds the arm when the
source falls silent, as a cut e-stop wire stops a machine.

Inputs: a button of a joystick / foot pedal on ``/joy`` (pressed while held; a joystick that stops
reporting counts as pressed: any doubt means stop), and explicit press / release requests (a GUI, a
keyboard script, a hardware bridge). Pure Python: the node only converts messages and publishes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EStopSourceConfig:
    rate: float = 10.0  # Hz: the level is republished this often (the executor's timeout must exceed the period)
    joy_button: int = -1  # index into sensor_msgs/Joy.buttons; -1: no joystick input
    joy_timeout_s: float = 0.5  # a joystick silent this long reads as pressed

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not math.isfinite(self.rate) or self.rate <= 0:
            raise ValueError(f"rate: expected a number > 0 Hz, got {self.rate!r}")
        if isinstance(self.joy_button, bool) or not isinstance(self.joy_button, int) or self.joy_button < -1:
            raise ValueError(f"joy_button: expected a button index >= 0, or -1 for none, got {self.joy_button!r}")
        if not isinstance(self.joy_timeout_s, (int, float)) or not self.joy_timeout_s > 0:
            raise ValueError(f"joy_timeout_s: expected a number > 0, got {self.joy_timeout_s!r}")


class EStopSource:
    """The level to publish. ``now``: monotonic seconds, passed in."""

    def __init__(self, config: EStopSourceConfig, now: float) -> None:
        self.config = config
        self._requested = False  # press / release requests
        self._button = False
        self._joy_time = now  # a joystick gets one timeout from start-up to report

    def press(self) -> None:
        self._requested = True

    def release(self) -> None:
        """Release the requested press (a held button or a silent joystick still press)."""
        self._requested = False

    def joy(self, buttons: Sequence[int], now: float) -> None:
        b = self.config.joy_button
        if b >= 0:
            # A message without the configured button is a misconfigured joystick: pressed.
            self._button = b >= len(buttons) or bool(buttons[b])
            self._joy_time = now

    def pressed(self, now: float) -> tuple[bool, str]:
        """(level, why) to publish now."""
        if self._requested:
            return True, "press requested"
        if self.config.joy_button >= 0:
            if now - self._joy_time > self.config.joy_timeout_s:
                return True, f"joystick silent for {now - self._joy_time:.2f} s"
            if self._button:
                return True, f"button {self.config.joy_button} held"
        return False, "released"
