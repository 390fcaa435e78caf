"""The policy executor as a real process against the simulated SO-101 and the observation sync node.

One sim robot + observation sync pair serves the whole module (started once); every test starts its
own executor with replay-policy checkpoints it writes itself. E-stop, watchdogs, bad chunks, hot-swap
validation, intervention and the teleop-only profile are checked on what the executor publishes
(ExecutedCommand, SafetyStatus, policy status) and on the sim's joint states.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
RATE = 30.0
PERIOD = 1.0 / RATE
SIM_PARAMS = {"sim.image_size": [48, 64], "sim.camera_fps": 15.0, "sim.control_fps": RATE}
TASK = "pick up the cube"
D = 6


@pytest.fixture(scope="module")
def robot(tmp_path_factory, module_ros_domain):
    """Sim robot + observation sync, shared by the module's tests (in the module's ROS domain)."""
    from ros_harness import NodeProcess, RosTestNode, wait_until
    from vla_mbpo_ros.msg import MultiViewObservation

    from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS

    log_dir = tmp_path_factory.mktemp("robot")
    processes = [
        NodeProcess("vla_mbpo_ros.nodes.sim_robot", "sim_robot", log_dir, params=SIM_PARAMS),
        NodeProcess("vla_mbpo_ros.nodes.observation_sync", "observation_sync", log_dir, param_files=[REPO / "config" / "observation_sync.yaml"]),
    ]
    # Past the start-up transient (first renders, DDS matching) before any test starts an
    # episode: a gap there would latch the stale-observation watchdog, which is not under test.
    probe = RosTestNode("robot_warmup")
    observations = probe.subscribe(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
    wait_until(lambda: len(observations) >= 45, 120.0, "3 s of synchronized observations from the sim")
    probe.close()
    yield processes
    for process in processes:
        process.stop(timeout=10.0)


# ------------------------------------------------------------------ helpers
def sine_chunks(n: int = 9, k: int = 10, amplitude: float = 0.4) -> np.ndarray:
    """n chunks of k actions tracing one slow swing of shoulder_pan (within the step limit)."""
    t = np.arange(n * k)
    actions = np.zeros((n * k, D), np.float32)
    actions[:, 0] = amplitude * np.sin(2 * np.pi * t / (n * k))
    return actions.reshape(n, k, D)


# The trainer's signing key for this module's checkpoints (the executors trust its public half).
KEYS = Path(tempfile.mkdtemp(prefix="executor_test_keys_"))


def signing_key(name: str = "trainer"):
    from vla_mbpo_ros.core.policy.signing import ensure_key_pair, load_private_key

    return load_private_key(ensure_key_pair(KEYS / name)[0])


def save_replay(directory: Path, chunks: np.ndarray, version: str, views=("head", "wrist"), signer: str | None = "trainer"):
    """A replay checkpoint as the trainer publishes it: signed by ``signer``'s key (None: unsigned)."""
    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
    from vla_mbpo_ros.core.policy.replay import ReplayPolicy
    from vla_mbpo_ros.core.policy.signing import sign_checkpoint
    from vla_mbpo_ros.core.policy.transfer import load_or_build_manifest

    ReplayPolicy(chunks, views, version).save(directory)
    if signer is None:
        load_or_build_manifest(directory, version)
    else:
        sign_checkpoint(directory, version, signing_key(signer))
    return directory, checkpoint_sha256(directory)


def start_executor(launch_node, tmp_path: Path, checkpoint: Path | None = None, param_files=(), **params):
    values = {
        "control_rate": RATE,
        "trusted_checkpoint_roots": [str(tmp_path / "trusted")],
        "trusted_checkpoint_keys": [str(KEYS / "trainer" / "checkpoint_signing.pub")],
        "status_period": 0.5,
        **params,
    }
    if checkpoint is not None:
        values["policy_checkpoint"] = str(checkpoint)
    files = [REPO / "config" / "policy_executor.yaml", *param_files]
    return launch_node("vla_mbpo_ros.nodes.policy_executor", "policy_executor", param_files=files, params=values)


