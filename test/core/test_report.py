"""The finetune report: success intervals, per-version and per-iteration tables, the figure."""

from __future__ import annotations

import csv
import json

import pytest

from vla_mbpo_ros.core.loop.report import version_rows, wilson_interval, write_report
from vla_mbpo_ros.core.loop.schedule import EpisodeLog, EpisodeRecord


def test_wilson_interval_matches_the_textbook_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # not the zero-width 0 +- 0
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def _run(tmp_path):
    run = tmp_path / "run"
    for iteration, version in enumerate(["v0001", "v0002", "v0003"]):
        it = run / "iterations" / f"{iteration:04d}"
        it.mkdir(parents=True)
        metrics = {"bc.bc_loss_last": 0.5} if iteration == 0 else {
            "world_model.image_loss": [5.0, 4.0 - iteration], "world_model.answer_loss": [0.7, 0.3],
            "rl.success_before": 0.2, "rl.success_after": 0.3 + 0.1 * iteration,
            "rl.approx_kl": [0.01, 0.03], "rl.clip_fraction": [0.1, 0.2], "rl.explained_variance": [0.5, None]}
        (it / "result.json").write_text(json.dumps({"iteration": iteration, "version": version, "published": True,
                                                    "metrics": metrics}))
    log = EpisodeLog()
    for index, (iteration, version, success) in enumerate(
            [(0, "", True), (0, "", False), (1, "v0001", True), (1, "v0001", True), (1, "v0001", False)]):
        log.add(EpisodeRecord(index, iteration, version, success, 5.0, "success" if success else "timeout"))
    log.write_csv(run / "episodes.csv")
    return run


def test_the_report_tables_every_iteration_and_every_policy_version(tmp_path):
    run = _run(tmp_path)
    report = write_report(run)
    with (report / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["version"] for r in rows] == ["v0001", "v0002", "v0003"]
    assert float(rows[2]["approx_kl"]) == pytest.approx(0.02)  # mean over refills
    assert float(rows[1]["explained_variance"]) == pytest.approx(0.5)  # a refill without the figure is skipped
    assert rows[0]["imagined_success_after"] == ""  # the BC iteration has no RL phase
    versions = version_rows(run / "episodes.csv")
    assert [(v["policy_version"], v["episodes"], v["successes"]) for v in versions] == [("-", 2, 1), ("v0001", 3, 2)]
    assert (versions[1]["ci95_low"], versions[1]["ci95_high"]) == pytest.approx(wilson_interval(2, 3))
    assert (report / "real_success.csv").is_file()
    assert (report / "learning_curves.png").stat().st_size > 10_000  # four panels drawn


def test_rewriting_the_report_adds_the_real_episodes_of_the_last_version(tmp_path, capsys):
    from vla_mbpo_ros.core.loop.report import main

    run = _run(tmp_path)
    write_report(run)
    log = EpisodeLog.read_csv(run / "episodes.csv")
    log.add(EpisodeRecord(5, 2, "v0003", False, 5.0, "timeout"))  # the last version ran after its iteration
    log.write_csv(tmp_path / "later.csv")
    main([str(run), "--episodes", str(tmp_path / "later.csv")])
    with (run / "report" / "real_success.csv").open() as handle:
        versions = [r["policy_version"] for r in csv.DictReader(handle)]
    assert versions == ["-", "v0001", "v0003"] and str(run / "report") in capsys.readouterr().out
