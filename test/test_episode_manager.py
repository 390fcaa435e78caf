"""The episode manager node against services and topics played by the test (real rclpy, two processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ros_harness import wait_until
from std_srvs.srv import Trigger
from vla_mbpo_ros.msg import SafetyStatus
from vla_mbpo_ros.srv import ResetSim, StartEpisode

from vla_mbpo_ros.nodes._runtime import LATCHED_QOS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ros


def test_refused_e_stop_resets_are_retried_and_logged_without_crashing(ros, launch_node, tmp_path):
    """On the sim the manager resets a latched e-stop itself; while the executor keeps refusing
    (the cause persists) it logs and retries. Both log calls sit next to each other in one loop:
    a shared logging call site with different throttling crashed the node on the second round."""
    calls = {"reset_estop": 0, "start": 0, "sim_reset": 0}

    def refuse_reset(_request, response):
        calls["reset_estop"] += 1
        response.success, response.message = False, "refused: stale_observation persists"
        return response

    def refuse_start(_request, response):
        calls["start"] += 1
        response.success, response.message, response.episode_index = False, "refused: e-stop latched", -1
        return response

    def reset_sim(request, response):
        calls["sim_reset"] += 1
        response.success, response.seed, response.message = True, 1, "reset with seed 1"
        return response

    ros.node.create_service(Trigger, "/vla_mbpo/reset_estop", refuse_reset)
    ros.node.create_service(StartEpisode, "/vla_mbpo/executor/start_episode", refuse_start)
    ros.node.create_service(ResetSim, "/sim/reset", reset_sim)
    status = ros.publisher(SafetyStatus, "/vla_mbpo/safety_status", LATCHED_QOS)
    status.publish(SafetyStatus(state=SafetyStatus.STATE_LATCHED, latch_reason="stale_observation: 0.6 s", policy_version="v0001"))
    manager = launch_node(
        "vla_mbpo_ros.nodes.episode_manager", "episode_manager",
        param_files=[REPO / "config" / "episode_manager.yaml"],
        params={"record": False, "start_delay_s": 0.0, "output_dir": str(tmp_path)},
    )
    wait_until(lambda: calls["reset_estop"] >= 3 and calls["start"] >= 3, 60, "three refused resets and starts")
    assert manager.alive(), manager.output()
    output = manager.output()
    assert "Traceback" not in output
    assert output.count("sim: reset the e-stop latched by 'stale_observation: 0.6 s'") >= 3
    assert "executor refused to start: refused: e-stop latched" in output
    assert calls["sim_reset"] == 1  # one episode attempt: the scene is reset once, the start retried
