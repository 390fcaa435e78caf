"""LeRobot's own CLIs drive the sim arm through the safety gate (plugins/, the ``lerobot`` profile).

One sim graph (``python -m vla_mbpo_ros.bringup lerobot``: sim + policy executor, the sim's expert
as the operator device) serves the module. ``lerobot-record`` records an episode that
``LeRobotDataset`` loads, ``lerobot-replay`` sends it back through the gate, an e-stop pressed during
``lerobot-teleoperate`` holds the arm while LeRobot keeps sending targets, and the robot keeps
rclpy to a Context of its own. The CLIs are the installed console scripts (``make setup`` installs
the plugins; the command is in docs/lerobot_ros2.md).
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PLUGINS = ("lerobot_robot_vla_mbpo_ros", "lerobot_teleoperator_vla_mbpo_ros")
BIN = Path(sys.executable).parent
REPO_ID = "local/sim_pick"
TASK = "pick up the cube"
FPS = 10
ROBOT = ["--robot.type=vla_mbpo_ros"]
TELEOP = ["--teleop.type=vla_mbpo_ros"]
GATE_INPUT = "/vla_mbpo/teleop/joint_command"


def _require_plugins() -> None:
    missing = [name for name in PLUGINS if not _installed(name)]
    if missing:
        pytest.fail(f"LeRobot plugins not installed: {missing}; `make setup` installs them "
                    f"(pip install --no-deps --no-build-isolation -e plugins/{missing[0]})")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _cli(name: str, *args: str, cwd: Path, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """An installed LeRobot console script, headless, with its output captured."""
    return subprocess.run([str(BIN / name), *args], cwd=cwd, env=_cli_env(cwd), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def _cli_env(cwd: Path) -> dict[str, str]:
    return {**os.environ, "HF_LEROBOT_HOME": str(cwd / "hf_lerobot"), "HF_HUB_OFFLINE": "1"}


class Graph:
    """The sim graph's runner, and the test's probe watching the gate."""

    def __init__(self, tmp: Path) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from ros_harness import RosTestNode, wait_until
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool

        from vla_mbpo_ros.msg import ExecutedCommand, SafetyStatus
        from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS, SENSOR_QOS

        self.tmp = tmp
        self.runner = subprocess.Popen([sys.executable, "-m", "vla_mbpo_ros.bringup", "lerobot", f"output_dir:={tmp / 'out'}"],
                                       stdout=open(tmp / "graph.log", "wb"), stderr=subprocess.STDOUT)
        self.ros = RosTestNode("lerobot_probe")
        deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.executed = self.ros.subscribe(ExecutedCommand, "/vla_mbpo/executed_command", deep)
        self.gate_input = self.ros.subscribe(JointState, GATE_INPUT, deep)
        self.operator = self.ros.subscribe(JointState, "/vla_mbpo/operator/joint_targets", SENSOR_QOS)  # as LeRobot reads it
        self.joints = self.ros.subscribe(JointState, "/joint_states", SENSOR_QOS)
        self.status = self.ros.subscribe(SafetyStatus, "/vla_mbpo/safety_status", QoSProfile(
            depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.estop_pub = self.ros.publisher(Bool, "/vla_mbpo/estop", RELIABLE_QOS)
        wait_until(lambda: self.status and self.joints, 90.0, "the sim's joint states and the executor's status")
        self.ros.wait_for_subscribers("/vla_mbpo/estop", timeout=30.0)

    def reset_sim(self, seed: int) -> None:
        """A new scene: the sim's expert (the operator device) starts reaching for the cube again."""
        from vla_mbpo_ros.srv import ResetSim

        assert self.ros.call(ResetSim, "/sim/reset", ResetSim.Request(seed=seed), timeout=30.0).success

    def state(self) -> int:
        return self.status[-1].state

    def diagnosis(self, since) -> str:
        """For a failure: what the probe saw of the operator device (the sim's expert) since ``since``
        (a stamped message), and the graph's last log lines."""
        operator = [m for m in list(self.operator) if _stamp(m) >= _stamp(since)]
        seen = (f"{len(operator)} operator targets, the last {_stamp(operator[-1]) - _stamp(since):.2f} s after it"
                if operator else "no operator targets")
        log = (self.tmp / "graph.log").read_text(errors="replace").splitlines()
        return f"\nthe probe saw {seen}\ngraph log:\n" + "\n".join(log[-25:])

    def close(self) -> None:
        self.ros.close()
        self.runner.send_signal(signal.SIGINT)
        try:
            self.runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.runner.kill()
            self.runner.wait()


