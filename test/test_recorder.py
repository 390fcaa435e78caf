"""The recorder node as a real process: sim demonstrations end to end, kill -9, discard, refusals.

The end-to-end test runs the whole teleop graph (sim with the scripted expert, observation sync,
policy executor without a policy, recorder, episode manager) and checks the dataset
with LeRobot's own reader against what was published. The other tests play the sim + executor
themselves (the probe publishes MultiViewObservation and ExecutedCommand) so every value recorded
is known.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
H, W = 48, 64
FPS = 10
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
RECORDER = "vla_mbpo_ros.nodes.recorder"
TASK = "pick up the cube"


def recorder_params(output_dir: Path, **overrides) -> dict:
    return {"output_dir": str(output_dir), "dataset_name": "demos", "image_size": [H, W], "fps": FPS,
            "min_free_disk_mb": 0.0, **overrides}


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/vla_mbpo", root=root, video_backend="pyav")


def columns(dataset) -> dict[str, np.ndarray]:
    """All rows as numpy arrays, read as stored (LeRobot's torch transform makes float64 float32)."""
    table = dataset.hf_dataset.with_format("arrow")[:]
    return {name: np.array(column.to_pylist()) for name, column in zip(table.column_names, table.columns)}


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- end to end
def test_records_scripted_expert_demonstrations_through_the_real_graph(ros, launch_node, tmp_path):
    from ros_harness import wait_until
    from vla_mbpo_ros.msg import EpisodeEvent, ExecutedCommand

    from vla_mbpo_ros.conversions import stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import RELIABLE_QOS

    commands = ros.subscribe(ExecutedCommand, "/vla_mbpo/executed_command", RELIABLE_QOS)
    events = ros.subscribe(EpisodeEvent, "/vla_mbpo/episode_event", RELIABLE_QOS)
    launch_node("vla_mbpo_ros.nodes.sim_robot", "sim_robot",
                params={"sim.image_size": [H, W], "sim.camera_fps": float(FPS), "sim.control_fps": 30.0, "expert_teleop": True})
    launch_node("vla_mbpo_ros.nodes.observation_sync", "observation_sync", param_files=[REPO / "config" / "observation_sync.yaml"])
    # The robot's limits, with the stale-observation watchdog relaxed: on this shared 2-core CPU
    # the sim stalls for a few hundred ms at times, which latches the e-stop at the real 0.25 s.
    robot = yaml.safe_load((REPO / "config" / "robots" / "so101.yaml").read_text())
    robot["safety"]["stale_observation_s"] = 1.5
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(robot))
    launch_node("vla_mbpo_ros.nodes.policy_executor", "policy_executor",
                param_files=[REPO / "config" / "policy_executor.yaml", REPO / "config" / "policy_executor_teleop.yaml"],
                params={"safety_config": str(tmp_path / "robot.yaml")})
    recorder = launch_node(RECORDER, "recorder", params=recorder_params(tmp_path))
    ros.wait_for_publishers("/vla_mbpo/executed_command")
    manager = launch_node(
        "vla_mbpo_ros.nodes.episode_manager", "episode_manager",
        param_files=[REPO / "config" / "episode_manager.yaml", REPO / "config" / "episode_manager_teleop.yaml"],
        params={"episodes_per_iteration": 3, "max_episode_s": 8.0, "settle_after_success_s": 0.5, "start_delay_s": 0.5,
                "output_dir": str(tmp_path)},
    )
    wait_until(lambda: not manager.alive(), 150.0, "the episode manager to finish 3 episodes")
    assert manager.process.returncode == 0, manager.output()[-3000:] + recorder.output()[-3000:]
    assert recorder.alive()

    labels = [e for e in list(events) if e.event in (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE)]
    assert [e.episode_index for e in labels] == [0, 1, 2]
    assert [e.event for e in list(events) if e.event == EpisodeEvent.START] == [EpisodeEvent.START] * 3

    dataset = load(tmp_path / "demos")
    assert dataset.num_episodes == 3
    rows_of = columns(dataset)
    sent = {round(stamp_to_seconds(c.header.stamp), 6): c for c in list(commands)}
    for episode, label in enumerate(labels):
        rows = np.flatnonzero(rows_of["episode_index"] == episode)
        assert len(rows) >= 2 * FPS, f"episode {episode}: only {len(rows)} frames"
        np.testing.assert_allclose(rows_of["timestamp"][rows], np.arange(len(rows)) / FPS, atol=1e-4)
        obs_stamps = rows_of["obs_stamp"][rows]
        # Frames on the dataset's period grid: one period apart, or a whole number of periods
        # where the loaded machine dropped an observation (the recorder counts those as gaps).
        periods = np.diff(obs_stamps) * FPS
        assert np.all(periods > 0.9) and np.allclose(periods, np.round(periods), atol=0.1), periods
        assert np.mean(np.round(periods) == 1) > 0.5, periods
        assert np.all(rows_of["command_stamp"][rows] >= obs_stamps)
        assert set(rows_of["success"][rows]) == {1 if label.event == EpisodeEvent.SUCCESS else 0}
        assert set(rows_of["episode_source"][rows]) == {"scripted_expert"}
        # Every action is exactly a command the executor sent (matched by its stamp).
        for row in rows:
            command = sent[round(float(rows_of["command_stamp"][row]), 6)]
            assert list(command.joint_names) == JOINTS
            np.testing.assert_allclose(rows_of["action"][row], np.float32(command.positions), rtol=0, atol=1e-6)
            assert rows_of["command_source"][row] == command.source
    assert set(rows_of["command_source"]) <= {"teleop", "hold"} and "teleop" in set(rows_of["command_source"])
    first = dataset[0]
    for view in ("head", "wrist"):
        frame = first[f"observation.images.{view}"]
        assert tuple(frame.shape) == (3, H, W) and float(frame.std()) > 0.01, view
    assert first["task"] == TASK


