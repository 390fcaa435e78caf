"""The sync node fed by real publisher processes: skewed stamps, one stream stopping."""

from __future__ import annotations

import threading

import numpy as np

import pytest

pytestmark = pytest.mark.ros

SLOP = 0.02


def _publish_joint_states(ros, stop: threading.Event, rate: float = 50.0) -> threading.Thread:
    from sensor_msgs.msg import JointState

    from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

    pub = ros.publisher(JointState, "/joint_states", SENSOR_QOS)

    def loop():
        while not stop.wait(1.0 / rate):
            msg = JointState(name=["a"], position=[0.0])
            msg.header.stamp = ros.node.get_clock().now().to_msg()
            pub.publish(msg)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_sets_are_within_slop_and_a_stopped_stream_is_flagged(ros, launch_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_harness import wait_until
    from vla_mbpo_ros.msg import MultiViewObservation

    from vla_mbpo_ros.conversions import stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS

    camera = {"fps": 30.0, "width": 64, "height": 48}
    launch_node("vla_mbpo_ros.nodes.test_pattern_camera", "head_cam", params={**camera, "view": "head", "jitter": 0.003})
    # The wrist camera's clock is 12 ms ahead (within the slop) with jitter; it hangs 10 s after the sync subscribed.
    launch_node(
        "vla_mbpo_ros.nodes.test_pattern_camera",
        "wrist_cam",
        params={**camera, "view": "wrist", "stamp_offset": 0.012, "jitter": 0.003, "stop_after": 10.0, "seed": 1},
    )
    launch_node("vla_mbpo_ros.nodes.observation_sync", "observation_sync", params={"slop": SLOP, "stale_after": 0.5})
    observations = ros.subscribe(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
    diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics")
    stop = threading.Event()
    _publish_joint_states(ros, stop)
    try:
        try:
            wait_until(lambda: len(observations) >= 10, 60.0, "10 synchronized observations")
        except AssertionError as err:
            last = [{v.key: v.value for v in st.values} for d in diagnostics[-1:] for st in d.status]
            raise AssertionError(f"{err}; got {len(observations)}; the sync node's last report: {last}") from None
        stale = wait_until(
            lambda: [s for d in diagnostics for s in d.status if "stale: wrist" in s.message], 60.0, "wrist flagged stale"
        )
        count_when_stale = len(observations)
        wait_until(lambda: len(diagnostics) >= 3 and diagnostics[-1].status[0].message.startswith("stale"), 10.0, "more reports")
    finally:
        stop.set()
    assert stale[0].level == stale[0].WARN
    assert len(observations) == count_when_stale, "no sets may be emitted while the wrist stream is stopped"
    for obs in observations:
        assert list(obs.view_names) == ["head", "wrist"]
        assert obs.max_skew <= SLOP + 1e-9
        assert all(abs(o) <= SLOP + 1e-9 for o in [*obs.view_offsets, obs.joint_state_offset])
        assert obs.images[0].header.stamp == obs.header.stamp and obs.images[1].width == 64
    sequences = [o.sequence for o in observations]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    for obs in observations:  # offsets are the members' own stamps relative to the head view
        wrist = stamp_to_seconds(obs.images[1].header.stamp) - stamp_to_seconds(obs.header.stamp)
        joints = stamp_to_seconds(obs.joint_state.header.stamp) - stamp_to_seconds(obs.header.stamp)
        assert obs.view_offsets[1] == pytest.approx(wrist, abs=1e-6)
        assert obs.joint_state_offset == pytest.approx(joints, abs=1e-6)


def test_a_compressed_view_is_decoded_once_into_the_set_with_its_own_pixels(ros, launch_node):
    """Head raw, wrist JPEG over the network: the set carries the wrist's decoded rgb8 pixels, exactly
    those the compressed message holds, matched on the compressed message's own stamp."""
    from ros_harness import wait_until
    from sensor_msgs.msg import CompressedImage
    from vla_mbpo_ros.msg import MultiViewObservation

    from vla_mbpo_ros.conversions import compressed_image_to_rgb, image_to_numpy
    from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS, SENSOR_QOS

    camera = {"fps": 30.0, "width": 64, "height": 48, "jitter": 0.003}
    launch_node("vla_mbpo_ros.nodes.test_pattern_camera", "head_cam", params={**camera, "view": "head"})
    launch_node("vla_mbpo_ros.nodes.test_pattern_camera", "wrist_cam",
                params={**camera, "view": "wrist", "transport": "compressed", "seed": 1})
    launch_node("vla_mbpo_ros.nodes.observation_sync", "observation_sync",
                params={"slop": SLOP, "transports": ["raw", "compressed"]})
    observations = ros.subscribe(MultiViewObservation, "/vla_mbpo/observation", OBSERVATION_QOS)
    compressed = ros.subscribe(CompressedImage, "/cameras/wrist/image_raw/compressed", SENSOR_QOS)
    stop = threading.Event()
    _publish_joint_states(ros, stop)
    stamp = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)  # noqa: E731

    def both_seen():  # sets whose wrist frame the probe received compressed too (best effort: not all)
        sent = {stamp(m) for m in list(compressed)}
        return sum(stamp(o.images[1]) in sent for o in list(observations)) >= 5

    try:
        wait_until(both_seen, 60.0, "5 sets whose compressed wrist frame the probe saw too")
    finally:
        stop.set()
    by_stamp = {stamp(m): m for m in list(compressed)}
    checked = 0
    for obs in list(observations):
        wrist = obs.images[1]
        assert (wrist.encoding, wrist.height, wrist.width, wrist.step) == ("rgb8", 48, 64, 64 * 3)
        assert obs.images[0].encoding == "rgb8" and abs(obs.view_offsets[1]) <= SLOP + 1e-9
        source = by_stamp.get((wrist.header.stamp.sec, wrist.header.stamp.nanosec))
        if source is not None:  # the probe may have missed one (best effort)
            assert wrist.header.frame_id == source.header.frame_id == "wrist_camera"
            np.testing.assert_array_equal(image_to_numpy(wrist), compressed_image_to_rgb(source))
            checked += 1
    assert checked >= 5


def test_an_unknown_or_miscounted_transport_stops_the_node_naming_the_parameter(launch_node):
    from ros_harness import wait_until

    bad = launch_node("vla_mbpo_ros.nodes.observation_sync", "observation_sync",
                      params={"views": ["head", "wrist", "side"], "transports": ["raw", "jpeg"]})
    wait_until(lambda: not bad.alive(), 60.0, "the node to refuse its config")
    assert bad.process.returncode == 2
    assert "transports: expected one transport per view ['head', 'wrist', 'side'] (or one for all)" in bad.output()
