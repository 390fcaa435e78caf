"""The mission: `finetune` brought up by the pip-only runner on the simulated arm, end to end.

Seeded with 4 recorded demonstrations, the graph bootstraps a BC policy, runs real (sim) episodes
through the safety-gated executor and the recorder, trains the world model and the policy between
iterations, publishes and hot-swaps the new version at an episode boundary, and ends by itself.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def _tail(log_path: Path, lines: int = 80) -> str:
    """The runner log's last lines, without encoder and progress-bar noise."""
    kept = [line for line in log_path.read_text().splitlines() if "libx264" not in line and "Map:" not in line]
    return "\n".join(kept[-lines:])


def _overrides(tmp_path: Path) -> Path:
    from sim_data import small_finetune_config

    # The candidate is published as v0002 (the rejection of a worse candidate is test_pipeline's).
    small_finetune_config(tmp_path / "finetune.yaml", bc_steps=300, world_model_steps=40, vq_fit_steps=40, actor_frozen=True)
    params = {
        "sim_robot": {"sim": {"image_size": [32, 32]}},
        "recorder": {"image_size": [32, 32], "min_free_disk_mb": 0.0},
        "episode_manager": {"episodes_per_iteration": 2, "iterations": 2, "max_episode_s": 6.0, "start_delay_s": 1.0},
        "world_model_node": {"pipeline_config": str(tmp_path / "finetune.yaml"), "episodes_per_update": 2},
    }
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump({node: {"ros__parameters": values} for node, values in params.items()}))
    return path


RUN_TIMEOUT_S = 900  # about 3 min on a quiet 2-core machine


@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_one_full_outer_iteration_end_to_end(ros, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sim_data import record_sim_episodes
    from std_msgs.msg import String
    from vla_mbpo_ros.msg import ExecutedCommand, PolicyUpdate, SafetyStatus

    from vla_mbpo_ros.core.control.limits import load_safety_config
    from vla_mbpo_ros.core.util.process import launcher_environment
    from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS

    record_sim_episodes(tmp_path / "dataset", seeds=range(4))
    statuses = ros.subscribe(SafetyStatus, "/vla_mbpo/safety_status", LATCHED_QOS)
    updates = ros.subscribe(PolicyUpdate, "/vla_mbpo/policy_update", LATCHED_QOS)
    commands = ros.subscribe(ExecutedCommand, "/vla_mbpo/executed_command", RELIABLE_QOS)
    world_model = ros.subscribe(String, "/vla_mbpo/world_model/status", LATCHED_QOS)
    diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics")

    log_path = tmp_path / "runner.log"
    with log_path.open("w") as log_file:
        runner = subprocess.Popen(
            [sys.executable, "-m", "vla_mbpo_ros.bringup", "finetune", f"output_dir:={tmp_path}", f"config:={_overrides(tmp_path)}"],
            stdout=log_file, stderr=subprocess.STDOUT, env=launcher_environment(),
        )
        try:
            runner.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            runner.send_signal(signal.SIGINT)  # the runner shuts its nodes down; then the log is complete
            runner.wait(timeout=60)
            pytest.fail(f"the finetune run did not end within {RUN_TIMEOUT_S} s:\n{_tail(log_path)}")
    log = log_path.read_text()
    assert runner.returncode == 0, _tail(log_path)
    assert "required node episode_manager finished" in log

    with (tmp_path / "episodes.csv").open() as handle:
        episodes = list(csv.DictReader(handle))
    assert [int(e["iteration"]) for e in episodes] == [0, 0, 1, 1]
    assert {e["policy_version"] for e in episodes[:2]} == {"v0001"}
    info = json.loads((tmp_path / "dataset" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 8, "4 demonstrations + 4 policy episodes recorded"

    result = json.loads((tmp_path / "finetune" / "iterations" / "0001" / "result.json").read_text())
    assert result["published"] and [u.version for u in updates][-1] == "v0002"
    # Swapped at the boundary between iterations, never inside an episode.
    assert {e["policy_version"] for e in episodes[2:]} == {"v0002"}
    assert (tmp_path / "finetune" / "report" / "learning_curves.png").is_file()

    # The policy never trips the gate. A watchdog latch (a starved process on a loaded machine) is
    # allowed: the sim manager resets it and the schedule goes on.
    causes = {s.latch_reason for s in statuses if s.latch_reason}
    assert statuses and all(c.startswith("stale_observation") for c in causes), causes
    limits = load_safety_config(REPO / "config" / "robots" / "so101.yaml").limits
    policy_commands = [c for c in commands if c.source == "policy"]
    assert policy_commands, "the policy drove the arm"
    for c in commands:
        assert all(lo - 1e-9 <= q <= hi + 1e-9 for q, lo, hi in zip(c.positions, limits.position_min, limits.position_max))
    reporters = {s.name for d in diagnostics for s in d.status}
    assert {"vla_mbpo_ros: policy_executor", "vla_mbpo_ros: world_model_node", "vla_mbpo_ros: observation_sync"} <= reporters
    assert any(json.loads(s.data).get("updates_finished", 0) >= 1 for s in world_model)