class Probe:
    """What the executor publishes, as seen by the test's node, plus its inputs and services."""

    def __init__(self, ros) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, String
        from vla_mbpo_ros.msg import EpisodeEvent, ExecutedCommand, PolicyUpdate, SafetyStatus

        from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS

        # Transient local like the publishers, but a deep reader queue: every status change is kept.
        latched_deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.ros = ros
        self.executed = ros.subscribe(ExecutedCommand, "/vla_mbpo/executed_command", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.status = ros.subscribe(SafetyStatus, "/vla_mbpo/safety_status", latched_deep)
        self.policy_status = ros.subscribe(String, "/vla_mbpo/policy_status", latched_deep)
        self.joints = ros.subscribe(JointState, "/joint_states", SENSOR_QOS)
        self.estop_pub = ros.publisher(Bool, "/vla_mbpo/estop", RELIABLE_QOS)
        self.event_pub = ros.publisher(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)
        self.update_pub = ros.publisher(PolicyUpdate, "/vla_mbpo/policy_update", LATCHED_QOS)
        self.teleop_pub = ros.publisher(JointState, "/vla_mbpo/teleop/joint_command", SENSOR_QOS)
        from ros_harness import wait_until

        wait_until(lambda: self.status, 60.0, "the executor's first SafetyStatus")
        for topic in ("/vla_mbpo/estop", "/vla_mbpo/episode_event", "/vla_mbpo/policy_update"):
            ros.wait_for_subscribers(topic, timeout=30.0)

    def start(self, source: str = "policy", retry: bool = True):
        """Start an episode; with ``retry``, ask again while the executor refuses (inputs not fresh yet)."""
        from ros_harness import wait_until
        from vla_mbpo_ros.srv import StartEpisode

        def attempt():
            response = self.ros.call(StartEpisode, "/vla_mbpo/executor/start_episode", StartEpisode.Request(task=TASK, source=source))
            return response if response.success or not retry else None

        return wait_until(attempt, 60.0, f"a {source} episode to start", poll=0.2)

    def end(self):
        from vla_mbpo_ros.srv import EndEpisode

        request = EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_UNLABELLED)
        return self.ros.call(EndEpisode, "/vla_mbpo/executor/end_episode", request)

    def reset(self, retry: bool = False):
        """Reset the e-stop; with ``retry``, ask again while a cause persists (inputs not fresh yet)."""
        from ros_harness import wait_until
        from std_srvs.srv import Trigger

        def attempt():
            response = self.ros.call(Trigger, "/vla_mbpo/reset_estop", Trigger.Request())
            return response if response.success or not retry else None

        return wait_until(attempt, 30.0, "the e-stop reset", poll=0.2)

    def estop(self, pressed: bool) -> None:
        from std_msgs.msg import Bool

        self.estop_pub.publish(Bool(data=pressed))

    def wait_status(self, predicate, what: str, timeout: float = 30.0):
        from ros_harness import wait_until

        return wait_until(lambda: next((s for s in list(self.status) if predicate(s)), None), timeout, what)

    def wait_commands(self, count: int, predicate=lambda c: True, what: str = "commands", timeout: float = 30.0) -> list:
        """The next ``count`` executed commands (from now on) that satisfy ``predicate``."""
        from ros_harness import wait_until

        start = len(self.executed)

        def matching():
            found = [c for c in list(self.executed)[start:] if predicate(c)]
            return found[:count] if len(found) >= count else None

        return wait_until(matching, timeout, f"{count} {what}")

    def policy_status_for(self, version: str, timeout: float = 60.0) -> dict:
        from ros_harness import wait_until

        def find():
            for msg in reversed(list(self.policy_status)):
                status = json.loads(msg.data)
                if status["version"] == version and status["state"] != "pending":
                    return status
            return None

        return wait_until(find, timeout, f"policy status of {version}")

    def update(self, version: str, uri: str, sha256: str) -> dict:
        from vla_mbpo_ros.msg import PolicyUpdate

        self.update_pub.publish(PolicyUpdate(version=version, uri=uri, sha256=sha256, policy_type="replay"))
        from ros_harness import wait_until

        return wait_until(
            lambda: next((json.loads(m.data) for m in reversed(list(self.policy_status)) if json.loads(m.data)["version"] == version), None),
            60.0,
            f"a verdict on {version}",
        )


