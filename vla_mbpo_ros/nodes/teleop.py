"""Teleoperation: operator joint targets for the policy executor, and scripted demonstration runs.

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

With ``episodes`` > 0 the node also runs that many demonstrations and exits 0 (which ends a
bringup profile): reset the sim, start the executor and recorder episodes, publish START, wait
for /sim/success (then ``success_hold_s`` more) or the time limit, end both with SUCCESS or
FAILURE, publish the label event, repeat. While the executor's e-stop is latched the next episode
waits for an operator's /vla_mbpo/reset_estop; any other failed step ends the node with exit code 1.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool

from vla_mbpo_ros.bringup import config_dir
from vla_mbpo_ros.core.data import JointTargetIntegrator, JoyMapping
from vla_mbpo_ros.core.data.recording import reorder
from vla_mbpo_ros.core.data.teleop import KEYBOARD_BINDINGS, KEYBOARD_INTERVENTION_KEY, keyboard_velocity
from vla_mbpo_ros.core.safety import load_safety_config
from vla_mbpo_ros.msg import EpisodeEvent
from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, ConfigError, declare, run_node
from vla_mbpo_ros.srv import EndEpisode, ResetSim, StartEpisode

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
        self._episode_index = -1
        self._exit_code = 0
        self._stop = threading.Event()

        self.command_pub = self.create_publisher(JointState, command_topic, RELIABLE_QOS)
        self.event_pub = self.create_publisher(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)
        self.create_subscription(JointState, declare(self, "joint_state_topic", "/joint_states"), self._on_joint_state, SENSOR_QOS)
        self._setup_source()
        if self.source != "expert":
            self.create_timer(1.0 / self.rate, self._tick)
        self._setup_auto_episodes()
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
        from vla_mbpo_ros.core.so101_units import So101Units, So101UnitsConfig

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

    def _publish_event(self, event: int, task: str = "", source: str = "") -> None:
        msg = EpisodeEvent(event=event, episode_index=self._episode_index, task=task, source=source or "teleop")
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

    # ------------------------------------------------------------------ auto episodes
    def _setup_auto_episodes(self) -> None:
        self.episodes = declare(self, "episodes", 0, "run this many demonstrations, then exit 0 (0: operator-driven)")
        self.task = declare(self, "task", "pick up the cube", "language instruction of every episode")
        default_source = "scripted_expert" if self.source == "expert" else "teleop"
        self.episode_source = declare(self, "episode_source", default_source, "recorded as the episodes' source")
        self.time_limit = declare(self, "episode_time_limit_s", 20.0, "an episode without success ends as FAILURE (s)")
        self.success_hold = declare(self, "success_hold_s", 1.0, "keep recording this long after success (s)")
        self.start_delay = declare(self, "start_delay_s", 1.0, "wait before the first episode (s)")
        self.service_timeout = declare(self, "service_timeout_s", 60.0, "wait for services and saves (s)")
        reset_service = declare(self, "reset_service", "/sim/reset", "'' = no reset between episodes")
        record = declare(self, "record", True, "record the episodes with the recorder node")
        if self.episodes < 0:
            raise ConfigError(f"episodes: expected >= 0, got {self.episodes}")
        if self.episodes == 0:
            return
        group = ReentrantCallbackGroup()
        self._episode_clients = {
            "executor_start": self.create_client(StartEpisode, "/vla_mbpo/executor/start_episode", callback_group=group),
            "executor_end": self.create_client(EndEpisode, "/vla_mbpo/executor/end_episode", callback_group=group),
        }
        if record:
            self._episode_clients["recorder_start"] = self.create_client(StartEpisode, "/vla_mbpo/recorder/start_episode", callback_group=group)
            self._episode_clients["recorder_end"] = self.create_client(EndEpisode, "/vla_mbpo/recorder/end_episode", callback_group=group)
        self.reset_client = self.create_client(ResetSim, reset_service, callback_group=group) if reset_service else None
        self._success = False
        self.create_subscription(Bool, "/sim/success", self._on_success, LATCHED_QOS, callback_group=group)
        self._worker = threading.Thread(target=self._run_episodes, name="episodes", daemon=True)
        self._worker.start()

    def _on_success(self, msg: Bool) -> None:
        self._success = msg.data

    def _call(self, client, request):
        if not client.wait_for_service(timeout_sec=self.service_timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        deadline = time.monotonic() + self.service_timeout
        while not future.done():
            if self._stop.wait(0.01) or time.monotonic() > deadline:
                raise TimeoutError(f"no response from {client.srv_name}")
        response = future.result()
        if not response.success:
            raise RuntimeError(f"{client.srv_name} refused: {response.message}")
        return response

    def _run_episodes(self) -> None:
        try:
            self._stop.wait(self.start_delay)
            for n in range(self.episodes):
                if self._stop.is_set():
                    return
                self._run_episode(n)
            self.get_logger().info(f"recorded {self.episodes} episode(s): done")
        except Exception as err:  # noqa: BLE001  (a failed run must end the node, named)
            if self._stop.is_set():
                return
            self.get_logger().error(f"episodes aborted: {type(err).__name__}: {err}")
            self._exit_code = 1
        if not self._stop.wait(0.5):  # let the last EpisodeEvent reach its subscribers first
            self.context.try_shutdown()  # work done: run_node returns exit_code()

    def _run_episode(self, n: int) -> None:
        if self.reset_client is not None:
            self._call(self.reset_client, ResetSim.Request(seed=-1))
        self._success = False  # /sim/success publishes changes only: a reset clears it
        # Expert targets reach the executor on the teleop topic, like an operator's.
        request = StartEpisode.Request(task=self.task, source="teleop")
        while True:  # the executor refuses while its e-stop is latched: an operator must reset it
            try:
                self._call(self._episode_clients["executor_start"], request)
                break
            except RuntimeError as err:
                self.get_logger().warning(f"{err}; retrying", throttle_duration_sec=10.0)
                if self._stop.wait(1.0):
                    raise TimeoutError("stopped") from err
        self._episode_index = n
        if "recorder_start" in self._episode_clients:
            started = self._call(self._episode_clients["recorder_start"], StartEpisode.Request(task=self.task, source=self.episode_source))
            self._episode_index = started.episode_index
        self._publish_event(EpisodeEvent.START, self.task, self.episode_source)
        started_at = time.monotonic()
        success_at = None
        while time.monotonic() - started_at < self.time_limit:
            if self._success and success_at is None:
                success_at = time.monotonic()
            if success_at is not None and time.monotonic() - success_at >= self.success_hold:
                break
            if self._stop.wait(0.02):
                raise TimeoutError("stopped")
        success = success_at is not None
        outcome = EndEpisode.Request.OUTCOME_SUCCESS if success else EndEpisode.Request.OUTCOME_FAILURE
        # Recorder first: the frames end with the demonstration, not with the executor's holds.
        if "recorder_end" in self._episode_clients:
            saved = self._call(self._episode_clients["recorder_end"], EndEpisode.Request(outcome=outcome))
            self.get_logger().info(saved.message)
        self._call(self._episode_clients["executor_end"], EndEpisode.Request(outcome=outcome))
        self._publish_event(EpisodeEvent.SUCCESS if success else EpisodeEvent.FAILURE, self.task, self.episode_source)
        self.get_logger().info(f"episode {self._episode_index} ({n + 1}/{self.episodes}): {'success' if success else 'failure'}")

    # ------------------------------------------------------------------ shutdown
    def exit_code(self) -> int:
        return self._exit_code

    def close(self) -> None:
        self._stop.set()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.join(timeout=5.0)
        leader = getattr(self, "leader", None)
        if leader is not None and leader.is_connected:
            leader.disconnect()


def main() -> int:
    return run_node(TeleopNode, threads=3)


if __name__ == "__main__":
    raise SystemExit(main())
