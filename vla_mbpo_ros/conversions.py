"""numpy <-> ROS message conversions, in one place, used at the node edge.

cv_bridge is not used: the distribution's build is tied to NumPy 1.x (LeRobot 0.6 needs NumPy 2)
and PyPI's cv-bridge is the ROS 1 code base. Decoding never copies (the array is a view on the
message buffer); encoding copies once into the message's byte array, which serialization needs.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_mbpo_ros.core.control.estop import SafetyState
from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.robot.joints import reorder
from vla_mbpo_ros.msg import ActionChunk, ExecutedCommand, SafetyStatus

# encoding -> (dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
}


def image_to_numpy(msg: Image) -> np.ndarray:
    """A read-only (H, W) or (H, W, C) view of the image data, honouring step and endianness."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"Image.encoding {msg.encoding!r} is not supported; use one of {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    row_items = msg.step // dtype.itemsize
    if msg.step % dtype.itemsize or row_items < msg.width * channels:
        raise ValueError(f"Image.step {msg.step} is too small for width {msg.width} x {channels} x {dtype.itemsize} B")
    flat = np.frombuffer(msg.data, dtype=dtype, count=msg.height * row_items)
    rows = flat.reshape(msg.height, row_items)[:, : msg.width * channels]
    view = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows
    view.flags.writeable = False  # shares the message's buffer: never scribble on received data
    return view


def numpy_to_image(img: np.ndarray, encoding: str, stamp: Time | None = None, frame_id: str = "") -> Image:
    """Image message from an (H, W[, C]) array whose dtype/channels match ``encoding``."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not supported; use one of {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    shape_ok = img.ndim == 3 and img.shape[2] == channels if channels > 1 else img.ndim == 2
    if img.dtype != dtype or not shape_ok:
        raise ValueError(f"array {img.dtype} {img.shape} does not match encoding {encoding} ({dtype}, {channels} channel(s))")
    img = np.ascontiguousarray(img)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(img.dtype.byteorder == ">")
    msg.step = int(img.shape[1] * channels * img.dtype.itemsize)
    data = array.array("B")
    data.frombytes(img.reshape(-1).view(np.uint8))
    msg.data = data
    return msg


def to_rgb(img: np.ndarray, encoding: str) -> np.ndarray:
    """HxWx3 uint8 RGB for the policy/dataset, from any supported colour or mono encoding."""
    if encoding == "rgb8":
        return img
    if encoding == "bgr8":
        return img[..., ::-1]
    if encoding == "mono8":
        return np.repeat(img[..., None], 3, axis=2)
    raise ValueError(f"cannot convert {encoding} to RGB")


def image_to_rgb(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB of a raw Image (a view on its buffer for rgb8, a copy otherwise)."""
    return to_rgb(image_to_numpy(msg), msg.encoding)


def compressed_image_to_rgb(msg: CompressedImage) -> np.ndarray:
    """HxWx3 uint8 RGB of a CompressedImage (JPEG or PNG, colour or mono; image_transport's
    ``compressed`` format). Depth images (``compressedDepth``) are not camera frames: ValueError."""
    import cv2  # only nodes that decode need OpenCV

    if "compressedDepth" in msg.format:
        raise ValueError(f"CompressedImage.format {msg.format!r}: compressedDepth is a depth image, not a colour frame")
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"CompressedImage.format {msg.format!r}: {len(msg.data)} bytes that OpenCV cannot decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def capture_stamp(msg) -> float:
    """When the oldest member of a MultiViewObservation was captured (s): the set is as old as that."""
    offsets = [0.0, *msg.view_offsets, msg.joint_state_offset]
    return stamp_to_seconds(msg.header.stamp) + min(offsets)


def seconds_since(clock, captured: float) -> float:
    """Age of data captured at ``captured`` (s), on a node's ROS clock (sim time aware). Across machines
    the stamping clocks must be synchronised (chrony/PTP); on one host they are the same clock."""
    return clock.now().nanoseconds * 1e-9 - captured


def seconds_to_stamp(seconds: float) -> Time:
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def pinhole_camera_info(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float, stamp: Time, frame_id: str,
    distortion: list[float] | None = None,
) -> CameraInfo:
    """CameraInfo of a pinhole camera with plumb_bob distortion (k1 k2 t1 t2 k3; none by default)."""
    info = CameraInfo()
    info.header.stamp = stamp
    info.header.frame_id = frame_id
    info.width, info.height = int(width), int(height)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.distortion_model = "plumb_bob"
    info.d = [float(c) for c in distortion] if distortion is not None else [0.0] * 5
    return info


def observation_from_msg(msg, joint_names: Sequence[str], task: str = "") -> Observation:
    """A MultiViewObservation as the policy's Observation: RGB views without copies (views on the
    message's buffers; a copy only for bgr/mono), the joint state in ``joint_names`` order.
    ValueError names what does not fit (unsupported encoding, missing joints)."""
    views = {name: to_rgb(image_to_numpy(image), image.encoding) for name, image in zip(msg.view_names, msg.images)}
    state = reorder(msg.joint_state.name, msg.joint_state.position, joint_names, "observation.joint_state")
    return Observation(views, state, task, stamp_to_seconds(msg.header.stamp), tuple(msg.view_names))


def command_messages(command, joint_names: Sequence[str], period: float, interface: str, policy_version: str, stamp: Time):
    """The arm command (JointTrajectory: one point at one period, or Float64MultiArray) and the
    ExecutedCommand that records it, for a gated ``core.control.executor.Command``."""
    positions = [float(x) for x in command.positions]
    if interface == "trajectory":
        ns = int(round(period * 1e9))
        point = JointTrajectoryPoint(positions=positions, time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9))
        arm = JointTrajectory(joint_names=list(joint_names), points=[point])
    else:
        arm = Float64MultiArray(data=positions)
    executed = ExecutedCommand(
        joint_names=list(joint_names), positions=positions, source=command.source, intervention=command.intervention,
        held=command.held, clamped=command.clamped, policy_version=policy_version, chunk_id=command.chunk_id,
    )
    executed.header.stamp = stamp
    executed.header.frame_id = "base_link"
    return arm, executed


def chunk_message(actions: np.ndarray, chunk_id: int, policy_version: str, joint_names: Sequence[str], period: float,
                  latency: float, stamp: Time):
    """ActionChunk of a (k, d) chunk computed for the observation stamped ``stamp``."""
    msg = ActionChunk(
        chunk_id=chunk_id, policy_version=policy_version, joint_names=list(joint_names),
        chunk_length=int(actions.shape[0]) if actions.ndim == 2 else 0, actions=[float(x) for x in actions.reshape(-1)],
        control_period=float(period), inference_latency=float(latency),
    )
    msg.header.stamp = stamp
    return msg


def safety_status_message(snapshot, stamp: Time) -> SafetyStatus:
    """SafetyStatus of a ``core.control.executor_report.SafetySnapshot`` (stamp: the change it reports)."""
    codes = {SafetyState.IDLE: SafetyStatus.STATE_IDLE, SafetyState.ACTIVE: SafetyStatus.STATE_ACTIVE,
             SafetyState.LATCHED: SafetyStatus.STATE_LATCHED}
    msg = SafetyStatus(
        state=codes[snapshot.state], estop_input=snapshot.estop_input, latch_reason=snapshot.latch_reason,
        last_violation=snapshot.last_violation, commands_sent=snapshot.commands_sent, holds=snapshot.holds,
        clamps=snapshot.clamps, violations=snapshot.violations, latches=snapshot.latches,
        policy_version=snapshot.policy_version,
    )
    msg.header.stamp = stamp
    return msg