def stamp(msg) -> float:
    from vla_mbpo_ros.conversions import stamp_to_seconds

    return stamp_to_seconds(msg.header.stamp)


# ------------------------------------------------------------------ tests
def test_estop_mid_motion_holds_at_once_and_reset_never_resumes_motion(ros, robot, launch_node, tmp_path):
    from ros_harness import wait_until
    from trajectory_msgs.msg import JointTrajectory
    from vla_mbpo_ros.msg import SafetyStatus

    from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS

    checkpoint, _ = save_replay(tmp_path / "trusted" / "v1", sine_chunks(), "v1")
    start_executor(launch_node, tmp_path, checkpoint)
    probe = Probe(ros)
    arm = ros.subscribe(JointTrajectory, "/arm_controller/joint_trajectory", RELIABLE_QOS)
    assert probe.start().success

    moving = probe.wait_commands(15, lambda c: c.source == "policy" and not c.held, "policy commands", 60.0)
    pans = [c.positions[0] for c in moving]
    assert max(pans) - min(pans) > 0.05, "the replay policy must be moving the arm"
    assert all(c.policy_version == "v1" and c.chunk_id > 0 for c in moving)
    start_pan = probe.joints[-1].position[0]
    wait_until(lambda: abs(probe.joints[-1].position[0] - start_pan) > 0.05, 30.0, "the arm moving")

    probe.estop(True)
    latched = probe.wait_status(lambda s: s.state == SafetyStatus.STATE_LATCHED, "e-stop latched")
    assert latched.estop_input and latched.latch_reason.startswith("estop_input")
    receipt = stamp(latched)
    wait_until(lambda: any(stamp(c) > receipt + 3 * PERIOD for c in probe.executed), 10.0, "commands after the e-stop")
    before = [c for c in probe.executed if stamp(c) <= receipt]
    after = [c for c in probe.executed if stamp(c) > receipt]
    assert before[-1].source == "policy", "the e-stop came mid-motion"
    first = after[0]
    assert first.source == "hold" and first.held, "the first command after the e-stop must be a hold"
    assert stamp(first) - receipt < PERIOD, "the hold must go out within one control period"
    np.testing.assert_allclose(first.positions, before[-1].positions)
    assert all(c.source == "hold" for c in after)
    hold = np.array(first.positions)
    np.testing.assert_allclose(arm[-1].points[0].positions, hold)

    refused = probe.reset()
    assert not refused.success and "still pressed" in refused.message
    start = probe.start(retry=False)
    assert not start.success and "latched" in start.message and "estop_input" in start.message
    probe.estop(False)
    probe.wait_status(lambda s: s.state == SafetyStatus.STATE_LATCHED and not s.estop_input, "input released")
    reset = probe.reset()
    assert reset.success, reset.message
    idle = probe.wait_status(lambda s: s.state == SafetyStatus.STATE_IDLE and s.latches == 1, "idle after reset")
    assert idle.latch_reason == ""

    # After the reset nothing moves until an episode is started: a second of holds at the same pose,
    # and the arm (once it has settled at the hold, the sim may lag under load) stays there.
    def settled():
        recent = [j.position[0] for j in list(probe.joints)[-15:]]
        return len(recent) == 15 and max(recent) - min(recent) < 2e-3 and abs(recent[-1] - hold[0]) < 0.03

    wait_until(settled, 30.0, "the arm settled at the hold")
    joints_from = len(probe.joints)
    still = probe.wait_commands(int(RATE), what="commands after the reset")
    assert all(c.source == "hold" for c in still)
    np.testing.assert_allclose([c.positions for c in still], [hold] * len(still))
    pans = [j.position[0] for j in probe.joints[joints_from:]]
    assert pans and max(pans) - min(pans) < 5e-3, "the arm must stay still after the reset"

    assert probe.start().success
    probe.wait_commands(5, lambda c: c.source == "policy", "policy commands in the new episode", 60.0)


