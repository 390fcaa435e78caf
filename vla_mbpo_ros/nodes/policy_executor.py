"""Safety-gated policy executor: the only path from a policy or an operator to the arm.

Glue around ``core.control.executor.ExecutorCore`` (every decision lives there). ROS callbacks run
on the node's single-threaded executor and only convert, lock and hand over; the e-stop callback
publishes the hold itself, before the next control cycle. Threads of its own: control (fixed rate on
absolute monotonic deadlines; each cycle asks the core for a command and publishes it + one
ExecutedCommand), inference (started by the core's watermark request, runs the policy on the latest
observation), and the update path (_policy_updates.py: fetch, verify, validate, swap at a boundary).
Topics, services and QoS: README, "ROS interface". Data is judged by its capture stamp (ROS clock):
the stale-observation watchdog watches /vla_mbpo/observation when a policy can run, /joint_states
otherwise (teleop: no cameras needed).
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_mbpo_ros.bringup import config_dir
from vla_mbpo_ros.conversions import (
    capture_stamp, chunk_message, command_messages, observation_from_msg, safety_status_message, seconds_since,
    stamp_to_seconds,
)
from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.control.executor import Command, ExecutorConfig, ExecutorCore, InferenceRequest
from vla_mbpo_ros.core.control.executor_report import ExecutorTimings, SafetySnapshot, StatusThrottle, executor_diagnostics
from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.control.hot_swap import HotSwapConfig, PolicySlot
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.control.rate import FixedRate
from vla_mbpo_ros.core.policy import replay  # noqa: F401  (registers the "replay" policy type)
from vla_mbpo_ros.core.policy.base import load_policy
from vla_mbpo_ros.core.policy.transfer import TransferConfig
from vla_mbpo_ros.core.robot.joints import reorder
from vla_mbpo_ros.core.util.recent import RecentItems
from vla_mbpo_ros.msg import ActionChunk, EpisodeEvent, ExecutedCommand, MultiViewObservation, SafetyStatus
from vla_mbpo_ros.nodes._diagnostics import DiagnosticsPublisher
from vla_mbpo_ros.nodes._policy_updates import PolicyUpdatePath
from vla_mbpo_ros.nodes._runtime import (ESTOP_QOS, LATCHED_QOS, OBSERVATION_QOS, RELIABLE_QOS, SENSOR_QOS, ConfigError,
                                         declare_config, publishing_until_shutdown, run_node)
from vla_mbpo_ros.srv import EndEpisode, StartEpisode


@dataclass
class ExecutorParams:
    """The node's own parameters (config/policy_executor.yaml). The core's are ``ExecutorConfig``,
    the update path's ``HotSwapConfig`` and ``TransferConfig`` (``checkpoint_transfer.*``)."""

    policy_enabled: bool = True  # false: teleop only, no policy is loaded
    policy_checkpoint: str = ""  # loaded at start; "" = wait for a PolicyUpdate
    safety_config: str = ""  # robot yaml with joint_names + safety; "" = config/robots/so101.yaml
    command_interface: str = "trajectory"  # trajectory (JointTrajectory) or position (Float64MultiArray)
    trajectory_topic: str = "/arm_controller/joint_trajectory"
    position_topic: str = "/forward_position_controller/commands"
    observation_topic: str = "/vla_mbpo/observation"
    joint_state_topic: str = "/joint_states"
    status_period: float = 1.0  # SafetyStatus also this often (s)
    diagnostics_period: float = 1.0
    diagnostics_window_s: float = 10.0
    inference_threads: int = 1  # torch CPU threads
    # A thread that wants the GIL waits up to this long behind inference code: well under the period.
    gil_switch_interval_s: float = 0.0005

    def __post_init__(self) -> None:
        if self.command_interface not in ("trajectory", "position"):
            raise ValueError(f"command_interface: expected trajectory or position, got {self.command_interface!r}")


class PolicyExecutorNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_executor")
        self.params = params = declare_config(self, ExecutorParams)
        self.config = declare_config(self, ExecutorConfig)
        swap_config = declare_config(self, HotSwapConfig)
        transfer_config = declare_config(self, TransferConfig, "checkpoint_transfer")
        try:
            safety = load_safety_config(params.safety_config or config_dir() / "robots" / "so101.yaml")
        except (ValueError, OSError) as err:
            raise ConfigError(f"safety_config: {err}") from err
        torch.set_num_threads(params.inference_threads)
        sys.setswitchinterval(params.gil_switch_interval_s)
        self.core = ExecutorCore(self.config, safety)
        self.joint_names = safety.limits.names
        self._lock = threading.Lock()  # every call into self.core and self.slot, and the publishes that follow
        self.timings = ExecutorTimings(params.diagnostics_window_s)
        self.slot = PolicySlot()
        self.throttle = StatusThrottle(params.status_period)
        self.observations: RecentItems[MultiViewObservation] = RecentItems(swap_config.validation_observations)
        self._chunk_counter = 0
        self._stop = threading.Event()

        if params.command_interface == "trajectory":
            self.arm_pub = self.create_publisher(JointTrajectory, params.trajectory_topic, RELIABLE_QOS)
        else:
            self.arm_pub = self.create_publisher(Float64MultiArray, params.position_topic, RELIABLE_QOS)
        self.executed_pub = self.create_publisher(ExecutedCommand, "/vla_mbpo/executed_command", RELIABLE_QOS)
        self.chunk_pub = self.create_publisher(ActionChunk, "/vla_mbpo/action_chunk", RELIABLE_QOS)
        self.status_pub = self.create_publisher(SafetyStatus, "/vla_mbpo/safety_status", LATCHED_QOS)
        # check_chunk of a candidate only: a gate of its own, stateless, safe off the lock.
        self.updates = PolicyUpdatePath(self, self._lock, self.core, self.slot, SafetyGate(safety), swap_config,
                                        transfer_config, params.policy_enabled, self.observations,
                                        lambda: self._publish_status(self.get_clock().now().to_msg()))
        if params.policy_enabled and params.policy_checkpoint:
            try:
                policy = load_policy(params.policy_checkpoint)
            except (ValueError, OSError) as err:
                raise ConfigError(f"policy_checkpoint: cannot load {params.policy_checkpoint}: {err}") from err
            self.updates.install(policy, policy.version, "loaded at start")

        # Transient local gets a latched source's last level; volatile also hears plain publishers (ros2 topic pub).
        for qos in (ESTOP_QOS, RELIABLE_QOS):
            self.create_subscription(Bool, "/vla_mbpo/estop", self._on_estop, qos)
        self.create_subscription(JointState, params.joint_state_topic, self._on_joint_state, SENSOR_QOS)
        self.create_subscription(MultiViewObservation, params.observation_topic, self._on_observation, OBSERVATION_QOS)
        self.create_subscription(Header, "/vla_mbpo/heartbeat", self._on_heartbeat, SENSOR_QOS)
        self.create_subscription(JointState, "/vla_mbpo/teleop/joint_command", self._on_teleop, SENSOR_QOS)
        self.create_subscription(EpisodeEvent, "/vla_mbpo/episode_event", self._on_episode_event, RELIABLE_QOS)
        self.create_service(Trigger, "/vla_mbpo/reset_estop", self._on_reset)
        self.create_service(StartEpisode, "/vla_mbpo/executor/start_episode", self._on_start)
        self.create_service(EndEpisode, "/vla_mbpo/executor/end_episode", self._on_end)
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=params.diagnostics_period)

        self._requests: queue.Queue[InferenceRequest | None] = queue.Queue()  # the core keeps one in flight
        self._threads = [threading.Thread(target=self._control_loop, name="control", daemon=True),
                         threading.Thread(target=self._inference_loop, name="inference", daemon=True)]
        with self._lock:
            self._publish_status(self.get_clock().now().to_msg())
        for thread in self._threads:
            thread.start()
        self.updates.start()
        self.get_logger().info(f"executor: {self.config.control_rate} Hz, {params.command_interface} interface, policy "
                               f"{self.slot.version or ('none yet' if params.policy_enabled else 'disabled (teleop only)')}, "
                               f"heartbeat {'required' if safety.require_heartbeat else 'not required'}")

    # ------------------------------------------------------------------ inputs
    def _on_estop(self, msg: Bool, info: dict) -> None:
        received = time.monotonic()  # latency statistics include the wait for the lock
        with self._lock:
            stamp = self.get_clock().now().to_msg()  # the status reports when the gate saw the press
            was_latched = self.core.monitor.state is SafetyState.LATCHED
            command = self.core.estop(msg.data, received, info.get("source_timestamp", 0))
            if command is not None:
                self._publish_command(command)
            published, published_ns = time.monotonic(), time.time_ns()
            self._publish_status(stamp)
        if command is not None and command.positions is not None:  # the press's own stamp: its DDS source time
            self.timings.estop_hold(received, published, published_ns, info.get("source_timestamp", 0))
        if msg.data and not was_latched:
            self.get_logger().error("e-stop pressed: latched, holding")

    def _joint_vector(self, msg: JointState, what: str) -> np.ndarray | None:
        try:
            return reorder(msg.name, msg.position, self.joint_names, what)
        except ValueError as err:
            self.get_logger().error(f"{what} ignored: {err}", throttle_duration_sec=5.0)
            return None

    def _on_joint_state(self, msg: JointState) -> None:
        now = time.monotonic()
        if (q := self._joint_vector(msg, "joint_states")) is not None:
            with self._lock:
                self.core.set_joint_state(q, now)
                if not self.params.policy_enabled:
                    self.core.observation(now, seconds_since(self.get_clock(), stamp_to_seconds(msg.header.stamp)))

    def _on_observation(self, msg: MultiViewObservation) -> None:
        now = time.monotonic()
        self.observations.add(msg)
        if self.params.policy_enabled:
            with self._lock:
                self.core.observation(now, seconds_since(self.get_clock(), capture_stamp(msg)))

    def _on_heartbeat(self, _msg: Header) -> None:
        now = time.monotonic()
        with self._lock:
            self.core.heartbeat(now)

    def _on_teleop(self, msg: JointState) -> None:
        now = time.monotonic()
        if (target := self._joint_vector(msg, "teleop command")) is not None:
            with self._lock:
                self.core.set_teleop_target(target, now)

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event not in (EpisodeEvent.INTERVENTION_START, EpisodeEvent.INTERVENTION_END):
            return
        active = msg.event == EpisodeEvent.INTERVENTION_START
        with self._lock:
            changed = self.core.set_intervention(active)
        if changed:
            self.get_logger().info("operator took over" if active else "operator handed back to the policy")

    # ------------------------------------------------------------------ services
    def _log_outcome(self, ok: bool, text: str) -> None:
        if ok:  # one severity per logging call site (rclpy caches them)
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            response.success, response.message = self.core.reset_estop(time.monotonic())
            if response.success:
                self.updates.swap_at_boundary()
                self._publish_status(self.get_clock().now().to_msg())
        self._log_outcome(response.success, f"reset_estop: {response.message}")
        return response

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response) -> StartEpisode.Response:
        with self._lock:
            ok, message, index = self.core.start_episode(request.task, request.source, time.monotonic())
            if ok and request.source == "policy" and self.slot.policy is not None:
                self.slot.policy.reset()
            self._publish_status(self.get_clock().now().to_msg())
        response.success, response.message, response.episode_index = ok, message, index
        self._log_outcome(ok, f"start_episode: {message}")
        return response

    def _on_end(self, _request: EndEpisode.Request, response: EndEpisode.Response) -> EndEpisode.Response:
        with self._lock:
            ok, message, index = self.core.end_episode()
            self.updates.swap_at_boundary()
            self._publish_status(self.get_clock().now().to_msg())
        response.success, response.message, response.episode_index = ok, message, index
        self.get_logger().info(f"end_episode: {message}")
        return response

    # ------------------------------------------------------------------ control loop
    def _control_loop(self) -> None:
        rate = FixedRate(self.config.period)
        while not self._stop.is_set() and self.context.ok():
            now, period_error = rate.wait()
            depth = None
            try:
                with self._lock:
                    result = self.core.tick(now)
                    self._publish_command(result.command)
                    if result.request is not None:
                        self._requests.put(result.request)
                    self._publish_status(self.get_clock().now().to_msg(), periodic=True)
                    depth = self.core.queue_depth()
            except Exception as err:  # noqa: BLE001 - the loop must outlive a bad cycle; the next one retries
                self.get_logger().error(f"control cycle failed: {type(err).__name__}: {err}", throttle_duration_sec=1.0)
            self.timings.cycle(now, depth, period_error, rate.overruns)

    def _publish_command(self, command: Command) -> None:
        """Arm command + ExecutedCommand (caller holds the lock, so the order is the decision order)."""
        if command.positions is None:
            return
        arm, executed = command_messages(command, self.joint_names, self.config.period, self.params.command_interface,
                                         self.slot.version, self.get_clock().now().to_msg())
        with publishing_until_shutdown(self):
            self.arm_pub.publish(arm)
            self.executed_pub.publish(executed)

    def _publish_status(self, stamp, periodic: bool = False) -> None:
        """SafetyStatus on any change but the counters, or when ``periodic`` and due; a new latch is
        logged with its causes (caller holds the lock)."""
        snapshot = SafetySnapshot.of(self.core, self.slot.version)
        if self.throttle.new_latch(snapshot):
            self.get_logger().error(f"e-stop latched: {'; '.join(self.core.monitor.latch_causes)}")
        if self.throttle.due(snapshot, time.monotonic(), periodic):
            with publishing_until_shutdown(self):
                self.status_pub.publish(safety_status_message(snapshot, stamp))

    # ------------------------------------------------------------------ inference
    def _inference_loop(self) -> None:
        while (request := self._requests.get()) is not None:
            msg = self.observations.latest()
            with self._lock:
                policy, version = self.slot.policy, self.slot.version
                task = self.core.episode.task if self.core.episode is not None else ""
            started = time.monotonic()
            try:
                if policy is None:
                    raise RuntimeError("no policy loaded")
                if msg is None:
                    raise RuntimeError("no observation received yet")
                actions = np.asarray(policy.predict_chunk(observation_from_msg(msg, self.joint_names, task)), np.float32)
            except Exception as err:  # noqa: BLE001 - a failing policy latches the e-stop, never kills the node
                error = f"{type(err).__name__}: {err}"
                with self._lock:
                    self.core.inference_failed(error, request, time.monotonic())
                    self._publish_status(self.get_clock().now().to_msg())
                self.get_logger().error(f"inference failed: {error}", throttle_duration_sec=2.0)
                continue
            finished = time.monotonic()
            with self._lock:
                self._chunk_counter += 1
                chunk_id = self._chunk_counter
                self.core.chunk_ready(actions, chunk_id, request, finished, seconds_since(self.get_clock(), capture_stamp(msg)))
                self._publish_status(self.get_clock().now().to_msg())
            self.timings.inference(finished - started, finished)
            chunk = chunk_message(actions, chunk_id, version, self.joint_names, self.config.period, finished - started,
                                  msg.header.stamp)
            with publishing_until_shutdown(self):
                self.chunk_pub.publish(chunk)

    # ------------------------------------------------------------------ diagnostics
    def _report(self):
        with self._lock:
            level, message, values = executor_diagnostics(SafetySnapshot.of(self.core, self.slot.version), self.slot.note,
                                                          self.core.queue_depth(), self.timings.overruns, self.config.period)
        return level, message, {**values, **self.timings.summary(time.monotonic())}

    def close(self) -> None:
        self._stop.set()
        self.observations.close()
        self._requests.put(None)
        self.updates.close()
        for thread in self._threads:
            thread.join(timeout=5.0)


def main() -> int:
    return run_node(PolicyExecutorNode)


if __name__ == "__main__":
    raise SystemExit(main())
