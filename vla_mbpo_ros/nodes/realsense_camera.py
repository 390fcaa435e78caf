"""Intel RealSense camera (pyrealsense2) -> /cameras/<view>/image_raw (+ aligned depth) + camera_info.

Colour is published as rgb8 on /cameras/<view>/image_raw; with ``enable_depth`` the depth stream,
aligned to the colour image (``align_depth``), goes to /cameras/<view>/depth/image_raw as 16UC1
(``depth_units`` metres per count, in /diagnostics); it carries the stamp of the colour frame of its
frameset. The device is chosen by serial number (empty: the first one found) at ``width`` x
``height`` @ ``fps``.

Stamps: the frame's device timestamp mapped to ROS time by core.device_clock. With
``global_time`` (on by default) librealsense reports frames in its global time domain, already on
the host clock, and they map one to one; hardware-clock frames get an offset estimated as the
least-delayed ``host receipt - device time`` over a sliding window (drift-following, reset when
the device clock restarts). The domain in use is reported in /diagnostics.

Device lost (unplugged, firmware hang): after ``lost_after`` s without a frame the pipeline is
stopped and reopened every ``reconnect_period`` s until the device is back. Frame source
(a real pipeline or, in tests, a librealsense software device) is injectable: see ``FrameSource``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from rclpy.node import Node  # before pyrealsense2: the other order segfaults at exit with Kilted's Fast DDS 3
import pyrealsense2 as rs  # noqa: I001  (keep this order; see above)
from sensor_msgs.msg import CameraInfo, Image

from vla_mbpo_ros.conversions import numpy_to_image, pinhole_camera_info, seconds_to_stamp, stamp_to_seconds
from vla_mbpo_ros.core.robot.device_clock import DeviceClockConfig, DeviceClockMapper
from vla_mbpo_ros.core.util.stats import RateStats
from vla_mbpo_ros.nodes._diagnostics import OK, WARN, DiagnosticsPublisher
from vla_mbpo_ros.nodes._runtime import SENSOR_QOS, ConfigError, declare, publishing_until_shutdown, run_node

_DOMAINS = {
    rs.timestamp_domain.global_time: "global_time",
    rs.timestamp_domain.system_time: "system_time",
    rs.timestamp_domain.hardware_clock: "hardware_clock",
}


class DeviceUnavailable(RuntimeError):
    """The configured device is not there (yet): the node retries."""


class FrameSource(Protocol):
    """Where framesets come from: a device pipeline, or a software device in tests."""

    def start(self) -> None:
        """Start streaming; raises DeviceUnavailable when the device is absent."""

    def wait(self, timeout_s: float) -> rs.composite_frame | None:
        """The next frameset, or None after ``timeout_s`` without one."""

    def stop(self) -> None: ...


@dataclass(frozen=True)
class StreamSettings:
    serial: str  # "" = first device
    width: int
    height: int
    fps: int
    enable_depth: bool
    global_time: bool


def connected_serials() -> list[str]:
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


class PipelineSource:
    """A real device through rs.pipeline (which pairs colour and depth frames itself)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self._pipeline: rs.pipeline | None = None

    def start(self) -> None:
        s = self.settings
        serials = connected_serials()
        if (s.serial and s.serial not in serials) or not serials:
            raise DeviceUnavailable(f"serial {s.serial or '(any)'} not among connected devices {serials}")
        config = rs.config()
        config.enable_device(s.serial or serials[0])
        config.enable_stream(rs.stream.color, s.width, s.height, rs.format.rgb8, s.fps)
        if s.enable_depth:
            config.enable_stream(rs.stream.depth, s.width, s.height, rs.format.z16, s.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as err:  # unplugged between the query and the start, or profile unsupported
            raise DeviceUnavailable(str(err)) from err
        for sensor in profile.get_device().query_sensors():
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1.0 if s.global_time else 0.0)
        self._pipeline = pipeline

    def wait(self, timeout_s: float) -> rs.composite_frame | None:
        try:
            ok, frames = self._pipeline.try_wait_for_frames(int(timeout_s * 1000))
        except RuntimeError:  # device gone: the capture loop reopens after lost_after
            return None
        return frames if ok else None

    def stop(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:  # already gone with the device
                pass
            self._pipeline = None


class RealSenseCameraNode(Node):
    def __init__(self, source_factory: Callable[[StreamSettings], FrameSource] | None = None) -> None:
        super().__init__("realsense_camera")
        self.view = declare(self, "view", "head", "view name: topics are /cameras/<view>/...")
        serial = self._declare_serial()
        width = declare(self, "width", 640)
        height = declare(self, "height", 480)
        fps = declare(self, "fps", 30, "frame rate of the device profile (Hz)")
        enable_depth = declare(self, "enable_depth", False, "also publish depth on /cameras/<view>/depth/image_raw")
        self.align_depth = declare(self, "align_depth", True, "align depth to the colour image")
        global_time = declare(self, "global_time", True, "let librealsense stamp frames on the host clock")
        self.wait_for_device = declare(self, "wait_for_device", False, "start without the device and wait for it")
        self.reconnect_period = float(declare(self, "reconnect_period", 1.0, "seconds between reopen attempts"))
        self.lost_after = float(declare(self, "lost_after", 2.0, "seconds without a frame before reopening"))
        window = float(declare(self, "clock_window", 5.0, "hardware-clock offset estimation window (s)"))
        if width <= 0 or height <= 0 or fps <= 0:
            raise ConfigError(f"width, height and fps must be > 0, got {width}x{height} @ {fps}")
        if self.reconnect_period <= 0 or self.lost_after <= 0:
            raise ConfigError("reconnect_period and lost_after must be > 0 s")
        try:
            self.clock = DeviceClockMapper(DeviceClockConfig(window_s=window))
        except ValueError as err:
            raise ConfigError(f"clock_window: {err}") from err
        self.settings = StreamSettings(serial, width, height, fps, enable_depth, global_time)
        if source_factory is None:
            source_factory = PipelineSource
            present = connected_serials()
            if not self.wait_for_device and (not present or (serial and serial not in present)):
                found = f"connected: {', '.join(present)}" if present else "no RealSense device is connected"
                raise ConfigError(
                    f"serial_number: RealSense {serial or '(any)'} not found ({found}); "
                    "set wait_for_device:=true to start anyway and wait for it"
                )
        self._source_factory = source_factory
        self.frame_id = f"{self.view}_camera_optical_frame"
        self.image_pub = self.create_publisher(Image, f"/cameras/{self.view}/image_raw", SENSOR_QOS)
        self.info_pub = self.create_publisher(CameraInfo, f"/cameras/{self.view}/camera_info", SENSOR_QOS)
        self.depth_pub = self.depth_info_pub = None
        if enable_depth:
            self.depth_pub = self.create_publisher(Image, f"/cameras/{self.view}/depth/image_raw", SENSOR_QOS)
            self.depth_info_pub = self.create_publisher(CameraInfo, f"/cameras/{self.view}/depth/camera_info", SENSOR_QOS)
        self._align = rs.align(rs.stream.color) if enable_depth and self.align_depth else None
        self.stats = RateStats(window_s=5.0)
        self.frames_published = 0
        self.drops = 0  # colour frame-number gaps
        self.depth_missing = 0  # framesets without a depth frame while depth is enabled
        self.reconnects = 0
        self.depth_units = 0.0
        self.streaming = False
        self._last_frame_number: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name=f"realsense-{self.view}", daemon=True)
        self._thread.start()
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=1.0, hardware_id=serial)

    def _declare_serial(self) -> str:
        """Serial numbers are digits, which ROS parses as integers unless quoted: accept both."""
        from rcl_interfaces.msg import ParameterDescriptor

        descriptor = ParameterDescriptor(
            description="device serial number (empty: the first device found); quote it in YAML, "
            "an unquoted one loses leading zeros",
            dynamic_typing=True,
        )
        value = self.declare_parameter("serial_number", "", descriptor).value
        return "" if value is None else str(value)

    # ------------------------------------------------------------------ capture thread
    def _capture_loop(self) -> None:
        source: FrameSource | None = None
        last_frame = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            if source is None:
                source = self._open()
                if source is None:
                    self._stop.wait(self.reconnect_period)
                    continue
                last_frame = time.monotonic()
            frames = source.wait(min(self.lost_after, 0.5))
            if frames is None:
                if time.monotonic() - last_frame > self.lost_after:
                    self.get_logger().warning(f"RealSense {self.view}: no frame for {self.lost_after:.1f} s, reopening")
                    source.stop()
                    source = None
                    self.streaming = False
                    self.reconnects += 1
                    self.clock.reset()
                    self._last_frame_number = None
                continue
            last_frame = time.monotonic()
            self._publish(frames)
        if source is not None:
            source.stop()

    def _open(self) -> FrameSource | None:
        source = self._source_factory(self.settings)
        try:
            source.start()
        except DeviceUnavailable as err:
            self.get_logger().warning(
                f"RealSense {self.settings.serial or '(any)'} unavailable ({err}); retrying every {self.reconnect_period:.1f} s",
                throttle_duration_sec=10.0,
            )
            return None
        self.streaming = True
        self.get_logger().info(f"RealSense {self.view}: streaming")
        return source

    def _publish(self, frames: rs.composite_frame) -> None:
        host_time = stamp_to_seconds(self.get_clock().now().to_msg())
        if self._align is not None and frames.get_depth_frame() and frames.get_color_frame():
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return  # a depth-only set (first frames of a stream): nothing to stamp a view with
        domain = _DOMAINS.get(color.get_frame_timestamp_domain(), "hardware_clock")
        stamp = seconds_to_stamp(self.clock.map(color.get_timestamp() / 1000.0, domain, host_time))
        number = color.get_frame_number()
        if self._last_frame_number is not None and number > self._last_frame_number + 1:
            self.drops += number - self._last_frame_number - 1
        self._last_frame_number = number
        rgb = np.asanyarray(color.get_data())
        color_intrinsics = color.profile.as_video_stream_profile().get_intrinsics()
        depth = frames.get_depth_frame() if self.depth_pub is not None else None
        with publishing_until_shutdown(self):
            self.image_pub.publish(numpy_to_image(rgb, "rgb8", stamp, self.frame_id))
            self.info_pub.publish(_camera_info(color_intrinsics, stamp, self.frame_id))
            if depth:
                self.depth_units = depth.get_units()
                aligned = self._align is not None
                depth_frame_id = self.frame_id if aligned else f"{self.view}_depth_optical_frame"
                intrinsics = color_intrinsics if aligned else depth.profile.as_video_stream_profile().get_intrinsics()
                self.depth_pub.publish(numpy_to_image(np.asanyarray(depth.get_data()), "16UC1", stamp, depth_frame_id))
                self.depth_info_pub.publish(_camera_info(intrinsics, stamp, depth_frame_id))
        if self.depth_pub is not None and not depth:
            self.depth_missing += 1
        self.frames_published += 1
        self.stats.tick("color", time.monotonic())

    # ------------------------------------------------------------------ diagnostics
    def _report(self):
        values = {
            "fps": self.stats.rate("color", time.monotonic()),
            "frames": self.frames_published,
            "drops": self.drops,
            "depth_missing": self.depth_missing,
            "timestamp_domain": self.clock.domain or "none",
            "clock_offset_s": self.clock.offset,
            "clock_resyncs": self.clock.resyncs,
            "reconnects": self.reconnects,
            "depth_units": self.depth_units,
        }
        if not self.streaming:
            return WARN, f"waiting for device {self.settings.serial or '(any)'}", values
        return OK, "streaming", values

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3.0)


def _camera_info(intrinsics: rs.intrinsics, stamp, frame_id: str) -> CameraInfo:
    # RealSense colour streams use Brown-Conrady (plumb_bob coefficients) or none; depth uses none.
    i = intrinsics
    return pinhole_camera_info(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, stamp, frame_id, list(i.coeffs[:5]))


def main() -> int:
    return run_node(RealSenseCameraNode)


if __name__ == "__main__":
    raise SystemExit(main())
