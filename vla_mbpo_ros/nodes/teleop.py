"""Teleoperation: operator joint targets for the policy executor.

``source`` picks the input:

* ``joy``: sensor_msgs/Joy (e.g. the ``joy`` package's node) through core.data.JoyMapping: axes
  and buttons move joints at configured speeds, only while the deadman button is held;
* ``keyboard``: keys of this process's terminal (development only; needs a tty on stdin);
* ``leader``: the SO-101 leader arm through LeRobot's SO101Leader (its positions are the
  targets); the node refuses to start when the serial port is absent or the arm is uncalibrated;
* ``expert``: the sim's scripted expert, which the sim node publishes itself (sim_robot
  ``expert_teleop: true``): this node publishes no targets then.

Targets go out as sensor_msgs/JointState (names + positions, stamped) on
/vla_mbpo/teleop/joint_command; the policy executor gates them (it is the only path to the arm).
Gamepad/keyboard targets start from the measured /joint_states when the operator engages, so a
takeover never jumps. The intervention button/key toggles an operator takeover of a policy
episode: EpisodeEvent INTERVENTION_START / INTERVENTION_END on /vla_mbpo/episode_event.

Episodes (reset, start, stop, labels) are the episode manager's job; this node only drives.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy

from vla_mbpo_ros.bringup import config_dir
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.data.teleop import (
    KEYBOARD_BINDINGS,
    KEYBOARD_INTERVENTION_KEY,
    JointTargetIntegrator,
    JoyMapping,
    keyboard_velocity,
)
from vla_mbpo_ros.core.robot.joints import reorder
from vla_mbpo_ros.msg import EpisodeEvent
from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS, SENSOR_QOS, ConfigError, declare, run_node

SOURCES = ("joy", "keyboard", "leader", "expert")
_KEY_HOLD_S = 0.15  # a key counts as held this long after each (auto-repeated) press


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop")
        self.source = declare(self, "source", "joy", "joy, keyboard, leader or expert")
        if self.source not in SOURCES:
            raise ConfigError(f"source: expected one of {list(SOURCES)}, got {self.source!r}")
        robot_yaml = declare(self, "robot_config", "", "robot yaml with joint_names + safety ('' = config/robots/so101.yaml)")
        try:
            limits = load_safety_config(robot_yaml or config_dir() / "robots" / "so101.yaml").limits
        except (ValueError, OSError) as err:
            raise ConfigError(f"robot_config: {err}") from err
        self.joint_names = limits.names
        self.rate = declare(self, "rate_hz", 30.0, "operator targets are published at this rate")
        if not self.rate > 0:
            raise ConfigError(f"rate_hz: expected > 0, got {self.rate}")
        command_topic = declare(self, "command_topic", "/vla_mbpo/teleop/joint_command")
        self.integrator = JointTargetIntegrator(limits.position_min, limits.position_max)
        self._lock = threading.Lock()
        self._measured: np.ndarray | None = None
        self._intervening = False
        self._episode = (-1, "")  # (index, task) of the running episode, from the episode manager's events
        self._stop = threading.Event()  # ends the keyboard reader

        self.command_pub = self.create_publisher(JointState, command_topic, RELIABLE_QOS)
        self.event_pub = self.create_publisher(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)
        self.create_subscription(EpisodeEvent, "/vla_mbpo/episode_event", self._on_episode_event, RELIABLE_QOS)
        self.create_subscription(JointState, declare(self, "joint_state_topic", "/joint_states"), self._on_joint_state, SENSOR_QOS)
        self._setup_source()
        if self.source != "expert":
            self.create_timer(1.0 / self.rate, self._tick)
        self.get_logger().info(f"teleop source {self.source}, targets on {command_topic}")

    # ------------------------------------------------------------------ sources
    def _setup_source(self) -> None:
        if self.source == "joy":
            try:
                self.mapping = JoyMapping(
                    joints=len(self.joint_names),
                    axes=tuple(declare(self, "joy.axes", list(JoyMapping.axes), "axis index per joint (-1: none)")),
                    axis_speeds=tuple(declare(self, "joy.axis_speeds", list(JoyMapping.axis_speeds), "rad/s at full deflection")),
                    increase_buttons=tuple(declare(self, "joy.increase_buttons", list(JoyMapping.increase_buttons))),
                    decrease_buttons=tuple(declare(self, "joy.decrease_buttons", list(JoyMapping.decrease_buttons))),
                    button_speeds=tuple(declare(self, "joy.button_speeds", list(JoyMapping.button_speeds), "rad/s")),
                    deadman_button=declare(self, "joy.deadman_button", JoyMapping.deadman_button),
                    intervention_button=declare(self, "joy.intervention_button", JoyMapping.intervention_button, "-1: none"),
                    deadzone=declare(self, "joy.deadzone", JoyMapping.deadzone),
                )
            except ValueError as err:
                raise ConfigError(f"joy.{err}") from err
            self._joy: Joy | None = None
            self._joy_intervention = False
            self.create_subscription(Joy, declare(self, "joy_topic", "/joy"), self._on_joy, SENSOR_QOS)
        elif self.source == "keyboard":
            self.key_speed = declare(self, "keyboard.speed", 0.8, "rad/s while a key is held")
            if not sys.stdin.isatty():
                raise ConfigError("source: keyboard needs a terminal on stdin (run the node in a terminal)")
            self._key_velocity = np.zeros(len(self.joint_names))
            self._key_until = 0.0
            threading.Thread(target=self._read_keys, name="keyboard", daemon=True).start()
            self.get_logger().info(f"keys {' '.join(KEYBOARD_BINDINGS)} move joints, space toggles intervention")
        elif self.source == "leader":
            self._connect_leader()

    def _connect_leader(self) -> None:
        from vla_mbpo_ros.core.robot.so101_units import So101Units, So101UnitsConfig

        port = declare(self, "leader.port", "/dev/ttyACM0", "serial port of the SO-101 leader arm")
        robot_id = declare(self, "leader.id", "leader", "LeRobot calibration id")
        calibration_dir = declare(self, "leader.calibration_dir", "", "'' = LeRobot's default calibration directory")
        try:
            self.units = So101Units(So101UnitsConfig(
                joint_signs=tuple(declare(self, "leader.joint_signs", [1.0] * 5)),
                joint_offsets=tuple(declare(self, "leader.joint_offsets", [0.0] * 5)),
                gripper_closed=declare(self, "leader.gripper_closed", So101UnitsConfig.gripper_closed),
                gripper_open=declare(self, "leader.gripper_open", So101UnitsConfig.gripper_open),
            ))
        except ValueError as err:
            raise ConfigError(f"leader.{err}") from err
        if not Path(port).exists():
            raise ConfigError(f"leader.port: {port} does not exist: connect the SO-101 leader arm or set leader.port")
        from lerobot.teleoperators.so_leader import SO101Leader, SO101LeaderConfig

        config = SO101LeaderConfig(port=port, id=robot_id, calibration_dir=Path(calibration_dir) if calibration_dir else None)
        self.leader = SO101Leader(config)
        try:
            self.leader.connect(calibrate=False)  # calibration is interactive: never from a node
        except Exception as err:  # noqa: BLE001  (serial/bus errors of any kind: refuse to start, named)
            raise ConfigError(f"leader.port: cannot connect to the leader arm on {port}: {err}") from err
        if not self.leader.is_calibrated:
            self.leader.disconnect()
            raise ConfigError(f"leader.id: the leader arm {robot_id!r} is not calibrated: run lerobot-calibrate first")

    def _read_keys(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while not self._stop.is_set():
                key = os.read(fd, 1).decode(errors="ignore").lower()
                with self._lock:
                    if key == KEYBOARD_INTERVENTION_KEY:
                        self._set_intervention(not self._intervening)
                    elif key in KEYBOARD_BINDINGS:
                        self._key_velocity = keyboard_velocity(key, len(self.joint_names), self.key_speed)
                        self._key_until = time.monotonic() + _KEY_HOLD_S
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    # ------------------------------------------------------------------ inputs
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            measured = reorder(msg.name, msg.position, self.joint_names, "joint_states")
        except ValueError as err:
            self.get_logger().error(str(err), throttle_duration_sec=5.0)
            return
        with self._lock:
            self._measured = measured

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        """Follow the running episode so interventions name it."""
        if msg.event in (EpisodeEvent.INTERVENTION_START, EpisodeEvent.INTERVENTION_END):
            return
        with self._lock:
            self._episode = (msg.episode_index, msg.task) if msg.event == EpisodeEvent.START else (-1, "")

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            self._joy = msg
            pressed = self.mapping.intervention(msg.buttons)
            if pressed and not self._joy_intervention:  # rising edge toggles
                self._set_intervention(not self._intervening)
            self._joy_intervention = pressed

    def _set_intervention(self, active: bool) -> None:
        """Called with the lock held."""
        if active == self._intervening:
            return
        self._intervening = active
        self._publish_event(EpisodeEvent.INTERVENTION_START if active else EpisodeEvent.INTERVENTION_END)
        self.get_logger().info("operator took over" if active else "operator handed back to the policy")

    def _publish_event(self, event: int) -> None:
        """Called with the lock held; episode_index is -1 outside an episode."""
        index, task = self._episode
        msg = EpisodeEvent(event=event, episode_index=index, task=task, source="teleop")
        msg.header.stamp = self.get_clock().now().to_msg()
        self.event_pub.publish(msg)

    # ------------------------------------------------------------------ control tick
    def _tick(self) -> None:
        with self._lock:
            target = self._target()
        if target is not None:
            msg = JointState(name=list(self.joint_names), position=target.tolist())
            msg.header.stamp = self.get_clock().now().to_msg()
            self.command_pub.publish(msg)

    def _target(self) -> np.ndarray | None:
        """This tick's target, or None to publish nothing (the executor then holds). Lock held."""
        dt = 1.0 / self.rate
        if self.source == "leader":
            return self.units.from_lerobot(self.leader.get_action())
        if self.source == "joy":
            if self._joy is None or not self.mapping.deadman(self._joy.buttons):
                self.integrator.release()
                return None
            velocity = self.mapping.velocities(self._joy.axes, self._joy.buttons)
        else:  # keyboard: engaged from the first key on
            held = time.monotonic() < self._key_until
            if not held and not self.integrator.engaged:
                return None
            velocity = self._key_velocity if held else np.zeros(len(self.joint_names))
        if not self.integrator.engaged:
            if self._measured is None:
                self.get_logger().warning("no /joint_states yet: cannot engage", throttle_duration_sec=2.0)
                return None
            self.integrator.engage(self._measured)
        return self.integrator.step(velocity, dt)

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        self._stop.set()
        leader = getattr(self, "leader", None)
        if leader is not None and leader.is_connected:
            leader.disconnect()


def main() -> int:
    return run_node(TeleopNode)


if __name__ == "__main__":
    raise SystemExit(main())
