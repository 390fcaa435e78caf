"""rosbag2 -> LeRobotDataset v3 and back (core.data.bag_conversion, the ``python -m vla_mbpo_ros.bag`` CLI).

The bags are written the way ``ros2 bag record`` writes them, with ``rosbags``' writer (test/rosbag_recordings.py):
split files, zstd file / message / chunk compression, sqlite3 and mcap, raw and compressed cameras. Each
converted dataset is loaded back with LeRobot's ``LeRobotDataset`` and compared frame by frame with what
was written: joint values exactly (float32 of the float64 written), images exactly (PNG-stored) or within
the codec's tolerance (JPEG cameras, video-stored datasets).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rosbag_recordings import JOINTS, NS, Message, SyntheticRecording, image_of, write_bag  # noqa: E402

from vla_mbpo_ros.bag import main as bag_cli  # noqa: E402
from vla_mbpo_ros.core.data.bag_conversion import Bag, RecentMessages, convert_bag, episode_spans  # noqa: E402
from vla_mbpo_ros.core.data.bag_mapping import load_mapping  # noqa: E402

RENAME = {f"joint_{i}": name for i, name in enumerate(JOINTS)}
START, END, SUCCESS, FAILURE, DISCARD, INTERVENTION_START, INTERVENTION_END = range(7)


def mapping(cameras: dict[str, str], action: dict, **more) -> dict:
    return {"fps": 10, "cameras": {view: {"topic": topic} for view, topic in cameras.items()},
            "state": {"topic": "/joint_states", "joints": list(JOINTS), "rename": RENAME},
            "action": action, "use_videos": False, **more}


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/rosbag", root=root, video_backend="pyav")


def columns(dataset) -> dict[str, np.ndarray]:
    table = dataset.hf_dataset.with_format("numpy")
    return {key: np.asarray(table[key]) for key in ("episode_index", "frame_index", "observation.state", "action",
                                                    "obs_stamp", "command_stamp", "success", "intervention")}


def image(dataset, row: int, view: str) -> np.ndarray:
    """A frame's view as LeRobot returns it, back to (H, W, 3) uint8."""
    return (dataset[row][f"observation.images.{view}"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def assert_video_frame(got: np.ndarray, k: int, view: int, rec: SyntheticRecording) -> None:
    """Within h264's loss (crf 30, 4:2:0 chroma on tiny images), and nearer frame k than its neighbours."""
    errors = {j: np.abs(got.astype(int) - image_of(j, view, rec.height, rec.width)).mean() for j in (k - 1, k, k + 1) if j >= 0}
    assert errors[k] < 10 and min(errors, key=errors.get) == k, (k, errors)


def tasks(dataset) -> list[str]:
    table = dataset.hf_dataset.with_format("numpy")
    index = np.asarray(table["task_index"]).reshape(-1)
    names = {int(i): t for t, i in zip(dataset.meta.tasks.index, dataset.meta.tasks["task_index"])}
    return [names[int(index[np.flatnonzero(np.asarray(table["episode_index"]) == e)[0]])] for e in range(dataset.num_episodes)]


def test_a_split_zstd_mcap_bag_with_raw_and_jpeg_cameras_converts_frame_by_frame(tmp_path):
    rec = SyntheticRecording(camera_types={"head": "rgb8", "wrist": "jpeg"})
    t = rec.frame_times()
    events = [rec.event(START, t[0] - 1000, "pick up the cube"), rec.event(SUCCESS, t[14] + 1000),
              rec.event(START, t[15] - 1000, "put it back"), rec.event(DISCARD, t[19] + 1000),
              rec.event(START, t[20] - 1000, "put it back"), rec.event(FAILURE, t[-1] + 1000),
              rec.event(INTERVENTION_START, t[3] - 1000), rec.event(INTERVENTION_END, t[5] + 1000)]
    bag = write_bag(tmp_path / "bag", rec.messages() + events, "mcap", "message", split_at_ns=t[12])
    assert sorted(p.name for p in bag.iterdir()) == ["bag_0.mcap", "bag_1.mcap", "metadata.yaml"]
    m = load_mapping(mapping({"head": "/head/image_raw", "wrist": "/wrist/image_raw/compressed"},
                             {"topic": "/arm_controller/joint_trajectory", "rename": RENAME},
                             episodes={"topic": "/vla_mbpo/episode_event"}))
    report = convert_bag(bag, m, tmp_path / "dataset")
    assert report.episodes == [0, 1] and report.frames == 25 and report.dropped == {}, report.summary()

    dataset = load(tmp_path / "dataset")
    assert dataset.num_episodes == 2 and len(dataset) == 25
    assert tasks(dataset) == ["pick up the cube", "put it back"]
    c = columns(dataset)
    expected_frames = [*range(0, 15), *range(20, 30)]  # frames 15..19 were discarded
    assert c["episode_index"].tolist() == [0] * 15 + [1] * 10
    assert c["success"].reshape(-1).tolist() == [1] * 15 + [0] * 10
    assert np.flatnonzero(c["intervention"].reshape(-1)).tolist() == [3, 4, 5]  # the operator took over there
    for row, k in enumerate(expected_frames):
        assert abs(c["obs_stamp"][row].item() - t[k] / NS) < 1e-6
        np.testing.assert_array_equal(c["observation.state"][row], rec.state_values(t[k]).astype(np.float32))
        np.testing.assert_array_equal(c["action"][row], rec.command_values(t[k] + rec.command_delay_ns).astype(np.float32))
        np.testing.assert_array_equal(image(dataset, row, "head"), image_of(k, 0, rec.height, rec.width))
        wrist = image(dataset, row, "wrist").astype(int) - image_of(k, 1, rec.height, rec.width)
        assert np.abs(wrist).mean() < 4 and np.abs(wrist).max() < 64, (row, np.abs(wrist).mean())


def test_a_sqlite3_file_compressed_bag_with_array_commands_on_log_time_and_time_ranges(tmp_path):
    rec = SyntheticRecording(camera_types={"head": "bgr8", "wrist": "mono8"}, command="float64")
    bag = write_bag(tmp_path / "bag", rec.messages(), "sqlite3", "file")
    assert sorted(p.name for p in bag.iterdir()) == ["bag.db3.zstd", "metadata.yaml"]
    ranges = [[0.0, 1.45], [1.5, 2.95]]
    m = load_mapping(mapping({"head": "/head/image_raw", "wrist": "/wrist/image_raw"},
                             {"topic": "/forward_position_controller/commands"},
                             episodes={"ranges": ranges}, time="log", task="stack the blocks"))
    report = convert_bag(bag, m, tmp_path / "dataset")
    dataset = load(tmp_path / "dataset")
    c = columns(dataset)
    with Bag(bag) as opened:
        bag_start = opened.start_ns
    logged = [ti + rec.log_latency_ns for ti in rec.frame_times()]  # the frames' log times
    expected = [[k for k, lt in enumerate(logged) if bag_start + round(a * NS) <= lt <= bag_start + round(b * NS)] for a, b in ranges]
    assert report.episodes == [0, 1] and c["episode_index"].tolist() == [0] * len(expected[0]) + [1] * len(expected[1])
    assert c["success"].reshape(-1).tolist() == [-1] * len(c["success"])  # time ranges carry no label
    assert tasks(dataset) == ["stack the blocks"] * 2
    t = rec.frame_times()
    for row, k in enumerate(expected[0] + expected[1]):
        assert abs(c["obs_stamp"][row].item() - logged[k] / NS) < 1e-6
        np.testing.assert_array_equal(c["observation.state"][row], rec.state_values(t[k]).astype(np.float32))
        # Float64MultiArray has no header: its log time is its time, the first at or after the frame's.
        np.testing.assert_array_equal(c["action"][row], rec.command_values(t[k] + rec.command_delay_ns).astype(np.float32))
        np.testing.assert_array_equal(image(dataset, row, "head"), image_of(k, 0, rec.height, rec.width))
        gray = image_of(k, 1, rec.height, rec.width)[..., 0]
        np.testing.assert_array_equal(image(dataset, row, "wrist"), np.repeat(gray[..., None], 3, axis=2))


def test_leader_arm_actions_bool_markers_png_and_compressed_depth_in_a_chunk_compressed_mcap(tmp_path):
    rec = SyntheticRecording(camera_types={"head": "png", "depth": "depth"}, command="leader", seconds=2.0)
    t = rec.frame_times()
    store = rec.store
    # Bool has no header: its log time counts; a frame's log time is its stamp + 3 ms.
    marker = [(t[2], True), (t[8] + 10**7, False), (t[10], True), (t[17] + 10**7, False)]
    markers = [Message("/recording", "std_msgs/msg/Bool", when, store.types["std_msgs/msg/Bool"](data=on)) for when, on in marker]
    bag = write_bag(tmp_path / "bag", rec.messages() + markers, "mcap", "storage")
    m = load_mapping(mapping({"head": "/head/image_raw/compressed", "depth": "/depth/image_raw/compressedDepth"},
                             {"topic": "/leader/joint_states", "rename": RENAME}, time="log",
                             episodes={"topic": "/recording"}, task="pour", use_videos=False))
    with pytest.raises(ValueError, match=r"cameras\.depth: .*carries depth .*depth_range"):
        convert_bag(bag, m, tmp_path / "dataset")
    m.cameras["depth"].depth_range = (0.2, 2.0)
    report = convert_bag(bag, m, tmp_path / "dataset")
    assert report.episodes == [0, 1] and report.dropped == {}, report.summary()
    dataset = load(tmp_path / "dataset")
    c = columns(dataset)
    frames = [*range(2, 9), *range(10, 18)]
    assert len(dataset) == len(frames)
    for row, k in enumerate(frames):
        # The leader's reading at the frame's time: the first at or after it (log times equal there).
        np.testing.assert_array_equal(c["action"][row], rec.command_values(t[k]).astype(np.float32))
        np.testing.assert_array_equal(image(dataset, row, "head"), image_of(k, 0, rec.height, rec.width))
        depth_m = rec.depth_mm(k) / 1000.0
        expected = np.where(depth_m > 0, np.round(np.clip((depth_m - 0.2) / 1.8, 0, 1) * 255), 0)
        assert np.abs(image(dataset, row, "depth")[..., 0] - expected).max() <= 1  # float32 rounding
        assert image(dataset, row, "depth")[0, 0, 0] == 0  # invalid depth


def test_next_state_actions_on_a_whole_bag_stored_as_video(tmp_path):
    rec = SyntheticRecording(camera_types={"head": "rgb8"}, seconds=1.5)
    bag = write_bag(tmp_path / "bag", rec.messages(), "mcap")
    m = load_mapping(mapping({"head": "/head/image_raw"}, {"next_state": True}, task="wave", use_videos=True))
    report = convert_bag(bag, m, tmp_path / "dataset")
    t = rec.frame_times()
    assert report.frames == len(t) - 1 and report.dropped == {"last of its episode (no next state)": 1}
    dataset = load(tmp_path / "dataset")
    c = columns(dataset)
    for row in range(len(dataset)):
        np.testing.assert_array_equal(c["action"][row], rec.state_values(t[row + 1]).astype(np.float32))
        np.testing.assert_array_equal(c["observation.state"][row], rec.state_values(t[row]).astype(np.float32))
        assert_video_frame(image(dataset, row, "head"), row, 0, rec)


def test_a_mapping_that_does_not_fit_the_bag_fails_before_writing_naming_each_field(tmp_path, capsys):
    rec = SyntheticRecording(camera_types={"head": "rgb8"}, seconds=0.5)
    bag = write_bag(tmp_path / "bag", rec.messages(), "mcap")
    bad = mapping({"head": "/head/image_raw", "wrist": "/wrist/image_raw"},
                  {"topic": "/joint_states"}, task="x")
    bad["state"] = {"topic": "/head/image_raw", "joints": list(JOINTS)}
    with pytest.raises(ValueError) as err:
        convert_bag(bag, load_mapping(bad), tmp_path / "out")
    text = str(err.value)
    assert "cameras.wrist.topic: /wrist/image_raw is not in the bag" in text
    assert "state.topic: /head/image_raw is sensor_msgs/msg/Image, expected sensor_msgs/msg/JointState" in text
    assert "/arm_controller/joint_trajectory  trajectory_msgs/msg/JointTrajectory" in text  # the bag's topics listed
    missing = mapping({"head": "/head/image_raw"}, {"topic": "/arm_controller/joint_trajectory"}, task="x")
    with pytest.raises(ValueError, match=r"state\.joints: missing \['shoulder_pan'.*\(got \['passive'"):
        convert_bag(bag, load_mapping({**missing, "state": {"topic": "/joint_states", "joints": list(JOINTS)}}), tmp_path / "out")
    with pytest.raises(ValueError, match=r"action: missing"):
        convert_bag(bag, load_mapping(missing), tmp_path / "out")
    unstamped = rec.messages()
    for m in unstamped:
        if m.topic == "/head/image_raw":  # a driver that leaves its headers empty
            m.message.header.stamp.sec = m.message.header.stamp.nanosec = 0
    zero_bag = write_bag(tmp_path / "unstamped", unstamped, "mcap")
    with pytest.raises(ValueError, match=r"cameras\.head\.topic: /head/image_raw has unstamped headers \(stamp 0\): use time: log"):
        convert_bag(zero_bag, load_mapping(mapping({"head": "/head/image_raw"}, {"next_state": True}, task="x")), tmp_path / "out")
    with pytest.raises(ValueError, match=r"action: expected either topic .* or next_state: true"):
        load_mapping(mapping({"head": "/head/image_raw"}, {"topic": "/a", "next_state": True}))
    with pytest.raises(ValueError, match=r"cameras.head: unknown field\(s\) topik"):
        load_mapping({**missing, "cameras": {"head": {"topik": "/head/image_raw"}}})
    assert not (tmp_path / "out").exists()

    # The CLI says the same on stderr, exit status 2, and lists topics with ``info``.
    (tmp_path / "m.yaml").write_text("fps: 10\ncameras: {head: {topic: /head/image}}\n"
                                     "state: {topic: /joint_states, joints: [a]}\naction: {next_state: true}\ntask: x\n")
    assert bag_cli(["to-lerobot", str(bag), str(tmp_path / "m.yaml"), str(tmp_path / "out")]) == 2
    assert "cameras.head.topic: /head/image is not in the bag" in capsys.readouterr().err
    assert bag_cli(["info", str(bag)]) == 0
    listing = capsys.readouterr().out
    assert "/joint_states                     sensor_msgs/msg/JointState           35" in listing  # 50 Hz for 0.5 s + 5 before and after
    assert "storage: mcap, 1 file(s)" in listing


def test_stream_picks_and_marker_cuts(tmp_path):
    stream = RecentMessages()
    for t in (100, 300, 200, 400):  # out of order, as header stamps can be in log order
        stream.add(t, f"m{t}", "x")
    assert stream.nearest(240, 50)[0] == 200 and stream.nearest(260, 50)[0] == 300 and stream.nearest(250, 10) is None
    assert stream.first_after(201, 100)[0] == 300 and stream.first_after(201, 98) is None and stream.first_after(401, 10**9) is None
    stream.forget_before(350)
    assert stream.times == [300, 400]
    # A marker of any other type (here std_msgs/String) cuts the recording at every message.
    rec = SyntheticRecording(camera_types={"head": "rgb8"}, seconds=0.5)
    String = rec.store.types["std_msgs/msg/String"]
    cuts = [Message("/cut", "std_msgs/msg/String", rec.start_ns + 2 * NS // 10, String(data="next"))]
    bag = write_bag(tmp_path / "bag", rec.messages() + cuts, "mcap")
    m = load_mapping(mapping({"head": "/head/image_raw"}, {"next_state": True}, task="x", episodes={"topic": "/cut"}))
    with Bag(bag) as opened:
        spans = episode_spans(m, opened)
    assert [(s.start_ns, s.end_ns) for s in spans] == [(0, rec.start_ns + 2 * NS // 10 - 1), (rec.start_ns + 2 * NS // 10, 2**63 - 2)]


def test_round_trip_dataset_to_mcap_bag_and_back_through_the_cli(tmp_path, capsys):
    """dataset -> ``to-bag`` (MCAP with embedded definitions, decoded here by Foxglove's own ros2msg
    decoder from the schemas alone) -> ``to-lerobot`` with the mapping it wrote -> the same dataset."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    rec = SyntheticRecording(camera_types={"head": "rgb8", "wrist": "jpeg"}, seconds=2.0)
    t = rec.frame_times()
    events = [rec.event(START, t[0] - 1000, "pick up the cube"), rec.event(SUCCESS, t[9] + 1000),
              rec.event(START, t[10] - 1000, "put it back"), rec.event(FAILURE, t[-1] + 1000)]
    bag = write_bag(tmp_path / "recorded", rec.messages() + events, "mcap", "storage")
    m = mapping({"head": "/head/image_raw", "wrist": "/wrist/image_raw/compressed"},
                {"topic": "/arm_controller/joint_trajectory", "rename": RENAME},
                episodes={"topic": "/vla_mbpo/episode_event"}, use_videos=True)
    convert_bag(bag, load_mapping(m), tmp_path / "first")

    assert bag_cli(["to-bag", str(tmp_path / "first"), str(tmp_path / "exported")]) == 0
    exported = tmp_path / "exported"
    (mcap_file,) = exported.glob("*.mcap")
    decoded: dict[str, list] = {}
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        schemas = {s.name: s for s in reader.get_summary().schemas.values()}
        assert {s.encoding for s in schemas.values()} == {"ros2msg"}
        definition = schemas["vla_mbpo_ros/msg/EpisodeEvent"].data.decode()
        assert "string task" in definition and "MSG: std_msgs/Header" in definition  # nested types embedded too
        for _, channel, _, message in reader.iter_decoded_messages():
            decoded.setdefault(channel.topic, []).append(message)
    assert sorted(decoded) == ["/cameras/head/image_raw", "/cameras/wrist/image_raw", "/joint_states", "/lerobot/action",
                               "/vla_mbpo/episode_event"]
    assert [e.event for e in decoded["/vla_mbpo/episode_event"]] == [START, SUCCESS, START, FAILURE]
    assert [e.task for e in decoded["/vla_mbpo/episode_event"][::2]] == ["pick up the cube", "put it back"]
    np.testing.assert_array_equal(decoded["/joint_states"][3].position, rec.state_values(t[3]).astype(np.float32))
    assert list(decoded["/lerobot/action"][0].joint_names) == list(JOINTS)

    first = load(tmp_path / "first")
    for name, extra in (("back", []), ("back_compressed", ["--episodes", "0", "1", "--compressed", "--storage", "sqlite3"])):
        exported = tmp_path / f"exported_{name}"
        if extra:
            assert bag_cli(["to-bag", str(tmp_path / "first"), str(exported), *extra]) == 0
            assert [p.suffix for p in exported.iterdir() if p.name != "metadata.yaml"] == [".db3"]
        else:
            exported = tmp_path / "exported"
        mapping_file = exported.with_name(exported.name + ".mapping.yaml")
        assert bag_cli(["to-lerobot", str(exported), str(mapping_file), str(tmp_path / name)]) == 0
        assert "2 episode(s) [0, 1], 20 frames" in capsys.readouterr().out
        back = load(tmp_path / name)
        a, b = columns(first), columns(back)
        assert tasks(back) == tasks(first) and back.num_episodes == 2 and len(back) == len(first) == 20
        for key in ("episode_index", "frame_index", "observation.state", "action", "success"):
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
        np.testing.assert_allclose(b["obs_stamp"], a["obs_stamp"], rtol=0, atol=1e-6)
        for row in range(len(back)):
            for view in ("head", "wrist"):  # decoded once more and re-encoded (video, and jpeg for --compressed)
                error = np.abs(image(back, row, view).astype(int) - image(first, row, view)).mean()
                assert error < 6, (name, row, view, error)


def test_messages_padded_after_their_end_decode_as_ros_decodes_them():
    """rmw_fastrtps serializes a JointState with 8 zero bytes after its end; rosbags alone refuses that."""
    from rosbags.serde import SerdeError

    from vla_mbpo_ros.core.data.bag_conversion import deserialize

    rec = SyntheticRecording()
    message = rec.joint_state(rec.start_ns, rec.state_values(rec.start_ns))
    raw = bytes(rec.store.serialize_cdr(message, "sensor_msgs/msg/JointState")) + bytes(8)
    with pytest.raises(SerdeError, match="size mismatch"):
        rec.store.deserialize_cdr(raw, "sensor_msgs/msg/JointState")
    decoded = deserialize(rec.store, raw, "sensor_msgs/msg/JointState")
    assert list(decoded.name) == list(message.name)
    np.testing.assert_array_equal(decoded.position, message.position)


def test_float_compressed_depth_decodes_its_inverse_depth_quantization():
    """compressedDepth of 32FC1 images stores A / depth + B as 16-bit PNG (0: no depth) after a 12-byte header."""
    import cv2

    from vla_mbpo_ros.core.data.bag_conversion import image_to_rgb

    depth = np.array([[1.5, 1.0], [2.0, 0.0]], dtype=np.float32)
    a, b = 300.0, 10.0
    quantized = np.where(depth > 0, a / np.where(depth > 0, depth, 1) + b, 0).round().astype(np.uint16)
    ok, png = cv2.imencode(".png", quantized)
    header = np.array([0], "<i4").tobytes() + np.array([a, b], "<f4").tobytes()
    store = SyntheticRecording().store
    message = store.types["sensor_msgs/msg/CompressedImage"](
        header=store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id=""),
        format="32FC1; compressedDepth png", data=np.frombuffer(header + png.tobytes(), np.uint8))
    gray = image_to_rgb(message, "sensor_msgs/msg/CompressedImage", (1.0, 2.0))
    assert gray.shape == (2, 2, 3) and gray[..., 0].tolist() == [[128, 0], [255, 0]]