def test_step_beyond_the_limit_is_clamped_and_nan_chunks_hold_then_latch(ros, robot, launch_node, tmp_path):
    from vla_mbpo_ros.msg import SafetyStatus

    jump = np.zeros((10, D), np.float32)
    jump[:, 0] = 0.6  # 0.6 rad in one cycle, limit 0.05 rad
    nan = np.full((10, D), np.nan, np.float32)
    checkpoint, _ = save_replay(tmp_path / "trusted" / "bad", np.stack([jump, nan]), "bad")
    start_executor(launch_node, tmp_path, checkpoint)
    probe = Probe(ros)
    assert probe.start().success

    clamped = probe.wait_commands(3, lambda c: c.clamped, "clamped commands", 60.0)
    steps = np.diff([c.positions[0] for c in clamped])
    assert all(c.source == "policy" and not c.held for c in clamped)
    assert np.all(np.abs(steps) <= 0.05 + 1e-9)
    probe.wait_status(lambda s: s.last_violation.startswith("step: shoulder_pan"), "the step violation reported")
    latched = probe.wait_status(lambda s: s.state == SafetyStatus.STATE_LATCHED, "latched after repeated NaN chunks")
    assert latched.latch_reason.startswith("violations: 5"), latched.latch_reason
    assert latched.last_violation.startswith("nonfinite"), latched.last_violation
    assert latched.violations >= 5 and latched.holds >= 5
    held = [c for c in probe.executed if c.held and c.source == "policy"]
    assert held and all(np.all(np.isfinite(c.positions)) for c in probe.executed), "nothing non-finite reaches the arm"


