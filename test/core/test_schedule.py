import csv

import pytest

from vla_mbpo_ros.core.loop.schedule import EpisodeLog, EpisodeRecord, ScheduleConfig


def test_schedule_counts_iterations_and_knows_when_it_is_done():
    schedule = ScheduleConfig(episodes_per_iteration=3, iterations=2)
    assert [schedule.iteration_of(n) for n in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert [schedule.iteration_done(n) for n in range(7)] == [False, False, False, True, False, False, True]
    assert not schedule.finished(5) and schedule.finished(6)
    assert not ScheduleConfig(iterations=0).finished(10_000)


@pytest.mark.parametrize(
    "field,value",
    [("source", "joystick"), ("label_source", "magic"), ("episodes_per_iteration", 0), ("max_episode_s", 0.0), ("iterations", -1)],
)
def test_bad_schedule_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"schedule.{field}"):
        ScheduleConfig(**{field: value})


def test_log_reports_success_rate_per_policy_version(tmp_path):
    log = EpisodeLog()
    for i, (it, version, ok) in enumerate([(0, "v0", True), (0, "v0", False), (1, "v1", True), (1, "v1", True)]):
        log.add(EpisodeRecord(i, it, version, ok, 3.0, "success" if ok else "time_limit"))
    assert log.success_by_version() == [(0, "v0", 2, 1), (1, "v1", 2, 2)]
    table = log.table().splitlines()
    assert table[1].split() == ["0", "v0", "2", "1", "0.50"] and table[2].split()[-1] == "1.00"
    log.write_csv(tmp_path / "episodes.csv")
    rows = list(csv.DictReader((tmp_path / "episodes.csv").open()))
    assert [r["policy_version"] for r in rows] == ["v0", "v0", "v1", "v1"] and rows[1]["success"] == "False"
    assert EpisodeLog.read_csv(tmp_path / "episodes.csv").records == log.records


# ---- the episode manager's decisions
from vla_mbpo_ros.core.data.recording import Outcome  # noqa: E402
from vla_mbpo_ros.core.loop.schedule import (  # noqa: E402
    EpisodeView,
    UpdateView,
    decide_episode_end,
    decide_update,
    next_episode_check,
)

SIM = ScheduleConfig(max_episode_s=10.0, settle_after_success_s=0.5, label_source="sim")


def test_an_episode_ends_on_latch_operator_settled_success_or_time_limit():
    assert decide_episode_end(SIM, EpisodeView(now=3.0, started=0.0)) is None
    assert decide_episode_end(SIM, EpisodeView(now=3.0, started=0.0, latched=True)).outcome is Outcome.FAILURE
    operator = decide_episode_end(SIM, EpisodeView(now=3.0, started=0.0, operator_outcome=Outcome.DISCARD))
    assert (operator.reason, operator.outcome) == ("operator", Outcome.DISCARD)
    # success ends the episode only after settling, so the success frames are recorded
    assert decide_episode_end(SIM, EpisodeView(now=3.2, started=0.0, success_since=3.0)) is None
    settled = decide_episode_end(SIM, EpisodeView(now=3.5, started=0.0, success_since=3.0))
    assert (settled.reason, settled.outcome) == ("success", Outcome.SUCCESS)
    timeout = decide_episode_end(SIM, EpisodeView(now=10.0, started=0.0))
    assert (timeout.reason, timeout.outcome) == ("time_limit", Outcome.FAILURE)
    # a latch wins over everything else that happened at the same time
    both = decide_episode_end(SIM, EpisodeView(now=10.0, started=0.0, latched=True, success_since=1.0))
    assert both.reason == "estop"


def test_without_stopping_on_success_a_success_seen_labels_the_time_limit_end():
    keep_going = ScheduleConfig(max_episode_s=10.0, stop_on_success=False)
    assert decide_episode_end(keep_going, EpisodeView(now=9.0, started=0.0, success_since=1.0)) is None
    end = decide_episode_end(keep_going, EpisodeView(now=10.0, started=0.0, success_since=1.0))
    assert (end.reason, end.outcome) == ("time_limit", Outcome.SUCCESS)
    unlabelled = ScheduleConfig(max_episode_s=10.0, label_source="none")
    assert decide_episode_end(unlabelled, EpisodeView(now=10.0, started=0.0, success_since=1.0)).outcome is Outcome.UNLABELLED


def test_the_manager_sleeps_until_the_next_deadline_of_the_episode():
    assert next_episode_check(SIM, EpisodeView(now=2.0, started=0.0)) == 8.0
    assert next_episode_check(SIM, EpisodeView(now=2.0, started=0.0, success_since=1.8)) == pytest.approx(0.3)
    assert next_episode_check(SIM, EpisodeView(now=12.0, started=0.0)) == 0.0


def test_waiting_for_a_policy_update_ends_on_a_swap_or_on_either_refusal():
    waiting = UpdateView("v1", "v1", world_model_updates=3, world_model_updates_before=3)
    assert decide_update(waiting) is None
    assert decide_update(UpdateView("v2", "v1", 3, 3)) == "policy v2 is running"
    # an update the world-model node finished but did not publish (its validation refused it)
    refused = decide_update(UpdateView("v1", "v1", 4, 3, last_update_published=False, last_update_reason="imagined success 0.5 -> 0.2"))
    assert refused == "update rejected (imagined success 0.5 -> 0.2); continuing with v1"
    # a published update that is still running its pipeline does not count as refused
    assert decide_update(UpdateView("v1", "v1", 4, 3, last_update_published=True)) is None
    executor = decide_update(UpdateView("v1", "v1", 4, 3, executor_rejections=(("v2", "sha256 mismatch"),)))
    assert executor == "the executor refused v2 (sha256 mismatch); continuing with v1"
