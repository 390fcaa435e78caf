"""The sync node fed by real publisher processes: skewed stamps, one stream stopping."""

from __future__ import annotations

import threading

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
