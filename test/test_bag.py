"""Raw episode recording to MCAP (vla_mbpo_ros.bag): crash safety, rosbag2-compatible records, read back."""

from __future__ import annotations

import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState

from vla_mbpo_ros.bag import PARTIAL, EpisodeBag, message_definition, read_bag
from vla_mbpo_ros.conversions import numpy_to_image, seconds_to_stamp


def _joint_state(t: float) -> JointState:
    msg = JointState(name=["a", "b"], position=[t, -t])
    msg.header.stamp = seconds_to_stamp(t)
    return msg


def test_a_saved_episode_reads_back_message_for_message_with_ros2_schemas(tmp_path):
    from mcap.reader import make_reader

    bag = EpisodeBag(tmp_path)
    bag.begin(3)
    image = numpy_to_image(np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), "rgb8", seconds_to_stamp(1.5), "cam")
    bag.write("/cameras/head/image_raw", "sensor_msgs/msg/Image", serialize_message(image), 1_500_000_000)
    for i in range(3):
        bag.write("/joint_states", "sensor_msgs/msg/JointState", serialize_message(_joint_state(i)), 1_000_000_000 * (i + 1))
    path = bag.save()
    assert path.name == "episode_000003.mcap" and not list(tmp_path.glob(f"*{PARTIAL}"))
    messages = list(read_bag(path))
    assert [m.topic for m in messages] == ["/joint_states", "/cameras/head/image_raw", "/joint_states", "/joint_states"]
    assert [list(m.message.position) for m in messages if m.topic == "/joint_states"] == [[0.0, -0.0], [1.0, -1.0], [2.0, -2.0]]
    assert bytes(messages[1].message.data) == bytes(image.data)
    with path.open("rb") as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == "ros2"
        schemas = {s.name: s for s in reader.get_summary().schemas.values()}
        channels = {c.topic: c for c in reader.get_summary().channels.values()}
    assert schemas["sensor_msgs/msg/Image"].encoding == "ros2msg" and channels["/joint_states"].message_encoding == "cdr"
    assert "MSG: std_msgs/msg/Header" in schemas["sensor_msgs/msg/Image"].data.decode()


def test_an_unfinished_episode_leaves_nothing_after_a_restart_and_a_discard_leaves_no_trace(tmp_path):
    saved = EpisodeBag(tmp_path)
    saved.begin(0)
    saved.write("/joint_states", "sensor_msgs/msg/JointState", serialize_message(_joint_state(0.0)), 1)
    saved.save()
    crashed = EpisodeBag(tmp_path)
    crashed.begin(1)
    crashed.write("/joint_states", "sensor_msgs/msg/JointState", serialize_message(_joint_state(0.0)), 1)
    crashed._file.flush()  # killed here: the file is a partial MCAP without its summary
    assert (tmp_path / f"episode_000001{PARTIAL}").exists()
    restarted = EpisodeBag(tmp_path)
    assert restarted.removed_partials == [f"episode_000001{PARTIAL}"]
    restarted.begin(1)
    restarted.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_000000.mcap"]
    assert len(list(read_bag(tmp_path / "episode_000000.mcap"))) == 1


def test_message_definitions_carry_every_nested_type_once():
    text = message_definition("vla_mbpo_ros/msg/MultiViewObservation")
    names = [line.split()[1] for line in text.splitlines() if line.startswith("MSG: ")]
    assert names == ["std_msgs/msg/Header", "sensor_msgs/msg/Image", "sensor_msgs/msg/JointState", "builtin_interfaces/msg/Time"]
    assert text.startswith("# One time-synchronized set") and text.count("=" * 80) == len(names)


def test_this_packages_episode_bags_convert_with_a_mapping_like_any_bag(tmp_path, capsys):
    """An EpisodeBag file (bytes serialized by rmw, as the recorder receives them) through the generic
    converter (``to-lerobot``): ExecutedCommand actions, EpisodeEvent label and task, frame by frame."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vla_mbpo_ros.bag import main
    from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
    from vla_mbpo_ros.msg import EpisodeEvent, ExecutedCommand

    joints = list(SO101_JOINT_NAMES)
    bag = EpisodeBag(tmp_path / "raw")
    bag.begin(0)
    t0 = 1000.0

    def event(kind: int, t: float) -> None:
        msg = EpisodeEvent(event=kind, task="pick up the cube", source="teleop")
        msg.header.stamp = seconds_to_stamp(t)
        bag.write("/vla_mbpo/episode_event", "vla_mbpo_ros/msg/EpisodeEvent", serialize_message(msg), int(t * 1e9))

    event(EpisodeEvent.START, t0 - 0.01)
    for k in range(12):
        t = t0 + k / 10
        image = numpy_to_image(np.full((16, 16, 3), 10 * k, np.uint8), "rgb8", seconds_to_stamp(t), "head")
        bag.write("/cameras/head/image_raw", "sensor_msgs/msg/Image", serialize_message(image), int(t * 1e9))
        state = JointState(name=joints[::-1], position=[k * 0.01 + i for i in range(6)][::-1])
        state.header.stamp = seconds_to_stamp(t)
        bag.write("/joint_states", "sensor_msgs/msg/JointState", serialize_message(state), int(t * 1e9))
        command = ExecutedCommand(joint_names=joints, positions=[k * 0.02 - i for i in range(6)], source="teleop")
        command.header.stamp = seconds_to_stamp(t + 0.01)
        bag.write("/vla_mbpo/executed_command", "vla_mbpo_ros/msg/ExecutedCommand", serialize_message(command), int((t + 0.01) * 1e9))
    event(EpisodeEvent.SUCCESS, t0 + 1.2)
    path = bag.save()
    (tmp_path / "mapping.yaml").write_text(
        "fps: 30\nuse_videos: false\ncameras: {head: {topic: /cameras/head/image_raw}}\n"
        f"state: {{topic: /joint_states, joints: {joints}}}\naction: {{topic: /vla_mbpo/executed_command}}\n"
        "episodes: {topic: /vla_mbpo/episode_event}\n".replace("'", ""))
    assert main(["to-lerobot", str(path), str(tmp_path / "mapping.yaml"), str(tmp_path / "dataset"), "--fps", "10", "--time", "log"]) == 0
    assert "1 episode(s) [0], 12 frames" in capsys.readouterr().out
    dataset = LeRobotDataset("local/rosbag", root=tmp_path / "dataset", video_backend="pyav")
    table = dataset.hf_dataset.with_format("numpy")
    assert dataset.meta.tasks.index.tolist() == ["pick up the cube"] and set(np.asarray(table["success"]).reshape(-1)) == {1}
    for k in range(12):
        np.testing.assert_array_equal(np.asarray(table["observation.state"])[k], np.float32([k * 0.01 + i for i in range(6)]))
        np.testing.assert_array_equal(np.asarray(table["action"])[k], np.float32([k * 0.02 - i for i in range(6)]))
        assert round(float(dataset[k]["observation.images.head"].mean()) * 255) == 10 * k
