"""Runs the real-episode schedule: reset, start (executor + recorder), stop, label, repeat.

The decisions (when an episode ends and with which label; when waiting for a new policy is over)
are ``core.loop.schedule``'s; this node gathers what it observes and acts on them. The schedule
runs on its own thread and sleeps on one condition that every callback notifies, so it reacts to
an e-stop, a success or an operator's label at once and costs nothing while it waits.

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

from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from vla_mbpo_ros.core.data.recording import Outcome
from vla_mbpo_ros.core.loop.schedule import (
    EpisodeLog,
    EpisodeRecord,
    EpisodeView,
    ScheduleConfig,
    UpdateView,
    decide_episode_end,
    decide_update,
    next_episode_check,
)
from vla_mbpo_ros.msg import EpisodeEvent, SafetyStatus
from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS, ConfigError, declare, declare_config, run_node
from vla_mbpo_ros.srv import EndEpisode, ResetSim, StartEpisode

_OUTCOME_CODES = {
    Outcome.SUCCESS: EndEpisode.Request.OUTCOME_SUCCESS,
    Outcome.FAILURE: EndEpisode.Request.OUTCOME_FAILURE,
    Outcome.DISCARD: EndEpisode.Request.OUTCOME_DISCARD,
    Outcome.UNLABELLED: EndEpisode.Request.OUTCOME_UNLABELLED,
}
_OUTCOMES = {code: outcome for outcome, code in _OUTCOME_CODES.items()}
_EVENTS = {
    Outcome.SUCCESS: EpisodeEvent.SUCCESS,
    Outcome.FAILURE: EpisodeEvent.FAILURE,
    Outcome.DISCARD: EpisodeEvent.DISCARD,
    Outcome.UNLABELLED: EpisodeEvent.END,
}


_RETRY_S = 10.0  # pause before starting again after the recorder refused an episode


class Stopped(Exception):
    """The node is shutting down while the schedule waits."""


class EpisodeManagerNode(Node):
    def __init__(self) -> None:
        super().__init__("episode_manager")
        self.schedule = declare_config(self, ScheduleConfig)
        self.reset_service = declare(self, "reset_service", "/sim/reset", "sim reset; empty = wait for ~/operator_ready")
        self.reset_estop_in_sim = declare(self, "reset_estop_in_sim", False, "sim only: reset a latched e-stop after resetting the sim")
        if self.reset_estop_in_sim and not self.reset_service:
            raise ConfigError("reset_estop_in_sim needs a sim reset_service; on hardware a person resets the e-stop")
        self.record = declare(self, "record", True, "record episodes with the recorder node")
        # What drove the arm, as the dataset records it: the executor only knows policy or teleop,
        # the dataset also tells a scripted expert's demonstrations from a person's.
        self.episode_source = declare(self, "episode_source", "", "recorded episode source ('' = source)") or self.schedule.source
        self.start_delay_s = declare(self, "start_delay_s", 2.0, "wait before the first episode (s)")
        self.output_dir = Path(declare(self, "output_dir", "outputs"))
        self.calls = {
            "executor_start": self.create_client(StartEpisode, "/vla_mbpo/executor/start_episode"),
            "executor_end": self.create_client(EndEpisode, "/vla_mbpo/executor/end_episode"),
            "recorder_start": self.create_client(StartEpisode, "/vla_mbpo/recorder/start_episode"),
            "recorder_end": self.create_client(EndEpisode, "/vla_mbpo/recorder/end_episode"),
            "reset_estop": self.create_client(Trigger, "/vla_mbpo/reset_estop"),
        }
        if self.reset_service:
            self.calls["reset"] = self.create_client(ResetSim, self.reset_service)
        self.events = self.create_publisher(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)

        # Everything the schedule observes, guarded by one condition that every callback notifies.
        self._changed = threading.Condition()
        self._status = SafetyStatus()
        self._world_model: dict = {}
        self._rejected: list[tuple[str, str]] = []  # (version, reason) the executor refused
        self._episode_started: float | None = None
        self._success_since: float | None = None
        self._operator_outcome: Outcome | None = None
        self._operator_ready = False
        self._stop = threading.Event()
        self.create_subscription(Bool, "/sim/success", self._on_success, LATCHED_QOS)
        self.create_subscription(SafetyStatus, "/vla_mbpo/safety_status", self._on_status, LATCHED_QOS)
        self.create_subscription(String, "/vla_mbpo/world_model/status", self._on_world_model, LATCHED_QOS)
        self.create_subscription(String, "/vla_mbpo/policy_status", self._on_policy_status, LATCHED_QOS)
        self.create_service(EndEpisode, "~/end_episode", self._on_operator_end)
        self.create_service(Trigger, "~/operator_ready", self._on_operator_ready)
        self.log = EpisodeLog()
        self._exit_code = 0
        self._worker = threading.Thread(target=self._run_schedule, name="schedule", daemon=True)
        self._worker.start()

    # ---------------------------------------------------------------- inputs
    def _observe(self, change) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    def _on_success(self, msg: Bool) -> None:
        def change():
            if msg.data and self._episode_started is not None and self._success_since is None:
                self._success_since = time.monotonic()
        self._observe(change)

    def _on_status(self, msg: SafetyStatus) -> None:
        self._observe(lambda: setattr(self, "_status", msg))

    def _on_world_model(self, msg: String) -> None:
        self._observe(lambda: setattr(self, "_world_model", json.loads(msg.data)))

    def _on_policy_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        if status.get("state") == "rejected":
            self._observe(lambda: self._rejected.append((status.get("version", ""), status.get("reason", ""))))

    def _on_operator_end(self, request, response):
        outcome = _OUTCOMES.get(request.outcome)
        response.success = outcome is not None
        response.message = "ending the current episode" if outcome is not None else f"unknown outcome {request.outcome}"
        if outcome is not None:
            self._observe(lambda: setattr(self, "_operator_outcome", outcome))
        return response

    def _on_operator_ready(self, _request, response):
        self._observe(lambda: setattr(self, "_operator_ready", True))
        response.success, response.message = True, "starting the next episode"
        return response

    # ---------------------------------------------------------------- waiting
    def _wait(self, until, timeout: float | None = None) -> bool:
        """Sleep until ``until()`` (called with the condition held) is true; False on timeout."""
        with self._changed:
            done = self._changed.wait_for(lambda: self._stop.is_set() or until(), timeout)
        if self._stop.is_set():
            raise Stopped
        return done

    def _call(self, name: str, request, timeout: float = 30.0):
        client = self.calls[name]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        future.add_done_callback(lambda _: self._observe(lambda: None))
        if not self._wait(future.done, timeout):
            raise TimeoutError(f"no response from {client.srv_name}")
        return future.result()

    def _wait_for_services(self) -> None:
        """Before the first episode, as long as it takes: a loaded machine can take minutes to start a graph."""
        needed = ["reset", "executor_start"] + (["recorder_start"] if self.record else [])
        for client in (self.calls[name] for name in needed if name in self.calls):
            while not client.wait_for_service(timeout_sec=5.0):
                if self._stop.is_set():
                    raise Stopped
                self.get_logger().info(f"waiting for {client.srv_name}", throttle_duration_sec=30.0)

    def _publish_event(self, event: int, episode_index: int) -> None:
        msg = EpisodeEvent(event=event, episode_index=episode_index, task=self.schedule.task, source=self.episode_source)
        msg.policy_version = self._status.policy_version
        msg.header.stamp = self.get_clock().now().to_msg()
        self.events.publish(msg)

    # ---------------------------------------------------------------- one episode
    def _reset_robot(self) -> None:
        if "reset" in self.calls:
            response = self._call("reset", ResetSim.Request(seed=-1))
            self.get_logger().info(f"robot reset: {response.message}")
            return
        self.get_logger().info("reset the scene, then call ~/operator_ready")
        self._observe(lambda: setattr(self, "_operator_ready", False))
        self._wait(lambda: self._operator_ready)

    def _start_episode(self) -> int | None:
        """The started episode's index; None when the recorder refused (e.g. disk nearly full): the arm
        is not moved without a recording, and the caller retries after a pause."""
        if self.schedule.source == "policy" and not self._status.policy_version:
            self.get_logger().info("waiting for the first policy (the world-model node trains it from the demonstrations)")
            self._wait(lambda: bool(self._status.policy_version))
        request = StartEpisode.Request(task=self.schedule.task, source=self.schedule.source)
        while True:  # the executor refuses while the e-stop is latched or a watchdog is unhappy
            if self.reset_estop_in_sim and self._status.state == SafetyStatus.STATE_LATCHED:
                reset = self._call("reset_estop", Trigger.Request())
                self.get_logger().warning(f"sim: reset the e-stop latched by {self._status.latch_reason!r}: {reset.message}")
            response = self._call("executor_start", request)
            if response.success:
                break
            self.get_logger().warning(f"executor refused to start: {response.message}", throttle_duration_sec=10.0)
            status = self._status
            self._wait(lambda: self._status is not status, timeout=1.0)  # retry on news, at least every second
        index = response.episode_index
        if self.record:
            try:  # a recorder that died is respawned (bringup); a request sent to the dead one is never answered
                recorded = self._call("recorder_start", StartEpisode.Request(task=self.schedule.task,
                                                                             source=self.episode_source), timeout=60.0)
            except TimeoutError as err:
                recorded = StartEpisode.Response(success=False, message=str(err))
            if not recorded.success:
                self._call("executor_end", EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_DISCARD))
                self.get_logger().error(f"recorder refused to start: {recorded.message}; retrying in {_RETRY_S:g} s",
                                        throttle_duration_sec=60.0)
                return None
            index = recorded.episode_index
        return index

    def _episode_view(self) -> EpisodeView:
        return EpisodeView(time.monotonic(), self._episode_started, self._status.state == SafetyStatus.STATE_LATCHED,
                           self._operator_outcome, self._success_since)

    def _wait_for_end(self):
        with self._changed:
            while (end := decide_episode_end(self.schedule, view := self._episode_view())) is None:
                if self._stop.is_set():
                    raise Stopped
                self._changed.wait(next_episode_check(self.schedule, view))
            self._episode_started = None
            return end

    def _run_episode(self, count: int) -> bool:
        """One episode; False when it could not be recorded (a recorder that refused it, or died and was
        respawned): it is then neither labelled nor counted, and the schedule runs it again."""
        self._reset_robot()
        index = self._start_episode()
        if index is None:
            self._wait(lambda: False, timeout=_RETRY_S)
            return False
        version = self._status.policy_version
        with self._changed:
            self._episode_started, self._success_since, self._operator_outcome = time.monotonic(), None, None
            started = self._episode_started
        self._publish_event(EpisodeEvent.START, index)
        end = self._wait_for_end()
        request = EndEpisode.Request(outcome=_OUTCOME_CODES[end.outcome])
        self._call("executor_end", request)
        if self.record and not self._recorder_saved(request, index):
            self._publish_event(EpisodeEvent.DISCARD, index)
            return False
        self._publish_event(_EVENTS[end.outcome], index)
        success = {Outcome.SUCCESS: True, Outcome.FAILURE: False}.get(end.outcome)
        self.log.add(EpisodeRecord(index, self.schedule.iteration_of(count), version, success, time.monotonic() - started, end.reason))
        self.log.write_csv(self.output_dir / "episodes.csv")
        self.get_logger().info(f"episode {index} ({version or 'no policy'}): {end.reason}, success={success}")
        return True

    def _recorder_saved(self, request: EndEpisode.Request, index: int) -> bool:
        try:
            response = self._call("recorder_end", request, timeout=120.0)
        except TimeoutError as err:
            response = EndEpisode.Response(success=False, message=str(err))
        if not response.success:
            self.get_logger().error(f"episode {index} was not recorded ({response.message}): running it again")
        return response.success

    def _wait_for_update(self, previous: str, updates_before: int) -> None:
        self.get_logger().info(f"iteration done; waiting for the world model's update of {previous}")
        rejected_before = len(self._rejected)

        def view() -> UpdateView:
            last = self._world_model.get("last_result") or {}
            return UpdateView(
                self._status.policy_version, previous, self._world_model.get("updates_finished", 0), updates_before,
                bool(last.get("published", True)), str(last.get("reason", "")), tuple(self._rejected[rejected_before:]),
            )

        if not self._wait(lambda: decide_update(view()) is not None, timeout=self.schedule.policy_update_timeout_s):
            raise TimeoutError(f"no policy update within {self.schedule.policy_update_timeout_s:.0f} s")
        self.get_logger().info(decide_update(view()))

    # ---------------------------------------------------------------- schedule
    def _run_schedule(self) -> None:
        try:
            if self._stop.wait(self.start_delay_s):
                return
            self._wait_for_services()
            count = 0
            updates_before = self._world_model.get("updates_finished", 0)
            while not self.schedule.finished(count):
                version = self._status.policy_version
                if not self._run_episode(count):
                    continue
                count += 1
                if self.schedule.finished(count) or not self.schedule.iteration_done(count):
                    continue
                if self.schedule.wait_for_policy_update and self.schedule.source == "policy":
                    self._wait_for_update(version, updates_before)
                updates_before = self._world_model.get("updates_finished", 0)
            self.get_logger().info("schedule finished; real success rate per policy version:\n" + self.log.table())
        except Stopped:
            return
        except TimeoutError as err:
            self.get_logger().error(f"schedule aborted: {err}")
            self._exit_code = 1
        except Exception as err:  # noqa: BLE001  (a failed schedule must end the graph, named)
            if self._stop.is_set() or not self.context.ok():
                return  # shut down (SIGINT) while calling a service: not a failure
            self.get_logger().error(f"schedule failed: {type(err).__name__}: {err}")
            self._exit_code = 1
        if not self._stop.is_set():
            self.context.try_shutdown()

    def close(self) -> None:
        self._stop.set()
        self._observe(lambda: None)
        self._worker.join(timeout=5.0)

    def exit_code(self) -> int:
        return self._exit_code


def main() -> int:
    return run_node(EpisodeManagerNode)


if __name__ == "__main__":
    raise SystemExit(main())