def test_raw_mcap_bags_of_the_real_graph_convert_back_to_the_same_dataset(ros, launch_node, tmp_path):
    """record_raw writes each saved episode's raw topics to MCAP; converting the bags with the
    recorder's own pipeline gives the features, labels and frames of the dataset recorded live."""
    from ros_harness import wait_until

    from vla_mbpo_ros.bag import bag_to_dataset, read_bag
    from vla_mbpo_ros.core.data.recording import RecordingConfig

    launch_node("vla_mbpo_ros.nodes.sim_robot", "sim_robot",
                params={"sim.image_size": [H, W], "sim.camera_fps": float(FPS), "sim.control_fps": 30.0, "expert_teleop": True})
    launch_node("vla_mbpo_ros.nodes.observation_sync", "observation_sync", param_files=[REPO / "config" / "observation_sync.yaml"])
    launch_node("vla_mbpo_ros.nodes.policy_executor", "policy_executor",
                param_files=[REPO / "config" / "policy_executor.yaml", REPO / "config" / "policy_executor_teleop.yaml"])
    # PNG frames, not video: lossless, so the two datasets can be compared pixel for pixel.
    recorder = launch_node(RECORDER, "recorder", param_files=[REPO / "config" / "recorder.yaml"],
                           params=recorder_params(tmp_path, record_raw=True, use_videos=False))
    ros.wait_for_publishers("/vla_mbpo/executed_command")
    manager = launch_node(
        "vla_mbpo_ros.nodes.episode_manager", "episode_manager",
        param_files=[REPO / "config" / "episode_manager.yaml", REPO / "config" / "episode_manager_teleop.yaml"],
        params={"episodes_per_iteration": 2, "max_episode_s": 8.0, "start_delay_s": 0.5, "output_dir": str(tmp_path)},
    )
    wait_until(lambda: not manager.alive(), 120.0, "the episode manager to finish 2 episodes")
    assert manager.process.returncode == 0, manager.output()[-3000:] + recorder.output()[-3000:]
    bags = sorted((tmp_path / "demos_raw").iterdir())
    assert [b.name for b in bags] == ["episode_000000.mcap", "episode_000001.mcap"]
    topics = {m.topic for m in read_bag(bags[0])}
    assert topics == {"/cameras/head/image_raw", "/cameras/wrist/image_raw", "/joint_states",
                      "/vla_mbpo/executed_command", "/vla_mbpo/episode_event"}

    config = RecordingConfig(fps=FPS, image_size=(H, W), use_videos=False, min_free_disk_mb=0.0)
    assert bag_to_dataset(bags, tmp_path / "converted", config, config.views) == [0, 1]
    live, converted = load(tmp_path / "demos"), load(tmp_path / "converted")
    assert converted.features == live.features
    a, b = columns(live), columns(converted)
    for episode in (0, 1):
        rows_a = np.flatnonzero(a["episode_index"] == episode)
        rows_b = np.flatnonzero(b["episode_index"] == episode)
        assert set(b["success"][rows_b]) == set(a["success"][rows_a])
        assert set(b["episode_source"][rows_b]) == {"scripted_expert"}
        stamps_b = {round(t, 6): row for row, t in zip(rows_b, b["obs_stamp"][rows_b])}
        common = [(row, stamps_b[round(t, 6)]) for row, t in zip(rows_a, a["obs_stamp"][rows_a]) if round(t, 6) in stamps_b]
        # The converter re-synchronizes the raw streams in log order; the live sync node saw them in
        # arrival order, so a frame at an episode's edges may differ. Every other frame is identical.
        assert len(common) >= 0.9 * len(rows_a), (len(common), len(rows_a), len(rows_b))
        for row_a, row_b in common:
            np.testing.assert_array_equal(b["action"][row_b], a["action"][row_a])
            np.testing.assert_array_equal(b["observation.state"][row_b], a["observation.state"][row_a])
            assert b["command_stamp"][row_b] == a["command_stamp"][row_a]
            for view in ("head", "wrist"):
                key = f"observation.images.{view}"
                np.testing.assert_array_equal(converted[int(row_b)][key].numpy(), live[int(row_a)][key].numpy())


