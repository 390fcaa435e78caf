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
