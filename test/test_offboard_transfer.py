"""Two "machines" without a shared filesystem: the world-model node (trainer) and the policy executor
(robot) run as real processes in different working directories, each with its own relative
``outputs``/``checkpoints`` folder and no path in common. A new version reaches the executor only
over ROS (``checkpoint_transfer: ros``): fetched in chunks, verified, renamed into the executor's
own trusted root, validated and swapped in, as its status topics show. A corrupted and an oversized
transfer are refused with clear errors while the running policy stays.

The trainer's run folder is what a finished pipeline iteration leaves (publish_candidate + state.json),
with a replay policy as the checkpoint, so no training runs here. Observations for the executor's
validation are published by the test (two small views at 10 Hz), no simulator needed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def publish_version(trainer: Path, chunks: int) -> dict:
    """Publish the next version in the trainer's run folder, as a finished iteration does."""
    from vla_mbpo_ros.core.loop.run_dir import IterationDir, publish_candidate, read_state, write_state
    from vla_mbpo_ros.core.policy.replay import ReplayPolicy

    run_dir = trainer / "outputs" / "finetune"
    state = read_state(run_dir)
    it = IterationDir(run_dir, state["iterations_done"])
    actions = 0.05 * np.sin(np.linspace(0, 6, chunks * 10 * 6, dtype=np.float32)).reshape(chunks, 10, 6)
    ReplayPolicy(actions, ("head", "wrist"), "candidate").save(it.staging("candidate"))
    it.commit("candidate")
    published = publish_candidate(run_dir, it, True, "")
    state.update(current_policy={k: published[k] for k in ("version", "path", "sha256")}, iterations_done=state["iterations_done"] + 1)
    write_state(run_dir, state)
    return published


class Robot:
    """The test's side of the robot: observations for validation, the executor's status topics."""

    def __init__(self, ros) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from vla_mbpo_ros.msg import MultiViewObservation, PolicyUpdate, SafetyStatus

        from vla_mbpo_ros.conversions import numpy_to_image
        from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, OBSERVATION_QOS

        latched_deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.policy_status = ros.subscribe(String, "/vla_mbpo/policy_status", latched_deep)
        self.safety_status = ros.subscribe(SafetyStatus, "/vla_mbpo/safety_status", latched_deep)
        self.updates = ros.subscribe(PolicyUpdate, "/vla_mbpo/policy_update", LATCHED_QOS)
        publisher = ros.publisher(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
        image = np.full((24, 32, 3), 90, np.uint8)
        self.observation = MultiViewObservation(view_names=["head", "wrist"], images=[numpy_to_image(image, "rgb8")] * 2,
                                                view_offsets=[0.0, 0.0], joint_state=JointState(name=JOINTS, position=[0.0] * 6))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, args=(ros, publisher), daemon=True)
        self._thread.start()

    def _publish(self, ros, publisher) -> None:
        while not self._stop.wait(0.1):  # a camera-like stream at 10 Hz
            self.observation.header.stamp = ros.node.get_clock().now().to_msg()
            publisher.publish(self.observation)

    def verdict(self, version: str, timeout: float = 120.0) -> dict:
        """The executor's final word on ``version`` (active or rejected; not fetching/pending)."""
        from ros_harness import wait_until

        def find():
            for msg in reversed(list(self.policy_status)):
                status = json.loads(msg.data)
                if status["version"] == version and status["state"] in ("active", "rejected"):
                    return status
            return None

        return wait_until(find, timeout, f"the executor's verdict on {version}")

    def states_of(self, version: str) -> list[str]:
        return [json.loads(m.data)["state"] for m in list(self.policy_status) if json.loads(m.data)["version"] == version]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


@pytest.fixture
def machines(tmp_path: Path):
    """Two folders as two machines; the trainer's signing key made as docs/deployment.md says, and only
    its public half copied to the robot."""
    import shutil

    from vla_mbpo_ros.core.policy.signing import PUBLIC_KEY_NAME, generate_key_pair

    trainer, robot = tmp_path / "trainer", tmp_path / "robot"
    trainer.mkdir()
    robot.mkdir()
    _, public = generate_key_pair(trainer / "keys")
    (robot / "keys").mkdir()
    shutil.copy(public, robot / "keys" / PUBLIC_KEY_NAME)
    return trainer, robot