def test_hot_swap_rejects_bad_checkpoints_keeps_running_and_swaps_at_the_boundary(ros, robot, launch_node, tmp_path):
    from vla_mbpo_ros.msg import EpisodeEvent, SafetyStatus

    from vla_mbpo_ros.core.policy.checkpoint import WEIGHTS_NAME, checkpoint_sha256

    trusted = tmp_path / "trusted"
    checkpoint, _ = save_replay(trusted / "v1", sine_chunks(), "v1")
    start_executor(launch_node, tmp_path, checkpoint)
    probe = Probe(ros)
    assert probe.policy_status_for("v1")["state"] == "active"
    assert probe.start().success
    probe.wait_commands(5, lambda c: c.source == "policy", "policy commands", 60.0)

    # The operator takes over and hands back.
    probe.event_pub.publish(EpisodeEvent(event=EpisodeEvent.INTERVENTION_START, task=TASK, source="teleop"))
    taken = probe.wait_commands(3, lambda c: c.intervention, "commands during the intervention")
    assert all(c.source in ("teleop", "hold") for c in taken)
    probe.event_pub.publish(EpisodeEvent(event=EpisodeEvent.INTERVENTION_END, task=TASK, source="policy"))
    probe.wait_commands(3, lambda c: c.source == "policy" and not c.intervention, "policy commands after hand-back")

    good = sine_chunks(amplitude=0.2)
    _, good_sha = save_replay(trusted / "v2", good, "v2")
    verdict = probe.update("v2", str(trusted / "v2"), "0" * 64)
    assert not verdict["accepted"] and "sha256 mismatch" in verdict["reason"]

    # Only versions signed by a trusted key: a well-formed checkpoint under the trusted root is not enough.
    unsigned, unsigned_sha = save_replay(trusted / "v7", good, "v7", signer=None)
    verdict = probe.update("v7", unsigned.as_uri(), unsigned_sha)
    assert not verdict["accepted"] and "is not signed" in verdict["reason"], verdict["reason"]
    rogue, rogue_sha = save_replay(trusted / "v8", good, "v8", signer="rogue")
    verdict = probe.update("v8", rogue.as_uri(), rogue_sha)
    assert not verdict["accepted"] and "not a trusted key" in verdict["reason"], verdict["reason"]

    corrupt, _ = save_replay(trusted / "v3", good, "v3")
    (corrupt / WEIGHTS_NAME).write_bytes(b"\x00garbage, not safetensors" * 10)
    from vla_mbpo_ros.core.policy.signing import sign_checkpoint

    sign_checkpoint(corrupt, "v3", signing_key())  # signed as it is: a trusted trainer's broken checkpoint
    verdict = probe.update("v3", f"file://{corrupt}", checkpoint_sha256(corrupt))
    assert not verdict["accepted"] and verdict["reason"].startswith("load failed"), verdict["reason"]

    outside, outside_sha = save_replay(tmp_path / "untrusted" / "v4", good, "v4")
    verdict = probe.update("v4", str(outside), outside_sha)
    assert not verdict["accepted"] and "not under a trusted checkpoint root" in verdict["reason"]

    blind, blind_sha = save_replay(trusted / "v5", good, "v5", views=("left_wrist",))
    verdict = probe.update("v5", str(blind), blind_sha)
    assert not verdict["accepted"] and "lacks views ['left_wrist']" in verdict["reason"], verdict["reason"]

    _, good_sha = save_replay(trusted / "v6", good, "v6")
    verdict = probe.update("v6", str(trusted / "v6"), good_sha)
    assert verdict["accepted"] and verdict["state"] == "pending"
    # The old policy keeps running until the episode boundary.
    still_old = probe.wait_commands(10, lambda c: c.source == "policy", "policy commands after the updates")
    assert all(c.policy_version == "v1" for c in still_old)
    assert probe.status[-1].state == SafetyStatus.STATE_ACTIVE and probe.status[-1].policy_version == "v1"

    assert probe.end().success
    probe.wait_status(lambda s: s.policy_version == "v6" and s.state == SafetyStatus.STATE_IDLE, "v6 swapped in")
    assert probe.policy_status_for("v6")["state"] == "active"
    assert probe.start().success
    probe.wait_commands(5, lambda c: c.source == "policy" and c.policy_version == "v6", "commands from v6", 60.0)


