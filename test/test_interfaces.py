"""Every custom message and service crosses a process boundary intact (real Fast DDS, two processes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

TEST_DIR = Path(__file__).parent


def _filled_messages():
    from sensor_msgs.msg import JointState
    from vla_mbpo_ros.msg import ActionChunk, EpisodeEvent, MultiViewObservation, PolicyUpdate, SafetyStatus

    from vla_mbpo_ros.conversions import numpy_to_image, seconds_to_stamp

    rng = np.random.default_rng(0)
    stamp = seconds_to_stamp(12.5)
    obs = MultiViewObservation()
    obs.header.stamp = stamp
    obs.sequence = 42
    obs.view_names = ["head", "wrist"]
    obs.images = [numpy_to_image(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "rgb8", stamp) for _ in range(2)]
    obs.view_offsets = [0.0, 0.004]
    obs.joint_state_offset = -0.002
    obs.max_skew = 0.004
    obs.joint_state = JointState(name=["a", "b"], position=[0.1, -0.2], velocity=[0.0, 1.0])

    chunk = ActionChunk(chunk_id=3, policy_version="v0002", joint_names=["a", "b"], chunk_length=10)
    chunk.actions = rng.standard_normal(20).astype(np.float32).tolist()
    chunk.control_period = 0.03125  # float32 fields: values exact in float32 compare equal
    chunk.inference_latency = 0.0625

    status = SafetyStatus(state=SafetyStatus.STATE_LATCHED, estop_input=True, latch_reason="estop input")
    status.last_violation = "joint a step 0.3 > 0.05 rad"
    status.commands_sent, status.holds, status.clamps, status.violations, status.latches = 100, 5, 2, 7, 1

    event = EpisodeEvent(event=EpisodeEvent.SUCCESS, episode_index=4, task="pick the cube", source="policy")
    update = PolicyUpdate(version="v0003", uri="file:///tmp/ckpt/v0003", sha256="ab" * 32, policy_type="flow_vla")
    update.metric_names = ["imagined_success"]
    update.metric_values = [0.75]
    return {"MultiViewObservation": obs, "ActionChunk": chunk, "SafetyStatus": status, "EpisodeEvent": event, "PolicyUpdate": update}


def test_every_message_round_trips_through_another_process(ros, launch_node):
    from echo_node import MESSAGE_TYPES
    from ros_harness import wait_until

    from vla_mbpo_ros.conversions import image_to_numpy

    pythonpath = f"{TEST_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    echo = launch_node("echo_node", "echo", env={"PYTHONPATH": pythonpath})
    messages = _filled_messages()
    assert set(messages) == set(MESSAGE_TYPES)
    echoed = {}
    for name, message in messages.items():
        echoed[name] = received = ros.subscribe(type(message), f"echo_out/{name}")
        publisher = ros.publisher(type(message), f"echo_in/{name}")
        ros.wait_for_subscribers(f"echo_in/{name}")
        ros.wait_for_publishers(f"echo_out/{name}")
        # Discovery of the echo's subscription to our publisher can lag the graph view: resend.
        wait_until(lambda: publisher.publish(message) or received, 20.0, f"{name} echoed back")
        assert received[0] == message, f"{name} changed on the way"
    sent, got = messages["MultiViewObservation"].images[1], echoed["MultiViewObservation"][0].images[1]
    np.testing.assert_array_equal(image_to_numpy(got), image_to_numpy(sent))
    assert echo.alive()


def test_custom_services_are_served_across_processes(ros, launch_node):
    from vla_mbpo_ros.srv import EndEpisode, StartEpisode

    pythonpath = f"{TEST_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    launch_node("echo_node", "echo", env={"PYTHONPATH": pythonpath})
    response = ros.call(StartEpisode, "echo/start_episode", StartEpisode.Request(task="pick", source="teleop"))
    assert response.success and response.episode_index == 4 and "pick (teleop)" in response.message
    response = ros.call(EndEpisode, "echo/end_episode", EndEpisode.Request(outcome=EndEpisode.Request.OUTCOME_DISCARD))
    assert not response.success and response.episode_index == 7