def trainer_params(**params) -> dict:
    return {"output_dir": "outputs", "checkpoint_transfer": "ros", "checkpoint_signing_key": "keys/checkpoint_signing.key",
            **params}


def start_trainer(launch_node, trainer: Path, **params):
    params = trainer_params(bootstrap=False, episodes_per_update=1000, **params)
    return launch_node("vla_mbpo_ros.nodes.world_model_node", "world_model_node", params=params, cwd=trainer)


def start_executor(launch_node, robot: Path, **params):
    values = {"trusted_checkpoint_roots": ["checkpoints"], "validation_observations": 2,
              "trusted_checkpoint_keys": ["keys/checkpoint_signing.pub"], "checkpoint_transfer.chunk_bytes": 4096, **params}
    return launch_node("vla_mbpo_ros.nodes.policy_executor", "policy_executor",
                       param_files=[REPO / "config" / "policy_executor.yaml"], params=values, cwd=robot)


def no_staging_left(robot: Path) -> bool:
    from vla_mbpo_ros.core.policy.transfer import STAGING_DIR

    staging = robot / "checkpoints" / STAGING_DIR
    return not staging.exists() or not any(staging.iterdir())


def test_a_new_version_arrives_over_ros_verified_and_is_swapped_in(ros, launch_node, machines):
    from ros_harness import wait_until

    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
    from vla_mbpo_ros.core.policy.transfer import received_folder_name

    trainer, robot = machines
    published = publish_version(trainer, chunks=100)  # ~24 kB of weights: several 4 kB requests
    start_executor(launch_node, robot)  # no policy yet
    probe = Robot(ros)
    try:
        start_trainer(launch_node, trainer)
        update = wait_until(lambda: probe.updates and probe.updates[-1], 120.0, "the trainer's announcement")
        assert update.uri == "ros:///world_model_node/v0001" and update.sha256 == published["sha256"]

        verdict = probe.verdict("v0001")
        assert verdict["state"] == "active" and verdict["running"] == "v0001", verdict
        assert probe.states_of("v0001")[0] == "fetching"
        wait_until(lambda: any(s.policy_version == "v0001" for s in list(probe.safety_status)), 30.0,
                   "SafetyStatus reporting v0001")
        received = robot / "checkpoints" / received_folder_name("v0001", published["sha256"])
        assert checkpoint_sha256(received) == published["sha256"]
        assert not Path(published["path"]).is_relative_to(robot) and no_staging_left(robot)
    finally:
        probe.close()