def test_heartbeat_loss_a_throwing_policy_and_stale_observations_latch(ros, robot, launch_node, tmp_path):
    from std_msgs.msg import Header
    from vla_mbpo_ros.msg import SafetyStatus

    from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

    robot_yaml = yaml.safe_load((REPO / "config" / "robots" / "so101.yaml").read_text())
    robot_yaml["safety"]["require_heartbeat"] = True
    safety_path = tmp_path / "robot.yaml"
    safety_path.write_text(yaml.safe_dump(robot_yaml))
    # A checkpoint that expects a view this robot does not have: every chunk request throws.
    checkpoint, _ = save_replay(tmp_path / "trusted" / "blind", sine_chunks(), "blind", views=("head", "left_wrist"))
    # Observations for this executor come from its own sync node, which the test stops later.
    sync = launch_node(
        "vla_mbpo_ros.nodes.observation_sync",
        "observation_sync_b",
        param_files=[REPO / "config" / "observation_sync.yaml"],
        params={"output_topic": "/test/observation"},
    )
    start_executor(launch_node, tmp_path, checkpoint, safety_config=str(safety_path), observation_topic="/test/observation")
    probe = Probe(ros)
    heartbeat_pub = ros.publisher(Header, "/vla_mbpo/heartbeat", SENSOR_QOS)
    beating = threading.Event()
    stop = threading.Event()

    def beat():
        while not stop.wait(0.05):
            if beating.is_set():
                heartbeat_pub.publish(Header(frame_id="test"))

    threading.Thread(target=beat, daemon=True).start()
    try:
        refused = probe.start("teleop", retry=False)
        assert not refused.success and "heartbeat" in refused.message
        beating.set()
        assert probe.start("teleop").success
        probe.wait_commands(5, what="commands in the teleop episode")
        beating.clear()
        latched = probe.wait_status(lambda s: s.state == SafetyStatus.STATE_LATCHED, "latched on heartbeat loss")
        assert latched.latch_reason.startswith("heartbeat"), latched.latch_reason
        assert all(c.source == "hold" for c in probe.wait_commands(3, what="holds"))

        beating.set()
        probe.end()
        assert probe.reset(retry=True).success
        assert probe.start("policy").success
        latched = probe.wait_status(lambda s: s.state == SafetyStatus.STATE_LATCHED and s.latches == 2, "latched on the throwing policy")
        assert latched.latch_reason.startswith("inference_error: ValueError"), latched.latch_reason
        assert "left_wrist" in latched.latch_reason
        assert not any(c.source == "policy" for c in probe.executed)

        probe.end()
        assert probe.reset(retry=True).success
        assert probe.start("teleop").success
        sync.stop()  # the observation stream stops, as it does when a camera stops
        latched = probe.wait_status(lambda s: s.state == SafetyStatus.STATE_LATCHED and s.latches == 3, "latched on stale observations")
        assert latched.latch_reason.startswith("stale_observation"), latched.latch_reason
        assert all(c.source == "hold" for c in probe.wait_commands(3, what="holds"))
    finally:
        stop.set()


def test_teleop_profile_gates_operator_targets_on_the_position_interface(ros, robot, launch_node, tmp_path):
    from sensor_msgs.msg import JointState

    start_executor(
        launch_node,
        tmp_path,
        param_files=[REPO / "config" / "policy_executor_teleop.yaml"],
        command_interface="position",
    )
    probe = Probe(ros)
    refused = probe.start("policy", retry=False)
    assert not refused.success and "no policy" in refused.message
    assert probe.start("teleop").success
    from ros_harness import wait_until

    wait_until(lambda: probe.joints, 30.0, "joint states")
    start_pan = probe.joints[-1].position[0]
    target = start_pan - 0.3 if start_pan > 0 else start_pan + 0.3
    names = ["gripper", "wrist_roll", "wrist_flex", "elbow_flex", "shoulder_lift", "shoulder_pan"]  # any order
    stop = threading.Event()

    def operator():
        while not stop.wait(PERIOD):
            probe.teleop_pub.publish(JointState(name=names, position=[0.0, 0.0, 0.0, 0.0, 0.0, target]))

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        driven = probe.wait_commands(20, lambda c: c.source == "teleop", "teleop commands", 60.0)
        pans = [c.positions[0] for c in driven]
        assert np.all(np.abs(np.diff(pans)) <= 0.05 + 1e-9), "operator targets pass the same step limit"
        assert any(c.clamped for c in driven)
        assert abs(pans[-1] - target) < abs(pans[0] - target), "commands move towards the operator's target"
        wait_until(lambda: abs(probe.joints[-1].position[0] - target) < 0.05, 30.0, "the arm following the operator")
    finally:
        stop.set()
        thread.join()
    holds = probe.wait_commands(5, lambda c: c.source == "hold", "holds once the operator goes quiet")
    assert all(not c.intervention for c in holds)
    assert probe.status[-1].state == probe.status[-1].STATE_ACTIVE, "a quiet operator holds, it does not latch"
