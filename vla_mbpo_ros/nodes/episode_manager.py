"""Runs the real-episode schedule: reset, start (executor + recorder), stop, label, repeat.

Episodes end on success (sim ground truth), on the time limit, on the operator's
~/end_episode call, or when the e-stop latches. After a latch the next episode waits for a person
to reset the e-stop (/vla_mbpo/reset_estop); only on the simulated arm may the manager reset it
itself (``reset_estop_in_sim``), after resetting the sim, so an unattended sim run goes on.

Between iterations it waits until the policy executor runs a new policy version (published by the
world-model node, swapped by the executor at this episode boundary), or until that update was
refused (by the world-model node's or the executor's validation): then it goes on with the
running policy. When the schedule is done it prints the success rate per policy version,
writes <output_dir>/episodes.csv and exits 0, which ends the launched graph.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from vla_mbpo_ros.core.loop.schedule import EpisodeLog, EpisodeRecord, ScheduleConfig
from vla_mbpo_ros.msg import EpisodeEvent, SafetyStatus
from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS, ConfigError, declare, run_node
from vla_mbpo_ros.srv import EndEpisode, ResetSim, StartEpisode

_OUTCOME_TO_EVENT = {
    EndEpisode.Request.OUTCOME_SUCCESS: EpisodeEvent.SUCCESS,
    EndEpisode.Request.OUTCOME_FAILURE: EpisodeEvent.FAILURE,
    EndEpisode.Request.OUTCOME_DISCARD: EpisodeEvent.DISCARD,
    EndEpisode.Request.OUTCOME_UNLABELLED: EpisodeEvent.END,
}


class EpisodeManagerNode(Node):
    def __init__(self) -> None:
        super().__init__("episode_manager")
        try:
            self.schedule = ScheduleConfig(
                task=declare(self, "task", ScheduleConfig.task, "language instruction of every episode"),
                source=declare(self, "source", ScheduleConfig.source, "policy or teleop"),
                episodes_per_iteration=declare(self, "episodes_per_iteration", ScheduleConfig.episodes_per_iteration),
                iterations=declare(self, "iterations", ScheduleConfig.iterations, "0 = until stopped"),
                max_episode_s=declare(self, "max_episode_s", ScheduleConfig.max_episode_s),
                label_source=declare(self, "label_source", ScheduleConfig.label_source, "sim, operator or none"),
                stop_on_success=declare(self, "stop_on_success", ScheduleConfig.stop_on_success),
                settle_after_success_s=declare(self, "settle_after_success_s", ScheduleConfig.settle_after_success_s),
                wait_for_policy_update=declare(self, "wait_for_policy_update", ScheduleConfig.wait_for_policy_update),
                policy_update_timeout_s=declare(self, "policy_update_timeout_s", ScheduleConfig.policy_update_timeout_s),
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.reset_service = declare(self, "reset_service", "/sim/reset", "sim reset; empty = wait for ~/operator_ready")
        self.reset_estop_in_sim = declare(
            self, "reset_estop_in_sim", False, "sim only: reset a latched e-stop after resetting the sim"
        )
        if self.reset_estop_in_sim and not self.reset_service:
            raise ConfigError("reset_estop_in_sim needs a sim reset_service; on hardware a person resets the e-stop")
        self.record = declare(self, "record", True, "record episodes with the recorder node")
        # What drove the arm, as the dataset records it: the executor only knows policy or teleop,
        # the dataset also tells a scripted expert's demonstrations from a person's.
        self.episode_source = declare(self, "episode_source", "", "recorded episode source ('' = source)") or self.schedule.source
        self.start_delay_s = float(declare(self, "start_delay_s", 2.0, "wait before the first episode (s)"))
        self.output_dir = Path(declare(self, "output_dir", "outputs"))
        group = ReentrantCallbackGroup()
        self.episode_services = {
            "executor_start": self.create_client(StartEpisode, "/vla_mbpo/executor/start_episode", callback_group=group),
            "executor_end": self.create_client(EndEpisode, "/vla_mbpo/executor/end_episode", callback_group=group),
            "recorder_start": self.create_client(StartEpisode, "/vla_mbpo/recorder/start_episode", callback_group=group),
            "recorder_end": self.create_client(EndEpisode, "/vla_mbpo/recorder/end_episode", callback_group=group),
        }
        self.reset_client = self.create_client(ResetSim, self.reset_service, callback_group=group) if self.reset_service else None
        self.reset_estop_client = self.create_client(Trigger, "/vla_mbpo/reset_estop", callback_group=group)
        self.events = self.create_publisher(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)
        self._success = False
        self._status = SafetyStatus()
        self._world_model: dict = {}
        self._rejected_versions: dict[str, str] = {}  # candidate version -> why the executor refused it
        self._operator_outcome: int | None = None
        self._operator_ready = threading.Event()
        self.create_subscription(Bool, "/sim/success", self._on_success, LATCHED_QOS, callback_group=group)
        self.create_subscription(SafetyStatus, "/vla_mbpo/safety_status", self._on_status, LATCHED_QOS, callback_group=group)
        self.create_subscription(String, "/vla_mbpo/world_model/status", self._on_world_model, LATCHED_QOS, callback_group=group)
        self.create_subscription(String, "/vla_mbpo/policy_status", self._on_policy_status, LATCHED_QOS, callback_group=group)
        self.create_service(EndEpisode, "~/end_episode", self._on_operator_end, callback_group=group)
        self.create_service(Trigger, "~/operator_ready", self._on_operator_ready, callback_group=group)
        self.log = EpisodeLog()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run_schedule, name="schedule", daemon=True)
        self._worker.start()

    # ---------------------------------------------------------------- inputs
    def _on_success(self, msg: Bool) -> None:
        self._success = msg.data

    def _on_status(self, msg: SafetyStatus) -> None:
        self._status = msg

    def _on_world_model(self, msg: String) -> None:
        self._world_model = json.loads(msg.data)

    def _on_policy_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        if status.get("state") == "rejected":
            self._rejected_versions[status.get("version", "")] = status.get("reason", "")

    def _on_operator_end(self, request, response):
        self._operator_outcome = request.outcome
        response.success, response.message = True, "ending the current episode"
        return response

    def _on_operator_ready(self, _request, response):
        self._operator_ready.set()
        response.success, response.message = True, "starting the next episode"
        return response

    # ---------------------------------------------------------------- helpers
    def _call(self, client, request, timeout: float = 30.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if self._stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"no response from {client.srv_name}")
            time.sleep(0.01)
        return future.result()

    def _publish_event(self, event: int, episode_index: int) -> None:
        msg = EpisodeEvent(event=event, episode_index=episode_index, task=self.schedule.task, source=self.episode_source)
        msg.policy_version = self._status.policy_version
        msg.header.stamp = self.get_clock().now().to_msg()
        self.events.publish(msg)

    def _reset_robot(self) -> None:
        if self.reset_client is not None:
            response = self._call(self.reset_client, ResetSim.Request(seed=-1))
            self.get_logger().info(f"robot reset: {response.message}")
            return
        self.get_logger().info("reset the scene, then call ~/operator_ready")
        self._operator_ready.clear()
        while not self._operator_ready.wait(0.5):
            if self._stop.is_set():
                raise TimeoutError("stopped while waiting for the operator")

    def _start_episode(self) -> int:
        if self.schedule.source == "policy" and not self._status.policy_version:
            self.get_logger().info("waiting for the first policy (the world-model node trains it from the demonstrations)")
            while not self._status.policy_version:
                if self._stop.wait(0.5):
                    raise TimeoutError("stopped")
        request = StartEpisode.Request(task=self.schedule.task, source=self.schedule.source)
        while True:  # the executor refuses while the e-stop is latched or a watchdog is unhappy
            if self.reset_estop_in_sim and self._status.state == SafetyStatus.STATE_LATCHED:
                reset = self._call(self.reset_estop_client, Trigger.Request())
                self.get_logger().warn(f"sim: reset the e-stop latched by {self._status.latch_reason!r}: {reset.message}")
            response = self._call(self.episode_services["executor_start"], request)
            if response.success:
                break
            self.get_logger().warn(f"executor refused to start: {response.message}", throttle_duration_sec=10.0)
            if self._stop.wait(1.0):
                raise TimeoutError("stopped")
        index = response.episode_index
        if self.record:
            recorded = self._call(
                self.episode_services["recorder_start"], StartEpisode.Request(task=self.schedule.task, source=self.episode_source)
            )
            if not recorded.success:
                self._call(self.episode_services["executor_end"], EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_DISCARD))
                raise RuntimeError(f"recorder refused to start: {recorded.message}")
            index = recorded.episode_index
        return index

    def _wait_for_end(self, started: float) -> tuple[str, int]:
        """Block until the episode ends; returns (reason, EndEpisode outcome)."""
        self._operator_outcome = None
        success_seen = None
        while not self._stop.wait(0.02):
            now = time.monotonic()
            if self._status.state == SafetyStatus.STATE_LATCHED:
                return "estop", EndEpisode.Request.OUTCOME_FAILURE
            if self._operator_outcome is not None:
                return "operator", self._operator_outcome
            if self.schedule.label_source == "sim" and self._success and success_seen is None:
                success_seen = now
            if success_seen is not None and self.schedule.stop_on_success and now - success_seen >= self.schedule.settle_after_success_s:
                return "success", EndEpisode.Request.OUTCOME_SUCCESS
            if now - started >= self.schedule.max_episode_s:
                if success_seen is not None:
                    return "time_limit", EndEpisode.Request.OUTCOME_SUCCESS
                if self.schedule.label_source == "none":
                    return "time_limit", EndEpisode.Request.OUTCOME_UNLABELLED
                return "time_limit", EndEpisode.Request.OUTCOME_FAILURE
        raise TimeoutError("stopped")

    def _wait_for_update(self, previous: str, updates_before: int) -> None:
        """Until the executor runs a newer policy, or the update was refused: by the world-model
        node's validation (not published) or by the executor's (published, not swapped in). A
        refused update is no failure of the loop: go on with the running policy."""
        self.get_logger().info(f"iteration done; waiting for the world model's update of {previous}")
        deadline = time.monotonic() + self.schedule.policy_update_timeout_s
        rejected_before = set(self._rejected_versions)
        while self._status.policy_version == previous:
            last = self._world_model.get("last_result") or {}
            if self._world_model.get("updates_finished", 0) > updates_before and not last.get("published", True):
                self.get_logger().info(f"update rejected ({last.get('reason')}); continuing with {previous}")
                return
            refused = set(self._rejected_versions) - rejected_before
            if refused:
                version = sorted(refused)[-1]
                reason = self._rejected_versions[version]
                self.get_logger().warn(f"the executor refused {version} ({reason}); continuing with {previous}")
                return
            if self._stop.wait(0.2):
                raise TimeoutError("stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no policy update within {self.schedule.policy_update_timeout_s:.0f} s")
        self.get_logger().info(f"policy {self._status.policy_version} is running")

    # ---------------------------------------------------------------- schedule
    def _run_schedule(self) -> None:
        try:
            self._stop.wait(self.start_delay_s)
            count = 0
            while not self.schedule.finished(count) and not self._stop.is_set():
                if count == 0 or self.schedule.iteration_done(count):
                    updates_before = self._world_model.get("updates_finished", 0)
                self._reset_robot()
                index = self._start_episode()
                version = self._status.policy_version
                self._success = False
                self._publish_event(EpisodeEvent.START, index)
                started = time.monotonic()
                reason, outcome = self._wait_for_end(started)
                request = EndEpisode.Request(outcome=outcome)
                self._call(self.episode_services["executor_end"], request)
                if self.record:
                    self._call(self.episode_services["recorder_end"], request, timeout=120.0)
                self._publish_event(_OUTCOME_TO_EVENT[outcome], index)
                success = {EndEpisode.Request.OUTCOME_SUCCESS: True, EndEpisode.Request.OUTCOME_FAILURE: False}.get(outcome)
                record = EpisodeRecord(index, self.schedule.iteration_of(count), version, success, time.monotonic() - started, reason)
                self.log.add(record)
                self.log.write_csv(self.output_dir / "episodes.csv")
                self.get_logger().info(f"episode {index} ({version or 'no policy'}): {reason}, success={success}")
                count += 1
                more = not self.schedule.finished(count)
                if more and self.schedule.iteration_done(count) and self.schedule.wait_for_policy_update and self.schedule.source == "policy":
                    self._wait_for_update(version, updates_before)
            self.get_logger().info("schedule finished; real success rate per policy version:\n" + self.log.table())
        except TimeoutError as err:
            if not self._stop.is_set():
                self.get_logger().error(f"schedule aborted: {err}")
                self._exit_code = 1
        except Exception as err:  # noqa: BLE001  (a failed schedule must end the graph, named)
            if self._stop.is_set() or not self.context.ok():
                return  # shut down (SIGINT) while calling a service: not a failure
            self.get_logger().error(f"schedule failed: {type(err).__name__}: {err}")
            self._exit_code = 1
        finally:
            if not self._stop.is_set():
                self.context.try_shutdown()

    _exit_code = 0

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5.0)

    def exit_code(self) -> int:
        return self._exit_code


def main() -> int:
    return run_node(EpisodeManagerNode)


if __name__ == "__main__":
    raise SystemExit(main())