def test_corrupted_and_oversized_transfers_are_refused_and_the_running_policy_stays(ros, launch_node, machines):
    from ros_harness import wait_until

    from vla_mbpo_ros.core.policy.checkpoint import WEIGHTS_NAME
    from vla_mbpo_ros.core.policy.replay import ReplayPolicy

    trainer, robot = machines
    local = robot / "checkpoints" / "installed"
    ReplayPolicy(np.zeros((2, 10, 6), np.float32), ("head", "wrist"), "v-local").save(local)
    start_executor(launch_node, robot, policy_checkpoint=str(local), **{"checkpoint_transfer.max_bytes": 60_000})
    probe = Robot(ros)
    try:
        assert probe.verdict("v-local")["state"] == "active"

        # v0001 is damaged on the trainer's disk after it was published: its stored manifest still
        # lists the original digests, so the trainer serves bytes that do not match them.
        corrupted = publish_version(trainer, chunks=50)
        weights = Path(corrupted["path"]) / WEIGHTS_NAME
        data = bytearray(weights.read_bytes())
        data[-7] ^= 0xFF
        weights.write_bytes(bytes(data))
        trainer_node = start_trainer(launch_node, trainer)
        verdict = probe.verdict("v0001")
        assert verdict["state"] == "rejected" and verdict["running"] == "v-local", verdict
        assert f"sha256 mismatch of {WEIGHTS_NAME} of v0001" in verdict["reason"], verdict["reason"]
        assert no_staging_left(robot) and not list((robot / "checkpoints").glob("v0001*"))
        trainer_node.stop()

        big = publish_version(trainer, chunks=400)  # ~96 kB of weights > max_bytes
        trainer_node = start_trainer(launch_node, trainer)
        verdict = probe.verdict("v0002")
        assert verdict["state"] == "rejected" and verdict["running"] == "v-local", verdict
        assert "over checkpoint_transfer.max_bytes = 60000" in verdict["reason"], verdict["reason"]
        assert big["sha256"] and no_staging_left(robot) and not list((robot / "checkpoints").glob("v0002*"))

        # Impersonation: a node that calls itself world_model_node, serving a well-formed version signed with
        # a key of its own. The name is trusted; the key is not, so not one byte is fetched.
        from vla_mbpo_ros.core.policy.signing import generate_key_pair

        trainer_node.stop()
        rogue_key, _ = generate_key_pair(trainer / "rogue_keys")
        publish_version(trainer, chunks=20)
        start_trainer(launch_node, trainer, checkpoint_signing_key=str(rogue_key))
        verdict = probe.verdict("v0003")
        assert verdict["state"] == "rejected" and verdict["running"] == "v-local", verdict
        assert "not a trusted key" in verdict["reason"], verdict["reason"]
        assert no_staging_left(robot) and not list((robot / "checkpoints").glob("v0003*"))

        # The executor kept the policy it had and still reports it.
        wait_until(lambda: [s for s in list(probe.safety_status) if s.policy_version == "v-local"], 10.0, "status of v-local")
        assert all(s.policy_version == "v-local" for s in list(probe.safety_status))
    finally:
        probe.close()


def test_a_lerobot_smolvla_trained_by_the_trainer_runs_on_the_robot(ros, launch_node, machines):
    """The real-scale setup (config/finetune_gpu.yaml, shrunk onto the CPU: a LeRobot SmolVLA and a Janus
    snapshot, both saved by the test) through the ROS loop: the trainer SFTs v0001 from the recorded demos,
    then on request finetunes the Janus world model and runs (critic-only) PPO in it for v0002; each version reaches the
    robot only over ROS and is validated and run there by the LeRobot backend."""
    from ros_harness import wait_until
    from sim_data import gpu_setup_on_cpu_config, record_sim_episodes
    from std_srvs.srv import Trigger

    trainer, robot = machines
    record_sim_episodes(trainer / "outputs" / "dataset", seeds=range(4))
    # Critic-only PPO: v0002 acts as v0001, so it is published (which candidates are kept is test_pipeline's).
    gpu_setup_on_cpu_config(trainer / "setup.yaml", trainer / "snapshots", actor_frozen=True)
    start_executor(launch_node, robot)
    probe = Robot(ros)
    try:
        params = trainer_params(pipeline_config="setup.yaml", episodes_per_update=1000)
        launch_node("vla_mbpo_ros.nodes.world_model_node", "world_model_node", params=params, cwd=trainer)
        first = wait_until(lambda: probe.updates and probe.updates[-1], 300.0, "the SFT-ed SmolVLA announced")
        assert first.version == "v0001" and first.policy_type == "lerobot_flow", first
        verdict = probe.verdict("v0001", timeout=180.0)
        assert verdict["state"] == "active" and verdict["running"] == "v0001", verdict

        assert ros.call(Trigger, "/world_model_node/update_now", Trigger.Request()).success
        second = wait_until(lambda: probe.updates[-1].version == "v0002" and probe.updates[-1], 600.0, "v0002 announced")
        assert second.policy_type == "lerobot_flow"
        verdict = probe.verdict("v0002", timeout=180.0)
        assert verdict["state"] == "active" and verdict["running"] == "v0002", verdict
    finally:
        probe.close()
