"""Safety-gated policy executor: the only path from a policy or an operator to the arm.

Glue around ``core.control.executor.ExecutorCore`` (every decision lives there). Execution model:
ROS callbacks run on the node's single-threaded executor and only convert, lock and hand over; the
e-stop callback publishes the hold itself, before the next control cycle. Three threads of its own:

* control: fixed rate on absolute monotonic deadlines (does not drift, never waits behind a
  callback); each cycle asks the core for a command and publishes it + one ExecutedCommand;
* inference: started by the core's watermark request, runs the policy on the latest observation;
* hot-swap: checks a PolicyUpdate (trusted root, sha256), loads the candidate and runs it on recent
  real observations through ``SafetyGate.check_chunk``; the swap happens at an episode boundary.

Topics (remappable): in /joint_states, /vla_mbpo/observation, /vla_mbpo/estop (Bool, reliable),
/vla_mbpo/heartbeat (std_msgs/Header; best-effort subscription), /vla_mbpo/teleop/joint_command
(JointState), /vla_mbpo/episode_event (INTERVENTION_START / END), /vla_mbpo/policy_update
(transient local). Out: the arm command, /vla_mbpo/action_chunk, /vla_mbpo/executed_command,
/vla_mbpo/safety_status (transient local; header.stamp = time of the change it reports),
/vla_mbpo/policy_status (transient local JSON: version, accepted, state, reason), /diagnostics.
Services: /vla_mbpo/reset_estop, /vla_mbpo/executor/start_episode, .../end_episode.

The stale-observation watchdog watches /vla_mbpo/observation when a policy can run
(policy_enabled), and /joint_states otherwise (teleop profile: no cameras needed to move).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_mbpo_ros.bringup import config_dir
from vla_mbpo_ros.conversions import chunk_message, command_messages, observation_from_msg
from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.control.executor import Command, ExecutorConfig, ExecutorCore, InferenceRequest
from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.control.hot_swap import load_candidate, validate_candidate
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.control.rate import FixedRate
from vla_mbpo_ros.core.policy import replay  # noqa: F401  (registers the "replay" policy type)
from vla_mbpo_ros.core.policy.base import ChunkPolicy, load_policy
from vla_mbpo_ros.core.robot.joints import reorder
from vla_mbpo_ros.core.util.stats import RateStats
from vla_mbpo_ros.msg import ActionChunk, EpisodeEvent, ExecutedCommand, MultiViewObservation, PolicyUpdate, SafetyStatus
from vla_mbpo_ros.nodes._diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from vla_mbpo_ros.nodes._runtime import (
    LATCHED_QOS,
    OBSERVATION_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    ConfigError,
    declare_config,
    publishing_until_shutdown,
    run_node,
)
from vla_mbpo_ros.srv import EndEpisode, StartEpisode

_STATE_CODES = {
    SafetyState.IDLE: SafetyStatus.STATE_IDLE,
    SafetyState.ACTIVE: SafetyStatus.STATE_ACTIVE,
    SafetyState.LATCHED: SafetyStatus.STATE_LATCHED,
}


@dataclass
class ExecutorParams:
    """The node's own parameters (the core's are ``ExecutorConfig``; config/policy_executor.yaml)."""

    policy_enabled: bool = True  # false: teleop only, no policy is loaded
    policy_checkpoint: str = ""  # loaded at start; "" = wait for a PolicyUpdate
    trusted_checkpoint_roots: tuple[str, ...] = ("outputs/checkpoints",)  # PolicyUpdate uris must lie under one
    safety_config: str = ""  # robot yaml with joint_names + safety; "" = config/robots/so101.yaml
    command_interface: str = "trajectory"  # trajectory (JointTrajectory) or position (Float64MultiArray)
    trajectory_topic: str = "/arm_controller/joint_trajectory"
    position_topic: str = "/forward_position_controller/commands"
    observation_topic: str = "/vla_mbpo/observation"
    joint_state_topic: str = "/joint_states"
    status_period: float = 1.0  # SafetyStatus also this often (s)
    diagnostics_period: float = 1.0
    diagnostics_window_s: float = 10.0
    validation_observations: int = 3  # recent real observations a candidate is run on
    validation_wait_s: float = 10.0  # ... waiting at most this long for them
    validation_limit_margin: float = 0.1  # a candidate may aim this far past a position limit (rad; clamped)
    inference_threads: int = 1  # torch CPU threads
    # A thread that wants the GIL waits up to this long behind inference code: well under the period.
    gil_switch_interval_s: float = 0.0005

    def __post_init__(self) -> None:
        if self.command_interface not in ("trajectory", "position"):
            raise ValueError(f"command_interface: expected trajectory or position, got {self.command_interface!r}")
        if self.validation_observations < 1:
            raise ValueError(f"validation_observations: expected >= 1, got {self.validation_observations}")
        if not self.validation_limit_margin >= 0.0:
            raise ValueError(f"validation_limit_margin: expected >= 0 rad, got {self.validation_limit_margin}")


class PolicyExecutorNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_executor")
        self.params = params = declare_config(self, ExecutorParams)
        self.config = declare_config(self, ExecutorConfig)
        try:
            safety = load_safety_config(params.safety_config or config_dir() / "robots" / "so101.yaml")
        except (ValueError, OSError) as err:
            raise ConfigError(f"safety_config: {err}") from err
        torch.set_num_threads(params.inference_threads)
        sys.setswitchinterval(params.gil_switch_interval_s)
        self.core = ExecutorCore(self.config, safety)
        self.joint_names = safety.limits.names
        self.validation_gate = SafetyGate(safety)  # check_chunk only: stateless, safe off the lock
        self._lock = threading.Lock()  # every call into self.core, and the publishes that follow it
        self._observed = threading.Condition(self._lock)  # a new observation arrived
        self._stats_lock = threading.Lock()
        self.stats = RateStats(window_s=params.diagnostics_window_s)
        self.policy: ChunkPolicy | None = None
        self.policy_version = ""
        self._pending: tuple[ChunkPolicy, str] | None = None  # validated candidate waiting for a boundary
        self._chunk_counter = 0
        self._latest_obs: MultiViewObservation | None = None
        self._recent_obs: deque[MultiViewObservation] = deque(maxlen=params.validation_observations)
        self._last_status_key: tuple | None = None
        self._last_status_time = -float("inf")
        self._latches_logged = 0
        self._overruns = 0
        self._estop_holds = 0  # holds published from the e-stop callback
        self._swap_note = ""
        self._stop = threading.Event()

        if params.command_interface == "trajectory":
            self.arm_pub = self.create_publisher(JointTrajectory, params.trajectory_topic, RELIABLE_QOS)
        else:
            self.arm_pub = self.create_publisher(Float64MultiArray, params.position_topic, RELIABLE_QOS)
        self.executed_pub = self.create_publisher(ExecutedCommand, "/vla_mbpo/executed_command", RELIABLE_QOS)
        self.chunk_pub = self.create_publisher(ActionChunk, "/vla_mbpo/action_chunk", RELIABLE_QOS)
        self.status_pub = self.create_publisher(SafetyStatus, "/vla_mbpo/safety_status", LATCHED_QOS)
        self.policy_status_pub = self.create_publisher(String, "/vla_mbpo/policy_status", LATCHED_QOS)
        if params.policy_enabled and params.policy_checkpoint:
            try:
                policy = load_policy(params.policy_checkpoint)
            except (ValueError, OSError) as err:
                raise ConfigError(f"policy_checkpoint: cannot load {params.policy_checkpoint}: {err}") from err
            self._install_policy(policy, policy.version, "loaded at start")

        self.create_subscription(Bool, "/vla_mbpo/estop", self._on_estop, RELIABLE_QOS)
        self.create_subscription(JointState, params.joint_state_topic, self._on_joint_state, SENSOR_QOS)
        self.create_subscription(MultiViewObservation, params.observation_topic, self._on_observation, OBSERVATION_QOS)
        self.create_subscription(Header, "/vla_mbpo/heartbeat", self._on_heartbeat, SENSOR_QOS)
        self.create_subscription(JointState, "/vla_mbpo/teleop/joint_command", self._on_teleop, SENSOR_QOS)
        self.create_subscription(EpisodeEvent, "/vla_mbpo/episode_event", self._on_episode_event, RELIABLE_QOS)
        self.create_subscription(PolicyUpdate, "/vla_mbpo/policy_update", self._updates_put, LATCHED_QOS)
        self.create_service(Trigger, "/vla_mbpo/reset_estop", self._on_reset)
        self.create_service(StartEpisode, "/vla_mbpo/executor/start_episode", self._on_start)
        self.create_service(EndEpisode, "/vla_mbpo/executor/end_episode", self._on_end)
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=params.diagnostics_period)

        self._requests: queue.Queue[InferenceRequest | None] = queue.Queue()  # the core keeps one in flight
        self._updates: queue.Queue[PolicyUpdate | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._control_loop, name="control", daemon=True),
            threading.Thread(target=self._inference_loop, name="inference", daemon=True),
            threading.Thread(target=self._swap_loop, name="hot_swap", daemon=True),
        ]
        with self._lock:
            self._publish_status(self.get_clock().now().to_msg())
        for thread in self._threads:
            thread.start()
        self.get_logger().info(
            f"executor: {self.config.control_rate} Hz, {params.command_interface} interface, policy "
            f"{self.policy_version or ('none yet' if params.policy_enabled else 'disabled (teleop only)')}, "
            f"heartbeat {'required' if safety.require_heartbeat else 'not required'}"
        )

    # ------------------------------------------------------------------ inputs
    def _on_estop(self, msg: Bool) -> None:
        received = time.monotonic()  # latency statistics include the wait for the lock
        with self._lock:
            stamp = self.get_clock().now().to_msg()  # the status reports when the gate saw the press
            was_latched = self.core.monitor.state is SafetyState.LATCHED
            command = self.core.estop(msg.data, received)
            if command is not None:
                self._publish_command(command)
            published = time.monotonic()
            self._publish_status(stamp)
            self._log_latch()
        if command is not None and command.positions is not None:
            with self._stats_lock:
                self.stats.add("estop_to_hold_ms", (published - received) * 1e3, published)
                self._estop_holds += 1
        if msg.data and not was_latched:
            self.get_logger().error("e-stop pressed: latched, holding")

    def _on_joint_state(self, msg: JointState) -> None:
        now = time.monotonic()
        try:
            q = reorder(msg.name, msg.position, self.joint_names, "joint_states")
        except ValueError as err:
            self.get_logger().error(f"/joint_states ignored: {err}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self.core.set_joint_state(q, now)
            if not self.params.policy_enabled:
                self.core.observation(now)

    def _on_observation(self, msg: MultiViewObservation) -> None:
        now = time.monotonic()
        with self._lock:
            self._latest_obs = msg
            self._recent_obs.append(msg)
            if self.params.policy_enabled:
                self.core.observation(now)
            self._observed.notify_all()

    def _on_heartbeat(self, _msg: Header) -> None:
        now = time.monotonic()
        with self._lock:
            self.core.heartbeat(now)

    def _on_teleop(self, msg: JointState) -> None:
        now = time.monotonic()
        try:
            target = reorder(msg.name, msg.position, self.joint_names, "teleop command")
        except ValueError as err:
            self.get_logger().error(f"teleop command ignored: {err}", throttle_duration_sec=5.0)
            return
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
    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            response.success, response.message = self.core.reset_estop(time.monotonic())
            if response.success:
                self._swap_if_pending()
                self._publish_status(self.get_clock().now().to_msg())
        if response.success:
            self.get_logger().info(f"reset_estop: {response.message}")
        else:
            self.get_logger().warning(f"reset_estop: {response.message}")
        return response

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response) -> StartEpisode.Response:
        with self._lock:
            ok, message, index = self.core.start_episode(request.task, request.source, time.monotonic())
            if ok and request.source == "policy" and self.policy is not None:
                self.policy.reset()
            self._publish_status(self.get_clock().now().to_msg())
        response.success, response.message, response.episode_index = ok, message, index
        if ok:
            self.get_logger().info(f"start_episode: {message}")
        else:
            self.get_logger().warning(f"start_episode: {message}")
        return response

    def _on_end(self, _request: EndEpisode.Request, response: EndEpisode.Response) -> EndEpisode.Response:
        with self._lock:
            ok, message, index = self.core.end_episode()
            self._swap_if_pending()
            self._publish_status(self.get_clock().now().to_msg())
        response.success, response.message, response.episode_index = ok, message, index
        self.get_logger().info(f"end_episode: {message}")
        return response

    # ------------------------------------------------------------------ control loop
    def _control_loop(self) -> None:
        rate = FixedRate(self.config.period)
        while not self._stop.is_set() and self.context.ok():
            now, period_error = rate.wait()
            try:
                self._cycle(now)
            except Exception as err:  # noqa: BLE001 - the loop must outlive a bad cycle; the next one retries
                self.get_logger().error(f"control cycle failed: {type(err).__name__}: {err}", throttle_duration_sec=1.0)
            with self._stats_lock:
                if period_error is not None:
                    self.stats.add("period_error_ms", period_error * 1e3, now)
                self._overruns = rate.overruns

    def _cycle(self, now: float) -> None:
        with self._lock:
            result = self.core.tick(now)
            self._publish_command(result.command)
            if result.request is not None:
                self._requests.put(result.request)
            stamp = self.get_clock().now().to_msg()
            self._publish_status(stamp, periodic=now - self._last_status_time >= self.params.status_period)
            self._log_latch()
            depth = self.core.queue_depth()
        with self._stats_lock:
            self.stats.add("queue_depth", depth, now)

    def _publish_command(self, command: Command) -> None:
        """Arm command + ExecutedCommand (caller holds the lock, so the order is the decision order)."""
        if command.positions is None:
            return
        arm, executed = command_messages(command, self.joint_names, self.config.period, self.params.command_interface,
                                         self.policy_version, self.get_clock().now().to_msg())
        with publishing_until_shutdown(self):
            self.arm_pub.publish(arm)
            self.executed_pub.publish(executed)

    def _publish_status(self, stamp, periodic: bool = False) -> None:
        """SafetyStatus when anything but the counters changed, or when ``periodic`` (caller holds the lock)."""
        monitor = self.core.monitor
        latch_reason = monitor.first_cause or ""
        key = (monitor.state, monitor.estop_pressed, latch_reason, self.core.last_violation, self.policy_version)
        if key == self._last_status_key and not periodic:
            return
        self._last_status_key = key
        self._last_status_time = time.monotonic()
        c = monitor.counters
        msg = SafetyStatus(
            state=_STATE_CODES[monitor.state], estop_input=monitor.estop_pressed, latch_reason=latch_reason,
            last_violation=self.core.last_violation, commands_sent=c.commands, holds=c.holds, clamps=c.clamps,
            violations=c.violations, latches=c.latches, policy_version=self.policy_version,
        )
        msg.header.stamp = stamp
        with publishing_until_shutdown(self):
            self.status_pub.publish(msg)

    def _log_latch(self) -> None:
        monitor = self.core.monitor
        if monitor.counters.latches > self._latches_logged:
            self._latches_logged = monitor.counters.latches
            self.get_logger().error(f"e-stop latched: {'; '.join(monitor.latch_causes)}")

    # ------------------------------------------------------------------ inference
    def _inference_loop(self) -> None:
        while (request := self._requests.get()) is not None:
            with self._lock:
                policy, version, msg = self.policy, self.policy_version, self._latest_obs
                task = self.core.episode.task if self.core.episode is not None else ""
            started = time.monotonic()
            try:
                if policy is None:
                    raise RuntimeError("no policy loaded")
                if msg is None:
                    raise RuntimeError("no observation received yet")
                observation = observation_from_msg(msg, self.joint_names, task)
                actions = np.asarray(policy.predict_chunk(observation), dtype=np.float32)
            except Exception as err:  # noqa: BLE001 - a failing policy latches the e-stop, never kills the node
                error = f"{type(err).__name__}: {err}"
                with self._lock:
                    self.core.inference_failed(error, request, time.monotonic())
                    self._log_latch()
                self.get_logger().error(f"inference failed: {error}", throttle_duration_sec=2.0)
                continue
            finished = time.monotonic()
            with self._lock:
                self._chunk_counter += 1
                chunk_id = self._chunk_counter
                self.core.chunk_ready(actions, chunk_id, request, finished)
                self._log_latch()
            with self._stats_lock:
                self.stats.add("inference_ms", (finished - started) * 1e3, finished)
            self._publish_chunk(actions, chunk_id, version, msg, finished - started)

    def _publish_chunk(self, actions: np.ndarray, chunk_id: int, version: str, obs: MultiViewObservation, latency: float) -> None:
        msg = chunk_message(actions, chunk_id, version, self.joint_names, self.config.period, latency, obs.header.stamp)
        with publishing_until_shutdown(self):
            self.chunk_pub.publish(msg)

    # ------------------------------------------------------------------ hot-swap
    def _updates_put(self, msg: PolicyUpdate) -> None:
        self._updates.put(msg)

    def _swap_loop(self) -> None:
        while (update := self._updates.get()) is not None:
            try:
                candidate = self._check_candidate(update)
            except ValueError as err:
                self._policy_status(update.version, False, "rejected", str(err), update)
                self.get_logger().error(f"policy {update.version!r} rejected, keeping {self.policy_version!r}: {err}")
                continue
            with self._lock:
                self._pending = (candidate, update.version)
                swapped = self._swap_if_pending()
                if swapped:
                    self._publish_status(self.get_clock().now().to_msg())
            if not swapped:
                self._policy_status(update.version, True, "pending", "validated; swaps in at the next episode boundary", update)
                self.get_logger().info(f"policy {update.version!r} validated; swapping at the end of the episode")

    def _check_candidate(self, update: PolicyUpdate) -> ChunkPolicy:
        """Trusted root, sha256, load, outputs on recent real observations; ValueError says why not."""
        if not self.params.policy_enabled:
            raise ValueError("policy_enabled is false on this executor")
        candidate = load_candidate(update.uri, update.sha256, self.params.trusted_checkpoint_roots)
        wanted = self.params.validation_observations
        with self._observed:
            self._observed.wait_for(lambda: len(self._recent_obs) >= wanted or self._stop.is_set(),
                                    timeout=self.params.validation_wait_s)
            recent = list(self._recent_obs)
        try:
            observations = [observation_from_msg(m, self.joint_names) for m in recent]
        except ValueError as err:
            raise ValueError(f"cannot decode recent observations: {err}") from err
        problems = validate_candidate(candidate, observations, self.validation_gate, self.params.validation_limit_margin)
        candidate.reset()
        if problems:
            shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
            raise ValueError(f"validation failed on {len(observations)} recent observations: {shown}")
        return candidate

    def _swap_if_pending(self) -> bool:
        """Swap a validated candidate in when no episode is running (caller holds the lock)."""
        if self._pending is None or self.core.episode is not None:
            return False
        candidate, version = self._pending
        self._pending = None
        previous = self.policy_version
        self._install_policy(candidate, version, f"swapped in at the episode boundary (was {previous!r})")
        self.get_logger().info(f"policy {version!r} is running (was {previous!r})")
        return True

    def _install_policy(self, policy: ChunkPolicy, version: str, reason: str) -> None:
        self.policy, self.policy_version = policy, version
        self.core.set_policy(policy.chunk_size)
        self._swap_note = reason
        self._policy_status(version, True, "active", reason)

    def _policy_status(self, version: str, accepted: bool, state: str, reason: str, update: PolicyUpdate | None = None) -> None:
        status = {"version": version, "accepted": accepted, "state": state, "reason": reason, "running": self.policy_version}
        if update is not None:
            status.update(uri=update.uri, sha256=update.sha256)
        if not accepted:
            self._swap_note = f"rejected {version!r}: {reason}"
        with publishing_until_shutdown(self):
            self.policy_status_pub.publish(String(data=json.dumps(status)))

    # ------------------------------------------------------------------ diagnostics
    def _report(self):
        now = time.monotonic()
        with self._lock:
            monitor = self.core.monitor
            c = monitor.counters
            state, cause = monitor.state, monitor.first_cause
            values: dict[str, object] = {
                "state": state.value, "latch_reason": cause or "", "policy_version": self.policy_version,
                "policy_status": self._swap_note, "queue_depth": self.core.queue_depth(), "commands_sent": c.commands,
                "holds": c.holds, "clamps": c.clamps, "violations": c.violations, "latches": c.latches,
                "last_violation": self.core.last_violation, "overruns": self._overruns,
                "control_period_ms": self.config.period * 1e3,
            }
        with self._stats_lock:
            values.update(self.stats.summary(now))
            values["estop_holds"] = self._estop_holds
        if state is SafetyState.LATCHED:
            return ERROR, f"latched: {cause}", values
        if self._overruns:
            return WARN, f"{state.value}; {self._overruns} control overruns", values
        return OK, state.value, values

    def close(self) -> None:
        self._stop.set()
        with self._observed:
            self._observed.notify_all()
        self._requests.put(None)
        self._updates.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)


def main() -> int:
    return run_node(PolicyExecutorNode)


if __name__ == "__main__":
    raise SystemExit(main())
