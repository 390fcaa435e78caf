"""The world-model node as a real process: bootstrap policy, update on demand, kill -9 and resume."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.ros


@pytest.fixture
def workspace(tmp_path):
    from sim_data import record_sim_episodes, small_finetune_config

    record_sim_episodes(tmp_path / "dataset", seeds=range(4))
    # Long enough to be killed in the middle of the world-model phase; published once done (the rejection of
    # a worse candidate is test_pipeline's).
    small_finetune_config(tmp_path / "finetune.yaml", bc_steps=30, world_model_steps=400, vq_fit_steps=20, actor_frozen=True)
    return tmp_path


def _workers(run_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "vla_mbpo_ros.core.loop.pipeline" in cmdline and str(run_dir) in cmdline:
            found.append(proc)
    return found


def test_bootstraps_then_resumes_an_update_after_kill_9(ros, launch_node, workspace):
    from ros_harness import wait_until
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from vla_mbpo_ros.msg import PolicyUpdate

    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
    from vla_mbpo_ros.nodes._runtime import LATCHED_QOS

    params = {"output_dir": str(workspace), "pipeline_config": str(workspace / "finetune.yaml"), "episodes_per_update": 100,
              "checkpoint_signing_key": str(workspace / "keys" / "checkpoint_signing.key"), "create_signing_key": True}
    node = launch_node("vla_mbpo_ros.nodes.world_model_node", "world_model_node", params=params)
    updates = ros.subscribe(PolicyUpdate, "/vla_mbpo/policy_update", LATCHED_QOS)
    statuses = ros.subscribe(String, "/vla_mbpo/world_model/status", LATCHED_QOS)
    examples_qos = QoSProfile(depth=16, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    imagined = ros.subscribe(Image, "/vla_mbpo/imagined/wrist/image_raw", examples_qos)
    real = ros.subscribe(Image, "/vla_mbpo/imagined/wrist/real/image_raw", examples_qos)

    first = wait_until(lambda: updates and updates[-1], 240.0, "the bootstrap (BC) policy announced")
    assert first.version == "v0001" and first.uri.startswith("file://")
    assert checkpoint_sha256(Path(first.uri[len("file://"):])) == first.sha256

    response = ros.call(Trigger, "/world_model_node/update_now", Trigger.Request())
    assert response.success
    wait_until(lambda: statuses and json.loads(statuses[-1].data).get("phase") == "world_model", 120.0, "world-model phase")
    run_dir = workspace / "finetune"
    wait_until(lambda: _workers(run_dir), 30.0, "the training worker process")
    node.kill9()
    wait_until(lambda: not _workers(run_dir), 30.0, "the orphaned worker to exit")
    assert not (run_dir / "iterations" / "0001" / "result.json").exists()

    statuses.clear()
    launch_node("vla_mbpo_ros.nodes.world_model_node", "world_model_node", params=params)
    wait_until(lambda: statuses and json.loads(statuses[-1].data).get("state") == "training", 60.0, "the update resumed")
    done = wait_until(
        lambda: [s for s in statuses if json.loads(s.data).get("last_result", {}).get("iteration") == 1], 600.0, "iteration 1 done"
    )
    result = json.loads(done[-1].data)["last_result"]
    assert (run_dir / "iterations" / "0001" / "result.json").is_file()
    # The world-model phase's examples, real and imagined paired by stamp, for RViz / Foxglove.
    wait_until(lambda: len(imagined) == len(real) == 6, 30.0, "6 imagined and 6 real example frames")
    size = yaml.safe_load((workspace / "finetune.yaml").read_text())["world_model"]["tiny"]["image_size"]
    assert (imagined[0].height, imagined[0].width, imagined[0].encoding) == (size, size, "rgb8")
    assert [m.header.stamp for m in imagined] == [m.header.stamp for m in real]
    assert result["published"] and result["version"] == "v0002", result
    announced = wait_until(lambda: updates[-1].version == "v0002" and updates[-1], 30.0, "v0002 announced")
    assert checkpoint_sha256(Path(announced.uri[len("file://"):])) == announced.sha256

    # Killed right after an update was due, before its iteration began: the episodes that made it due are in
    # the dataset, and a restarted node counts them from there (events published before it started are gone).
    node = launch_node("vla_mbpo_ros.nodes.world_model_node", "world_model_node", params={**params, "episodes_per_update": 2})
    wait_until(lambda: statuses and json.loads(statuses[-1].data).get("updates_finished") == 0, 60.0, "the restarted node")
    node.kill9()
    from sim_data import record_sim_episodes

    record_sim_episodes(workspace / "dataset", seeds=range(10, 12))  # two more episodes, no EpisodeEvent anyone saw
    statuses.clear()
    launch_node("vla_mbpo_ros.nodes.world_model_node", "world_model_node", params={**params, "episodes_per_update": 2})
    wait_until(lambda: statuses and json.loads(statuses[-1].data).get("state") == "training", 60.0,
               "an update started by the episodes recorded since the last one")