@pytest.fixture(scope="module")
def graph(module_ros_domain, tmp_path_factory):
    _require_plugins()
    graph = Graph(tmp_path_factory.mktemp("lerobot_graph"))
    yield graph
    graph.close()


def _session(graph: Graph, name: str, *args: str, seed: int) -> subprocess.Popen:
    """A LeRobot CLI started in the background; once its robot has started the executor's episode,
    the sim is reset so that the expert (the operator) reaches for the cube while LeRobot drives."""
    from ros_harness import wait_until

    from vla_mbpo_ros.msg import SafetyStatus

    process = subprocess.Popen([str(BIN / name), *args], cwd=graph.tmp, env=_cli_env(graph.tmp), stdin=subprocess.DEVNULL,
                               stdout=open(graph.tmp / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: graph.state() == SafetyStatus.STATE_ACTIVE or process.poll() is not None, 120.0,
                   f"{name}'s robot to start an executor episode")
        if process.poll() is None:
            graph.reset_sim(seed)
    except BaseException:
        process.kill()
        raise
    return process


def _output(graph: Graph, name: str) -> str:
    return (graph.tmp / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def recorded(graph):
    """One episode recorded with lerobot-record, the sim's expert as operator: (exit code, dataset
    root, executed commands and gate input seen during the run)."""
    first_executed, first_input = len(graph.executed), len(graph.gate_input)
    process = _session(graph, "lerobot-record", *ROBOT, *TELEOP, f"--dataset.repo_id={REPO_ID}", "--dataset.root=dataset",
                       f"--dataset.single_task={TASK}", "--dataset.num_episodes=1", "--dataset.episode_time_s=3",
                       "--dataset.reset_time_s=0", f"--dataset.fps={FPS}", "--dataset.push_to_hub=false",
                       "--play_sounds=false", seed=3)
    code = process.wait(timeout=180)
    return code, graph.tmp / "dataset", list(graph.executed)[first_executed:], list(graph.gate_input)[first_input:]


def _tail_of(actions: np.ndarray, sent: np.ndarray) -> bool:
    """``sent`` is the end of ``actions``, unchanged and in order. (The test's probe reads the gate's
    input with a reader of its own, which the robot's new publisher may match seconds after its
    first message on a loaded machine; the gate's reader is matched before connect() returns.)"""
    return 0 < len(sent) <= len(actions) and np.abs(sent - actions[len(actions) - len(sent):]).max() < 1e-6


def _passed_unchanged(actions: np.ndarray, executed: list) -> list[int]:
    """Indices of the actions that left the gate unchanged (not clamped, not held), in the order the
    commands were sent; AssertionError for an unclamped operator command that is no action of these."""
    indices = []
    for command in executed:
        if command.source == "teleop" and not command.clamped and not command.held:
            equal = np.flatnonzero(np.abs(actions - np.asarray(command.positions)).max(axis=1) < 1e-6)
            assert len(equal), f"the gate sent {list(command.positions)}, which LeRobot never sent"
            later = equal[equal >= (indices[-1] if indices else 0)]  # repeated values: the next in order
            indices.append(int(later[0] if len(later) else equal[-1]))
    return indices


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _dataset(root: Path):
    from lerobot.datasets import LeRobotDataset

    return LeRobotDataset(REPO_ID, root=root)


def _column(dataset, key: str) -> np.ndarray:
    """A numeric column of every frame, from the parquet files (no video decoding)."""
    return np.stack(dataset.hf_dataset.with_format("numpy")[key])


def test_lerobot_record_drives_the_arm_through_the_gate_into_a_dataset_lerobot_loads(graph, recorded):
    from ros_harness import wait_until

    from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
    from vla_mbpo_ros.msg import SafetyStatus

    code, root, executed, gate_input = recorded
    assert code == 0, _output(graph, "lerobot-record")[-4000:]
    dataset = _dataset(root)
    assert dataset.num_episodes == 1 and dataset.fps == FPS
    assert 20 <= dataset.num_frames <= 31  # 3 s at 10 fps (a loaded machine loses a few)
    names = [f"{j}.pos" for j in SO101_JOINT_NAMES]
    assert dataset.features["action"]["names"] == names
    assert dataset.features["observation.state"]["names"] == names
    first, last = dataset[0], dataset[dataset.num_frames - 1]  # frames decoded from the MP4s
    for view in ("head", "wrist"):
        key = f"observation.images.{view}"
        assert dataset.features[key]["shape"] == (96, 96, 3)
        frames = np.stack([first[key].numpy(), last[key].numpy()])
        assert frames.shape == (2, 3, 96, 96) and frames.std() > 0.02  # real sim frames, not blank
    assert first["task"] == TASK

    actions, states = _column(dataset, "action"), _column(dataset, "observation.state")
    # The expert reached for the cube: the targets LeRobot recorded moved, and so did the arm.
    assert np.abs(actions[-1] - actions[0]).max() > 0.05
    assert np.abs(states[-1] - states[0]).max() > 0.05
    # What LeRobot recorded is what its robot sent to the gate's input ...
    sent = np.array([m.position for m in gate_input], dtype=np.float32)
    assert _tail_of(actions, sent)
    # ... and what the gate passed on to the arm unclamped was those actions, in order. (The sim reset
    # at the start teleports the arm home: the gate clamps its way back for the first ~10 actions.)
    passed = _passed_unchanged(actions, executed)
    assert passed == sorted(passed) and len(set(passed)) >= len(actions) // 3
    # disconnect() ended the executor episode: the gate holds again.
    wait_until(lambda: graph.state() == SafetyStatus.STATE_IDLE, 10.0, "the executor back to IDLE")


def test_lerobot_replay_sends_the_episode_through_the_gate(graph, recorded):
    from ros_harness import wait_until

    from vla_mbpo_ros.msg import SafetyStatus

    _, root, _, _ = recorded
    actions = _column(_dataset(root), "action").astype(np.float64)
    first_executed, first_input = len(graph.executed), len(graph.gate_input)
    result = _cli("lerobot-replay", *ROBOT, f"--dataset.repo_id={REPO_ID}", f"--dataset.root={root}", "--dataset.episode=0",
                  "--play_sounds=false", cwd=graph.tmp)
    assert result.returncode == 0, result.stdout[-4000:]
    wait_until(lambda: graph.state() == SafetyStatus.STATE_IDLE, 10.0, "the executor back to IDLE")
    sent = np.array([m.position for m in list(graph.gate_input)[first_input:]])
    # The gate's input got the episode's actions, in order, unchanged, and nothing else; the gate
    # passed them on (those it did not clamp) in the same order.
    assert _tail_of(actions, sent)
    executed = [c for c in list(graph.executed)[first_executed:] if c.source == "teleop"]
    passed = _passed_unchanged(actions, executed)
    assert passed == sorted(passed) and len(set(passed)) >= len(actions) // 3
    # The arm was commanded to where the episode ended (the gate's per-cycle step clamp lets it catch up).
    np.testing.assert_allclose(executed[-1].positions, actions[-1], atol=0.02)


def test_an_estop_during_a_lerobot_session_holds_the_arm_while_lerobot_keeps_sending(graph):
    from ros_harness import wait_until
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    from vla_mbpo_ros.msg import SafetyStatus

    first_executed = len(graph.executed)
    session = _session(graph, "lerobot-teleoperate", *ROBOT, *TELEOP, f"--fps={FPS}", "--teleop_time_s=120", seed=4)
    try:
        wait_until(lambda: sum(c.source == "teleop" and not c.held for c in list(graph.executed)[first_executed:]) > 10,
                   90.0, "LeRobot's targets moving the arm through the gate")
        graph.estop_pub.publish(Bool(data=True))
        latch = wait_until(lambda: next((s for s in list(graph.status) if s.state == SafetyStatus.STATE_LATCHED), None),
                           5.0, "the e-stop latch")
        input_at = len(graph.gate_input)

        def targets_after_press() -> np.ndarray:
            return np.array([m.position for m in list(graph.gate_input)[input_at:]])

        def moving_targets() -> bool:
            targets = targets_after_press()
            return len(targets) >= 20 and np.abs(targets - targets[0]).max() > 0.01

        try:
            # The operator (the sim's expert, closed-loop) sends one target while it waits for the held arm to
            # reach it, for up to its 3 s phase timeout; then it moves on, and so do LeRobot's targets.
            wait_until(moving_targets, 15.0, "LeRobot's targets after the press, still moving")
        except AssertionError as err:
            raise AssertionError(f"{err}{graph.diagnosis(latch)}\nlerobot-teleoperate:\n"
                                 f"{_output(graph, 'lerobot-teleoperate')[-3000:]}") from None
        # From the moment the gate saw the press, only holds at one position left it ...
        after = [c for c in list(graph.executed)[first_executed:] if _stamp(c) >= _stamp(latch)]
        assert len(after) > 20 and all(c.source == "hold" and c.held for c in after)
        assert all(np.array_equal(c.positions, after[0].positions) for c in after)
        # ... while LeRobot kept sending targets that still moved (the hold is the gate's, not LeRobot's).
        targets = targets_after_press()
        assert np.abs(targets - targets[0]).max() > 0.01
        # The arm stopped: in the last 0.6 s (it settles onto the hold first), the measured joints stay put.
        joints = list(graph.joints)
        settled = np.array([m.position for m in joints if _stamp(m) >= _stamp(joints[-1]) - 0.6])
        assert len(settled) > 5 and np.abs(settled - settled[0]).max() < 0.005
        assert session.poll() is None  # LeRobot's session goes on; the gate decides
    finally:
        graph.estop_pub.publish(Bool(data=False))
        wait_until(lambda: graph.ros.call(Trigger, "/vla_mbpo/reset_estop", Trigger.Request()).success, 10.0, "reset")
        session.send_signal(signal.SIGINT)  # Ctrl-C: LeRobot's KeyboardInterrupt, the plugins' disconnect
        try:
            code = session.wait(timeout=60)
        except subprocess.TimeoutExpired:
            session.kill()
            raise AssertionError("lerobot-teleoperate did not exit within 60 s of Ctrl-C (SIGINT):\n"
                                 f"{_output(graph, 'lerobot-teleoperate')[-3000:]}") from None
    output = _output(graph, "lerobot-teleoperate")
    assert code == 0, output[-4000:]
    assert "e-stop latched" in output  # the robot told the operator why nothing moves
    # After a reset nothing moves until someone starts an episode: the robot did not restart one.
    assert graph.state() == SafetyStatus.STATE_IDLE


def test_the_robot_keeps_rclpy_to_its_own_context_and_disconnects_idempotently(graph, tmp_path):
    import rclpy
    from lerobot.robots import make_robot_from_config
    from lerobot.teleoperators import make_teleoperator_from_config
    from lerobot_robot_vla_mbpo_ros import GatedRosArmConfig
    from lerobot_teleoperator_vla_mbpo_ros import RosOperatorConfig
    from ros_harness import wait_until

    from vla_mbpo_ros.msg import SafetyStatus

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    default_ok = rclpy.ok()  # False unless an earlier test left rclpy's default context initialised
    robot = make_robot_from_config(GatedRosArmConfig(calibration_dir=tmp_path))
    teleop = make_teleoperator_from_config(RosOperatorConfig(calibration_dir=tmp_path))
    teleop.connect()
    robot.connect()
    try:
        assert robot.is_connected and teleop.is_connected
        contexts = (robot.arm.session.context, teleop.targets.session.context)
        assert rclpy.ok() == default_ok and rclpy.get_default_context() not in contexts  # rclpy's default untouched
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # LeRobot keeps its Ctrl-C
        observation = robot.get_observation()
        assert set(observation) == set(robot.observation_features)
        assert observation["head"].shape == (96, 96, 3) and observation["head"].dtype == np.uint8
        assert set(teleop.get_action()) == set(robot.action_features)
        with pytest.raises(ValueError, match="missing keys"):
            robot.send_action({"gripper.pos": 0.0})
        wait_until(lambda: graph.state() == SafetyStatus.STATE_ACTIVE, 10.0, "the robot's executor episode")
    finally:
        robot.disconnect()
        teleop.disconnect()
    robot.disconnect()  # idempotent
    teleop.disconnect()
    assert not robot.is_connected and not teleop.is_connected
    assert not any(context.ok() for context in contexts) and rclpy.ok() == default_ok
    wait_until(lambda: graph.state() == SafetyStatus.STATE_IDLE, 10.0, "the executor back to IDLE")
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


def test_a_robot_that_cannot_reach_its_topics_says_which_and_leaves_nothing_connected(graph, tmp_path):
    from lerobot.robots import make_robot_from_config
    from lerobot_robot_vla_mbpo_ros import GatedRosArmConfig, RosCameraConfig

    config = GatedRosArmConfig(calibration_dir=tmp_path, connect_timeout_s=2.0,
                               cameras={"top": RosCameraConfig("/cameras/top/image_raw/compressed", 96, 96, 10, "compressed")})
    robot = make_robot_from_config(config)
    with pytest.raises(TimeoutError, match="/cameras/top/image_raw/compressed"):
        robot.connect()
    assert not robot.is_connected
    robot.disconnect()  # a no-op, not an error


def test_a_camera_that_publishes_compressed_reaches_lerobot_decoded(graph, tmp_path, launch_node):
    """A JPEG camera over the network (CompressedImage), next to the sim's raw one: same features, rgb8 frames."""
    from lerobot.robots import make_robot_from_config
    from lerobot_robot_vla_mbpo_ros import GatedRosArmConfig, RosCameraConfig

    launch_node("vla_mbpo_ros.nodes.test_pattern_camera", "top_camera",
                params={"view": "top", "fps": 10.0, "width": 64, "height": 48, "transport": "compressed"})
    cameras = {"head": RosCameraConfig("/cameras/head/image_raw", 96, 96, 10),
               "top": RosCameraConfig("/cameras/top/image_raw/compressed", 48, 64, 10, "compressed")}
    robot = make_robot_from_config(GatedRosArmConfig(calibration_dir=tmp_path, cameras=cameras, manage_episodes=False))
    assert robot.observation_features["top"] == (48, 64, 3)
    robot.connect()
    try:
        observation = robot.get_observation()
    finally:
        robot.disconnect()
    top = observation["top"]
    assert top.shape == (48, 64, 3) and top.dtype == np.uint8
    # The test pattern: red ramps across the row, blue is its complement (JPEG is lossy: loosely).
    assert np.abs(top[..., 0].astype(int) + top[..., 2] - 255).mean() < 12
    assert observation["head"].shape == (96, 96, 3)