# ----------------------------------------------------------------------- probe-driven recording
class FakeRobot:
    """The probe as sim + executor: publishes observations and the commands 'sent' after them."""

    def __init__(self, ros):
        from vla_mbpo_ros.msg import ExecutedCommand, MultiViewObservation

        from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS, RELIABLE_QOS

        self.ros = ros
        self.obs_pub = ros.publisher(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
        self.cmd_pub = ros.publisher(ExecutedCommand, "/vla_mbpo/executed_command", RELIABLE_QOS)
        self.t = 0.0
        self.sequence = 0

    def wait_for_recorder(self, name: str = "recorder") -> None:
        """Until the recorder node ``name`` offers its services and subscriptions, and this robot's
        writers are matched to its readers and to no other. Graph counts are not enough after a kill -9:
        the dead node's endpoints stay announced, and its readers matched (never acknowledging a sample),
        until its participant's lease runs out (Fast DDS: 20 s)."""
        from ros_harness import wait_until

        node = self.ros.node

        def ready() -> bool:
            if name not in self.ros.node_names():
                return False
            services = {n for n, _ in node.get_service_names_and_types_by_node(name, "/")}
            topics = {n for n, _ in node.get_subscriber_names_and_types_by_node(name, "/")}
            return "/vla_mbpo/recorder/start_episode" in services and {"/vla_mbpo/observation", "/vla_mbpo/executed_command"} <= topics

        wait_until(ready, 120.0, f"{name} to offer its services")
        publishers = (self.obs_pub, self.cmd_pub)
        wait_until(lambda: all(p.get_subscription_count() == 1 for p in publishers), 60.0,
                   f"observations and commands matched to {name} alone")

    def step(self, value: float, intervention: bool = False, age: float = 0.0) -> None:
        """One observation (images and state filled with ``value``) and, 10 ms later, its command,
        stamped on the clock at the dataset rate; ``age`` stamps both that far in the past."""
        import time

        from rclpy.duration import Duration
        from sensor_msgs.msg import JointState
        from vla_mbpo_ros.msg import ExecutedCommand, MultiViewObservation

        from vla_mbpo_ros.conversions import numpy_to_image, seconds_to_stamp

        time.sleep(max(0.0, self.t + 1 / FPS - time.time()))  # the robot's pace (real time at the dataset rate): the input
        self.t = time.time()
        stamp = seconds_to_stamp(self.t - age)
        image = np.full((H, W, 3), int(value * 10) % 256, np.uint8)
        obs = MultiViewObservation(sequence=self.sequence, view_names=["head", "wrist"],
                                   images=[numpy_to_image(image, "rgb8", stamp), numpy_to_image(255 - image, "rgb8", stamp)],
                                   view_offsets=[0.0, 0.0])
        obs.header.stamp = stamp
        obs.joint_state = JointState(name=JOINTS, position=[value] * 6)
        command = ExecutedCommand(joint_names=list(reversed(JOINTS)), positions=[value + 0.5 + j for j in range(6)],
                                  source="teleop" if intervention else "policy", intervention=intervention, policy_version="v7")
        command.header.stamp = seconds_to_stamp(self.t - age + 0.01)
        self.obs_pub.publish(obs)
        self.cmd_pub.publish(command)
        # One frame in flight at a time: on this shared 2-core VM, DDS delivery stalled for 0.1-0.6 s now and
        # then, and the next samples replaced unacknowledged ones in the history (lost frames).
        for publisher in (self.obs_pub, self.cmd_pub):
            assert publisher.wait_for_all_acked(Duration(seconds=10.0)), "the recorder did not acknowledge a sample"
        self.sequence += 1

    def episode(self, recorder_frames: int, start_value: float, outcome: int, source: str = "policy") -> int:
        from vla_mbpo_ros.srv import EndEpisode, StartEpisode

        request = StartEpisode.Request(task=TASK, source=source)
        started = self.ros.call(StartEpisode, "/vla_mbpo/recorder/start_episode", request, timeout=90.0)
        assert started.success, started.message
        for i in range(recorder_frames):
            self.step(start_value + i, intervention=i >= recorder_frames // 2)
        # Stamped 5 s ago (a sim behind real time): commands of that time exist, but pairing by
        # stamp would give it an action the arm got 5 s before this view. Not recorded.
        self.step(-1.0, age=5.0)
        ended = self.ros.call(EndEpisode, "/vla_mbpo/recorder/end_episode", EndEpisode.Request(outcome=outcome), timeout=60.0)
        assert ended.success, ended.message
        return ended.episode_index


def test_kill9_mid_episode_keeps_saved_episodes_and_a_restart_appends_discard_leaves_no_trace(ros, launch_node, tmp_path):
    from ros_harness import wait_until
    from vla_mbpo_ros.srv import EndEpisode, StartEpisode

    robot = FakeRobot(ros)
    # A delivery stall must not make frames stale here (the age check has tests of its own).
    params = recorder_params(tmp_path, max_observation_age=2.0)
    recorder = launch_node(RECORDER, "recorder", params=params)
    robot.wait_for_recorder()
    assert robot.episode(8, 0.0, EndEpisode.Request.OUTCOME_SUCCESS) == 0
    assert robot.episode(6, 100.0, EndEpisode.Request.OUTCOME_FAILURE, source="teleop") == 1
    root = tmp_path / "demos"
    saved = tree(root)

    # Discard leaves no trace.
    assert ros.call(StartEpisode, "/vla_mbpo/recorder/start_episode", StartEpisode.Request(task=TASK, source="policy")).success
    for i in range(5):
        robot.step(50.0 + i)
    wait_until(lambda: (root / "images").exists(), 10.0, "staged frames")
    discarded = ros.call(EndEpisode, "/vla_mbpo/recorder/end_episode", EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_DISCARD))
    assert discarded.success and tree(root) == saved

    # kill -9 in the middle of an episode.
    assert ros.call(StartEpisode, "/vla_mbpo/recorder/start_episode", StartEpisode.Request(task=TASK, source="policy")).success
    for i in range(5):
        robot.step(200.0 + i)
    wait_until(lambda: (root / "images").exists(), 10.0, "staged frames")
    recorder.kill9()
    dataset = load(root)
    assert dataset.num_episodes == 2 and len(dataset) == 14
    assert {k: v for k, v in tree(root).items() if not k.startswith("images/")} == saved

    restarted = launch_node(RECORDER, "recorder_restarted", params=params)
    robot.wait_for_recorder("recorder_restarted")
    assert robot.episode(4, 300.0, EndEpisode.Request.OUTCOME_UNLABELLED) == 2
    dataset = load(root)
    assert dataset.num_episodes == 3 and len(dataset) == 18
    rows_of = columns(dataset)
    np.testing.assert_array_equal(rows_of["success"], [1] * 8 + [0] * 6 + [-1] * 4)
    np.testing.assert_array_equal(rows_of["episode_index"], [0] * 8 + [1] * 6 + [2] * 4)
    # Actions: the command's positions, reordered from its joint order into the dataset's.
    first_values = np.concatenate([np.arange(8), 100 + np.arange(6), 300 + np.arange(4)])
    expected = first_values[:, None] + 0.5 + np.arange(6)[::-1]
    np.testing.assert_allclose(rows_of["action"], expected, rtol=1e-6)
    np.testing.assert_allclose(rows_of["observation.state"][:, 0], first_values, rtol=1e-6)
    np.testing.assert_array_equal(rows_of["intervention"][:8], [False] * 4 + [True] * 4)
    assert list(rows_of["command_source"][:8]) == ["policy"] * 4 + ["teleop"] * 4
    assert set(rows_of["episode_source"][8:14]) == {"teleop"} and set(rows_of["policy_version"]) == {"v7"}
    np.testing.assert_allclose(rows_of["command_stamp"] - rows_of["obs_stamp"], 0.01, atol=1e-6)
    frame = dataset[8 + 6 + 1]["observation.images.head"]  # episode 2, frame 1: value 301
    assert tuple(frame.shape) == (3, H, W)
    assert float(frame.mean() * 255) == pytest.approx(3010 % 256, abs=3)
    assert "rolled back" not in restarted.output()

    # SIGINT with an episode open: it is discarded (never half-saved) and the node exits cleanly.
    assert ros.call(StartEpisode, "/vla_mbpo/recorder/start_episode", StartEpisode.Request(task=TASK, source="policy")).success
    for i in range(3):
        robot.step(400.0 + i)
    assert restarted.stop(signal.SIGINT) == 0
    assert load_info(root)["total_episodes"] == 3 and not (root / "images").exists()


def test_refuses_to_start_with_too_little_free_disk(launch_node, tmp_path):
    from ros_harness import wait_until

    recorder = launch_node(RECORDER, "recorder", params=recorder_params(tmp_path, min_free_disk_mb=1e12))
    wait_until(lambda: not recorder.alive(), 60.0, "the recorder to refuse")
    assert recorder.process.returncode == 2
    assert "min_free_disk_mb" in recorder.output() and "MB free" in recorder.output()
    assert not (tmp_path / "demos").exists()


@pytest.mark.parametrize(("param", "value"), [("image_size", [48]), ("views", ["head", "head"]), ("fps", 0)])
def test_a_bad_feature_config_names_the_field(launch_node, tmp_path, param, value):
    from ros_harness import wait_until

    recorder = launch_node(RECORDER, "recorder", params=recorder_params(tmp_path, **{param: value}))
    wait_until(lambda: not recorder.alive(), 60.0, "the recorder to refuse")
    assert recorder.process.returncode == 2
    assert f"configuration: node recorder: parameter {param}" in recorder.output()


def load_info(root: Path) -> dict:
    import json

    return json.loads((root / "meta" / "info.json").read_text())


def test_cameras_that_publish_compressed_are_recorded_decoded_and_kept_compressed_in_the_raw_bag(ros, launch_node, tmp_path):
    """JPEG cameras (CompressedImage) -> observation_sync (decodes once) -> recorder: the dataset holds
    exactly the decoded pixels, and the raw MCAP holds the compressed messages as they crossed DDS."""
    import threading

    from ros_harness import wait_until
    from sensor_msgs.msg import CompressedImage, JointState
    from vla_mbpo_ros.msg import ExecutedCommand, MultiViewObservation
    from vla_mbpo_ros.srv import EndEpisode, StartEpisode

    from vla_mbpo_ros.bag import read_bag
    from vla_mbpo_ros.conversions import compressed_image_to_rgb, stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS, RELIABLE_QOS, SENSOR_QOS

    topics = {view: f"/cameras/{view}/image_raw/compressed" for view in ("head", "wrist")}
    # Free-running cameras at 30 fps (every pair within the sync's slop); the recorder keeps 10 fps.
    for seed, view in enumerate(topics):
        launch_node("vla_mbpo_ros.nodes.test_pattern_camera", f"{view}_camera",
                    params={"view": view, "fps": 30.0, "width": W, "height": H, "transport": "compressed", "seed": seed})
    launch_node("vla_mbpo_ros.nodes.observation_sync", "observation_sync",
                param_files=[REPO / "config" / "observation_sync.yaml"], params={"transports": ["compressed"]})
    raw_topics = [f"{t} sensor_msgs/msg/CompressedImage" for t in topics.values()]
    raw_topics += ["/joint_states sensor_msgs/msg/JointState", "/vla_mbpo/executed_command vla_mbpo_ros/msg/ExecutedCommand"]
    launch_node(RECORDER, "recorder", param_files=[REPO / "config" / "recorder.yaml"],
                params=recorder_params(tmp_path, record_raw=True, use_videos=False, raw_topics=raw_topics))
    frames = {view: ros.subscribe(CompressedImage, topic, SENSOR_QOS) for view, topic in topics.items()}
    observations = ros.subscribe(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
    joint_pub = ros.publisher(JointState, "/joint_states", SENSOR_QOS)
    command_pub = ros.publisher(ExecutedCommand, "/vla_mbpo/executed_command", RELIABLE_QOS)
    stop = threading.Event()

    def arm():  # joint states and the commands "sent", at the control rate
        while not stop.wait(1 / 30):
            stamp = ros.node.get_clock().now().to_msg()
            joints = JointState(name=JOINTS, position=[0.1] * 6)
            joints.header.stamp = stamp
            command = ExecutedCommand(joint_names=JOINTS, positions=[0.2] * 6, source="teleop")
            command.header.stamp = stamp
            joint_pub.publish(joints)
            command_pub.publish(command)

    thread = threading.Thread(target=arm, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(observations) >= 3, 60.0, "observation sets from the compressed cameras")
        started = ros.call(StartEpisode, "/vla_mbpo/recorder/start_episode", StartEpisode.Request(task=TASK, source="teleop"),
                           timeout=90.0)
        assert started.success, started.message
        count = len(observations)
        wait_until(lambda: len(observations) >= count + 45, 30.0, "1.5 s of sets")
        request = EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_SUCCESS)
        ended = ros.call(EndEpisode, "/vla_mbpo/recorder/end_episode", request, timeout=60.0)
        assert ended.success, ended.message
    finally:
        stop.set()
        thread.join()

    dataset = load(tmp_path / "demos")
    rows = columns(dataset)
    assert dataset.num_frames >= 8
    sent = {view: {round(stamp_to_seconds(m.header.stamp), 6): m for m in list(msgs)} for view, msgs in frames.items()}
    checked = 0
    for row, stamp in enumerate(rows["obs_stamp"]):
        head = sent["head"].get(round(float(stamp), 6))
        if head is not None:  # the probe's best-effort copy may miss one
            pixels = dataset[row]["observation.images.head"].numpy()  # CHW float in [0, 1], from lossless PNG
            np.testing.assert_array_equal(np.round(pixels * 255).astype(np.uint8).transpose(1, 2, 0), compressed_image_to_rgb(head))
            checked += 1
    assert checked >= 5
    bag = tmp_path / "demos_raw" / "episode_000000.mcap"
    recorded = [m for m in read_bag(bag) if m.topic in topics.values()]
    assert {m.topic for m in recorded} == set(topics.values())
    assert all(isinstance(m.message, CompressedImage) and m.message.format.endswith("jpeg compressed bgr8") for m in recorded)
    bag_head = {round(stamp_to_seconds(m.message.header.stamp), 6) for m in recorded if m.topic == topics["head"]}
    assert {round(float(s), 6) for s in rows["obs_stamp"]} <= bag_head
