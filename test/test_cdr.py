"""The sync node's serialized MultiViewObservation: rclpy reads it back as the message it stands for."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState

from vla_mbpo_ros.cdr import image_body, image_stamp, multiview_observation
from vla_mbpo_ros.conversions import numpy_to_image, seconds_to_stamp
from vla_mbpo_ros.msg import MultiViewObservation


def _image(rng, height, width, encoding, frame_id, t) -> Image:
    channels = 1 if encoding == "mono8" else 3
    pixels = rng.integers(0, 256, (height, width, channels) if channels > 1 else (height, width), dtype=np.uint8)
    return numpy_to_image(pixels, encoding, seconds_to_stamp(t), frame_id)


@pytest.mark.parametrize("seed", range(4))
def test_the_spliced_set_deserializes_to_the_message_built_field_by_field(seed):
    rng = np.random.default_rng(seed)
    # odd sizes everywhere: frame ids, encodings, rows, so every alignment rule is exercised
    images = [_image(rng, 3 + seed, 5, "rgb8", "head_optical" + "x" * seed, 10.5),
              _image(rng, 7, 3 + 2 * seed, "mono8", "w", 10.51), _image(rng, 2, 2, "bgr8", "", 10.49)]
    joints = JointState(name=["a", "bb", "ccc"][: 1 + seed % 3], position=list(rng.normal(size=1 + seed % 3)))
    joints.velocity = list(rng.normal(size=len(joints.name))) if seed % 2 else []
    joints.header.stamp = seconds_to_stamp(10.502)
    joints.header.frame_id = "base" * seed
    raw = [serialize_message(image) for image in images]
    data = multiview_observation(image_stamp(raw[0]), "base_link", 40 + seed, ["head", "wrist", "side"], raw,
                                 [0.0, 0.01, -0.01], 0.002, 0.01, joints)
    msg = deserialize_message(data, MultiViewObservation)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (10, 500_000_000) and msg.header.frame_id == "base_link"
    assert msg.sequence == 40 + seed and list(msg.view_names) == ["head", "wrist", "side"]
    for got, sent in zip(msg.images, images):
        assert (got.height, got.width, got.encoding, got.step, got.header.frame_id) == (
            sent.height, sent.width, sent.encoding, sent.step, sent.header.frame_id)
        assert bytes(got.data) == bytes(sent.data) and got.header.stamp == sent.header.stamp
    assert list(msg.view_offsets) == [0.0, 0.01, -0.01] and msg.joint_state_offset == 0.002 and msg.max_skew == 0.01
    assert list(msg.joint_state.name) == list(joints.name) and list(msg.joint_state.position) == list(joints.position)
    assert list(msg.joint_state.velocity) == list(joints.velocity) and msg.joint_state.header.frame_id == joints.header.frame_id


def test_an_image_body_ends_at_its_data_and_a_truncated_one_is_refused():
    raw = serialize_message(_image(np.random.default_rng(0), 2, 3, "rgb8", "cam", 1.0))
    assert bytes(image_body(raw + b"\x00\x00\x00")) == raw[4:]  # trailing bytes of a DDS payload are not data
    with pytest.raises(ValueError, match="too short"):
        image_body(raw[:-5])


@pytest.mark.parametrize(("height", "width", "frame_id"), [(3, 5, "w"), (4, 7, "head_optical"), (1, 1, "")])
def test_a_decoded_frame_serializes_as_the_rgb8_image_rclpy_would_write(height, width, frame_id):
    from vla_mbpo_ros.cdr import rgb_image

    rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = rgb_image((12, 345), frame_id, rgb)
    got, sent = deserialize_message(raw, Image), numpy_to_image(rgb, "rgb8", seconds_to_stamp(12.000000345), frame_id)
    assert (got.header.stamp, got.header.frame_id, got.height, got.width, got.encoding, got.is_bigendian, got.step) == (
        sent.header.stamp, sent.header.frame_id, sent.height, sent.width, sent.encoding, sent.is_bigendian, sent.step)
    assert bytes(got.data) == rgb.tobytes()
    assert len(raw) == len(serialize_message(sent))  # same layout (rclpy leaves its padding bytes unset)
    assert image_stamp(raw) == (12, 345) and bytes(image_body(raw)) == raw[4:]
