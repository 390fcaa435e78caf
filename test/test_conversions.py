"""numpy <-> sensor_msgs/Image conversion at the node edge."""

from __future__ import annotations

import numpy as np
import pytest

from vla_mbpo_ros.conversions import (
    image_to_numpy,
    numpy_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
    to_rgb,
)


@pytest.mark.parametrize(
    "encoding,shape,dtype",
    [("rgb8", (5, 7, 3), np.uint8), ("bgr8", (4, 6, 3), np.uint8), ("mono8", (3, 9), np.uint8), ("16UC1", (4, 5), np.uint16)],
)
def test_round_trip_each_encoding(encoding, shape, dtype):
    rng = np.random.default_rng(1)
    img = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    msg = numpy_to_image(img, encoding, seconds_to_stamp(3.25), "cam")
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (shape[0], shape[1], encoding, "cam")
    np.testing.assert_array_equal(image_to_numpy(msg), img)


def test_decode_is_a_view_on_the_message_buffer_not_a_copy():
    msg = numpy_to_image(np.zeros((2, 3, 3), np.uint8), "rgb8")
    view = image_to_numpy(msg)
    msg.data[0] = 200
    assert view[0, 0, 0] == 200
    assert not view.flags.writeable


def test_row_padding_in_step_is_skipped():
    msg = numpy_to_image(np.arange(12, dtype=np.uint8).reshape(3, 4), "mono8")
    padded = bytearray()
    for row in range(3):
        padded += bytes(msg.data[row * 4 : row * 4 + 4]) + b"\xff\xff"
    msg.step, msg.data = 6, padded
    np.testing.assert_array_equal(image_to_numpy(msg), np.arange(12).reshape(3, 4))


def test_big_endian_16_bit_depth_is_honoured():
    depth = np.array([[1, 256], [513, 65535]], dtype=np.uint16)
    msg = numpy_to_image(depth, "16UC1")
    msg.is_bigendian = 1
    msg.data = depth.astype(">u2").tobytes()
    np.testing.assert_array_equal(image_to_numpy(msg), depth)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="encoding 'yuv422'"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "yuv422")
    with pytest.raises(ValueError, match="does not match encoding rgb8"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    msg = numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.step = 3
    with pytest.raises(ValueError, match="Image.step 3 is too small"):
        image_to_numpy(msg)


def test_bgr_and_mono_convert_to_rgb():
    bgr = np.array([[[1, 2, 3]]], np.uint8)
    np.testing.assert_array_equal(to_rgb(bgr, "bgr8"), [[[3, 2, 1]]])
    assert to_rgb(np.array([[7]], np.uint8), "mono8").shape == (1, 1, 3)


def test_stamp_conversion_round_trips():
    for t in (0.0, 1.5, 1234567.000000001, 0.999999999):
        assert abs(stamp_to_seconds(seconds_to_stamp(t)) - t) < 2e-9
