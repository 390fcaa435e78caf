"""MultiViewObservation built from camera images as they arrive, serialized: the pixels are copied once.

The sync node takes images as serialized CDR (``raw=True`` subscriptions: rclpy does not turn them
into Python messages) and writes the set's CDR directly, the image bodies spliced in unchanged, for
a ``raw`` publish. Decoding each image into a Python message and serializing the set again would
copy every frame three times more (measured: 45 % of the node's time in publish, 21 % in taking
messages, at 3 x 640x480 rgb8 at 30 fps).

Encoding: XCDR1 little endian (what rmw_fastrtps writes): 4-byte encapsulation header, then every
primitive aligned to its size relative to the end of that header. An Image's widest member is 4
bytes, so an Image body copied to any 4-aligned position keeps its layout.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little endian
_U32 = struct.Struct("<I")
_STAMP = struct.Struct("<iI")


def image_stamp(raw: bytes) -> tuple[int, int]:
    """(sec, nanosec) of a serialized sensor_msgs/Image or CompressedImage (its header's stamp comes first)."""
    return _STAMP.unpack_from(raw, len(ENCAPSULATION))


def image_body(raw: bytes) -> memoryview:
    """The serialized fields of an Image without the encapsulation header and any trailing bytes."""
    view = memoryview(raw)[len(ENCAPSULATION):]
    if bytes(memoryview(raw)[:2]) != ENCAPSULATION[:2]:
        raise ValueError("only little-endian CDR images are supported")
    pos = 8  # stamp
    pos = _skip_string(view, pos)  # frame_id
    pos += 8  # height, width
    pos = _skip_string(view, pos)  # encoding
    pos += 1  # is_bigendian
    pos = _align(pos, 4) + 4  # step
    pos = _align(pos, 4)
    (count,) = _U32.unpack_from(view, pos)
    end = pos + 4 + count
    if end > len(view):
        raise ValueError(f"serialized Image too short: {len(view)} bytes for {count} bytes of data")
    return view[:end]


def _align(pos: int, size: int) -> int:
    return pos + (-pos % size)


def _skip_string(view: memoryview, pos: int) -> int:
    pos = _align(pos, 4)
    (length,) = _U32.unpack_from(view, pos)
    return pos + 4 + length


class CdrWriter:
    """Appends CDR fields; ``bytes()`` joins them (the only copy of spliced-in data)."""

    def __init__(self) -> None:
        self._parts: list[bytes | memoryview] = [ENCAPSULATION]
        self._pos = 0  # relative to the end of the encapsulation header

    def _put(self, data: bytes | memoryview, align: int = 1) -> None:
        pad = -self._pos % align
        if pad:
            self._parts.append(b"\x00" * pad)
        self._parts.append(data)
        self._pos += pad + len(data)

    def u32(self, value: int) -> None:
        self._put(_U32.pack(value), 4)

    def stamp(self, sec: int, nanosec: int) -> None:
        self._put(_STAMP.pack(sec, nanosec), 4)

    def u64(self, value: int) -> None:
        self._put(struct.pack("<Q", value), 8)

    def f64(self, value: float) -> None:
        self._put(struct.pack("<d", value), 8)

    def string(self, text: str) -> None:
        data = text.encode() + b"\x00"
        self.u32(len(data))
        self._put(data)

    def strings(self, texts: Sequence[str]) -> None:
        self.u32(len(texts))
        for text in texts:
            self.string(text)

    def f64s(self, values: Sequence[float]) -> None:
        self.u32(len(values))
        if len(values):
            self._put(struct.pack(f"<{len(values)}d", *values), 8)

    def raw(self, data: bytes | memoryview, align: int) -> None:
        self._put(data, align)

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


def rgb_image(stamp: tuple[int, int], frame_id: str, rgb) -> bytes:
    """A serialized rgb8 sensor_msgs/Image of an (H, W, 3) uint8 array (e.g. a decoded compressed
    frame), ready to be spliced into a set like a received one; the pixels are copied once."""
    height, width, channels = rgb.shape
    if channels != 3 or rgb.dtype.itemsize != 1:
        raise ValueError(f"rgb_image: expected (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    w = CdrWriter()
    w.stamp(*stamp)
    w.string(frame_id)
    w.u32(height)
    w.u32(width)
    w.string("rgb8")
    w.raw(b"\x00", 1)  # is_bigendian
    w.u32(width * 3)  # step
    w.u32(height * width * 3)
    w.raw(memoryview(rgb).cast("B") if rgb.flags.c_contiguous else rgb.tobytes(), 1)
    return bytes(w)


def multiview_observation(stamp: tuple[int, int], frame_id: str, sequence: int, view_names: Sequence[str],
                          images: Sequence[bytes], view_offsets: Sequence[float], joint_state_offset: float,
                          max_skew: float, joint_state) -> bytes:
    """A serialized vla_mbpo_ros/MultiViewObservation (fields as in msg/MultiViewObservation.msg);
    ``images`` are serialized sensor_msgs/Image, ``joint_state`` a sensor_msgs/JointState message."""
    w = CdrWriter()
    w.stamp(*stamp)
    w.string(frame_id)
    w.u64(sequence)
    w.strings(view_names)
    w.u32(len(images))
    for raw in images:
        w.raw(image_body(raw), 4)
    w.f64s(view_offsets)
    w.f64(joint_state_offset)
    w.f64(max_skew)
    w.stamp(joint_state.header.stamp.sec, joint_state.header.stamp.nanosec)
    w.string(joint_state.header.frame_id)
    w.strings(joint_state.name)
    w.f64s(joint_state.position)
    w.f64s(joint_state.velocity)
    w.f64s(joint_state.effort)
    return bytes(w)
