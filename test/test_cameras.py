"""Camera drivers as real processes: RealSense (through librealsense's software device) and OpenCV (video file).

RealSense: no camera here, so the node runs with a librealsense *software device* as its frame
source (the library's own device API: sensors, video streams, syncer, align). Frames can only be
injected in the process that owns that device, so this file doubles as the node process
(``python test_cameras.py realsense-child <out.json>``): it runs the node class with a real rclpy
context and injects frames with known content and device timestamps; the test process checks
what arrives over DDS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H, FPS = 64, 48, 30
HW_OFFSET_S = 1000.0  # the software device's hardware clock runs this far behind the host clock
FRAMES_PER_PHASE = 30
SERIAL = "912345678901"


def color_pattern(index: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(index * 3 + x) % 256, np.full_like(x, index), y % 256], axis=-1).astype(np.uint8)


def depth_pattern(index: int) -> np.ndarray:
    """Flat (1 m + index mm): alignment may move a value by a pixel, never change it."""
    return np.full((H, W), 1000 + index, dtype=np.uint16)


# ---------------------------------------------------------------------------------------------
# The node's process: software device + RealSenseCameraNode (run as a script by the test).
class SoftwareCamera:
    """A librealsense software device with colour + depth sensors, as the node's FrameSource."""

    def __init__(self, settings) -> None:
        import pyrealsense2 as rs

        self.rs = rs
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, settings.serial or SERIAL)
        self.color_sensor = self.device.add_sensor("RGB Camera")
        self.depth_sensor = self.device.add_sensor("Stereo Module")
        self.color_profile = self.color_sensor.add_video_stream(self._stream(rs.stream.color, rs.format.rgb8, 3, 0))
        self.depth_profile = self.depth_sensor.add_video_stream(self._stream(rs.stream.depth, rs.format.z16, 2, 1))
        self.depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
        identity = rs.extrinsics()
        identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        self.depth_profile.register_extrinsics_to(self.color_profile, identity)
        self.device.create_matcher(rs.matchers.dlr_c)
        self.syncer = rs.syncer(10)
        self.started = threading.Event()
        self._buffers: deque[np.ndarray] = deque(maxlen=64)  # pixels must outlive the frames

    def _stream(self, kind, fmt, bpp: int, uid: int):
        rs = self.rs
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = W, H
        intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = 50.0, 51.0, 31.5, 23.5
        intrinsics.model, intrinsics.coeffs = rs.distortion.none, [0.0] * 5
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = W, H, FPS, bpp, fmt
        stream.intrinsics = intrinsics
        return stream

    def start(self) -> None:
        self.color_sensor.open(self.color_profile)
        self.depth_sensor.open(self.depth_profile)
        self.color_sensor.start(self.syncer)
        self.depth_sensor.start(self.syncer)
        self.started.set()

    def wait(self, timeout_s: float):
        ok, frames = self.syncer.try_wait_for_frames(int(timeout_s * 1000))
        return frames if ok else None

    def stop(self) -> None:
        self.started.clear()
        for sensor in (self.color_sensor, self.depth_sensor):
            sensor.stop()
            sensor.close()

    def inject(self, index: int, device_ms: float, domain) -> None:
        rs = self.rs
        for sensor, profile, pixels, bpp in (
            (self.color_sensor, self.color_profile, color_pattern(index), 3),
            (self.depth_sensor, self.depth_profile, depth_pattern(index), 2),
        ):
            self._buffers.append(pixels)
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bpp, W * bpp
            frame.timestamp, frame.domain, frame.frame_number = device_ms, domain, index
            frame.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(frame)


def _realsense_child(out_path: str) -> None:
    """Node + injection: phase 1 hardware clock, a pause (device lost -> reopened), phase 2 global time.

    Each phase lasts at least FRAMES_PER_PHASE frames and until the node has published a diagnostics
    report in that phase's timestamp domain. The process then stays up (its node publishing) until the
    test closes its stdin: the test decides when it has received everything.
    """
    import rclpy  # before pyrealsense2: the other order segfaults at exit with Kilted's Fast DDS 3
    import pyrealsense2 as rs  # noqa: I001  (keep this order)
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from waiting import wait_until

    from vla_mbpo_ros.nodes.realsense_camera import RealSenseCameraNode

    sources: list[SoftwareCamera] = []

    def factory(settings):
        sources.append(SoftwareCamera(settings))
        return sources[-1]

    rclpy.init(args=["--ros-args", "-p", "enable_depth:=true", "-p", "lost_after:=0.5", "-p", "reconnect_period:=0.2",
                     "-p", f"serial_number:={SERIAL}", "-p", "view:=head"])
    node = RealSenseCameraNode(source_factory=factory)
    reported: set[str] = set()  # timestamp domains the node's diagnostics reports have named

    def on_diagnostics(array) -> None:
        reported.update(values["timestamp_domain"] for values in _diagnostic_values([array], "realsense_camera"))

    watcher = rclpy.create_node("injector")
    watcher.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(watcher)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    # Best-effort writers drop what they write before they match a reader: wait for the probe's.
    publishers = (node.image_pub, node.info_pub, node.depth_pub)
    wait_until(lambda: all(pub.get_subscription_count() >= 1 for pub in publishers), 60.0, "the probe's subscriptions matched")
    injected = []
    index = 0
    phases = (("hardware", rs.timestamp_domain.hardware_clock, "hardware_clock"),
              ("global", rs.timestamp_domain.global_time, "global_time"))
    for phase, domain, domain_name in phases:
        # Without frames the node reopens its source every lost_after s (as with a real device):
        # inject into a freshly (re)opened one. Phase 2 starts after the pause, on the reopened device.
        opened = len(sources)
        wait_until(lambda: len(sources) > opened and sources[-1].started.is_set(), 60.0, "the node to (re)open its source")
        first, next_time = index, time.monotonic()
        while index - first < FRAMES_PER_PHASE or domain_name not in reported:
            # Frame indices are coded in one byte of the image (colour_pattern): 120 frames a phase at most.
            assert index - first < 4 * FRAMES_PER_PHASE, f"no diagnostics report in the {domain_name} domain"
            host = time.time()
            device_ms = (host - HW_OFFSET_S) * 1000.0 if phase == "hardware" else host * 1000.0
            sources[-1].inject(index, device_ms, domain)
            injected.append({"index": index, "phase": phase, "device_ms": device_ms, "host": host})
            index += 1
            next_time += 1.0 / FPS  # a camera's frame period: the pace is the input, not a wait
            time.sleep(max(0.0, next_time - time.monotonic()))
    Path(out_path + ".tmp").write_text(json.dumps({"injected": injected}))
    os.replace(out_path + ".tmp", out_path)
    sys.stdin.read()  # until the test closes our stdin
    executor.shutdown()
    node.close()
    node.destroy_node()
    watcher.destroy_node()
    rclpy.try_shutdown()


# ---------------------------------------------------------------------------------------------
def _collect(ros, msg_type, topic, qos):
    """Messages on ``topic`` with the probe's receipt time (host clock)."""
    received: list = []
    ros.node.create_subscription(msg_type, topic, lambda m: received.append((m, time.time())), qos)
    return received


def _diagnostic_values(arrays, name: str) -> list[dict[str, str]]:
    return [
        {kv.key: kv.value for kv in status.values} | {"_message": status.message, "_level": status.level}
        for array in arrays
        for status in array.status
        if status.name.endswith(name)
    ]


def test_realsense_publishes_injected_frames_with_mapped_stamps_and_reopens_a_lost_device(ros, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_harness import wait_until
    from sensor_msgs.msg import CameraInfo, Image

    from vla_mbpo_ros.conversions import image_to_numpy, stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

    images = _collect(ros, Image, "/cameras/head/image_raw", SENSOR_QOS)
    depths = _collect(ros, Image, "/cameras/head/depth/image_raw", SENSOR_QOS)
    infos = _collect(ros, CameraInfo, "/cameras/head/camera_info", SENSOR_QOS)
    diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics")
    out = tmp_path / "injected.json"
    log = open(tmp_path / "realsense_child.log", "wb")
    child = subprocess.Popen([sys.executable, "-u", __file__, "realsense-child", str(out)], stdin=subprocess.PIPE,
                             stdout=log, stderr=subprocess.STDOUT)

    def child_running() -> bool:
        assert child.poll() is None, f"the node process exited early:\n{(tmp_path / 'realsense_child.log').read_text()}"
        return True

    try:
        wait_until(lambda: child_running() and out.exists(), 120.0, "the frames to be injected")
        report = json.loads(out.read_text())
        last = report["injected"][-1]["index"]
        # A writer delivers in order: once its last frame is here, everything it will deliver is.
        wait_until(lambda: child_running() and images and int(image_to_numpy(images[-1][0])[0, 0, 1]) == last, 30.0,
                   f"the colour image of the last injected frame ({last})")
        wait_until(lambda: depths and int(image_to_numpy(depths[-1][0]).max()) - 1000 == last, 30.0,
                   f"the depth image of the last injected frame ({last})")
        wait_until(lambda: "global_time" in [r["timestamp_domain"] for r in _diagnostic_values(diagnostics, "realsense_camera")],
                   30.0, "a diagnostics report in the global time domain")
        child.stdin.close()
        assert child.wait(timeout=60) == 0, (tmp_path / "realsense_child.log").read_text()
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    images, depths = list(images), list(depths)
    injected = {f["index"]: f for f in report["injected"]}

    # Content and order: every colour image is exactly one injected frame, in injection order.
    indices = []
    for msg, _ in images:
        assert (msg.encoding, msg.width, msg.height) == ("rgb8", W, H)
        frame = image_to_numpy(msg)
        index = int(frame[0, 0, 1])
        np.testing.assert_array_equal(frame, color_pattern(index))
        indices.append(index)
    assert indices == sorted(set(indices))
    for phase in ("hardware", "global"):
        got = [i for i in indices if injected[i]["phase"] == phase]
        assert len(got) >= FRAMES_PER_PHASE // 2, f"{phase}: only {len(got)} of {FRAMES_PER_PHASE} frames arrived"

    # Stamps. Hardware clock: offset = least-delayed (receipt - device time), so a stamp lies between
    # the frame's injection on the host clock and its receipt by the probe. Global time: one to one.
    stamp_of_index = {}
    for (msg, receipt), index in zip(images, indices):
        stamp = stamp_to_seconds(msg.header.stamp)
        frame = injected[index]
        stamp_of_index[index] = msg.header.stamp
        if frame["phase"] == "hardware":
            assert frame["device_ms"] / 1000.0 + HW_OFFSET_S - 1e-6 <= stamp <= receipt
        else:
            assert stamp == pytest.approx(frame["device_ms"] / 1000.0, abs=1e-6)
    stamps = [stamp_to_seconds(m.header.stamp) for m, _ in images]
    assert np.all(np.diff(stamps) > 0)

    # Aligned depth: 16UC1, same stamp as its colour frame, content of the same injected frame.
    assert len(depths) >= FRAMES_PER_PHASE
    for msg, _ in depths:
        assert (msg.encoding, msg.width, msg.height) == ("16UC1", W, H)
        depth = image_to_numpy(msg)
        # Identical intrinsics + identity extrinsics: alignment maps pixels onto themselves, except
        # that librealsense's align leaves holes (0 = no depth) where projected pixel edges round apart.
        valid = depth > 0
        assert valid.mean() > 0.9
        index = int(depth[valid][0]) - 1000
        np.testing.assert_array_equal(depth[valid], depth_pattern(index)[valid])
        assert stamp_of_index.get(index) == msg.header.stamp
        assert msg.header.frame_id == "head_camera_optical_frame"

    info = infos[-1][0]
    assert (info.width, info.height) == (W, H) and list(info.k) == [50.0, 0.0, 31.5, 0.0, 51.0, 23.5, 0.0, 0.0, 1.0]

    reports = _diagnostic_values(list(diagnostics), "realsense_camera")
    domains = [r["timestamp_domain"] for r in reports]
    assert domains.index("hardware_clock") < domains.index("global_time")
    # Reopened after the pause between the phases (and while idle before/after: no frames = lost).
    reopened = [int(r["reconnects"]) for r in reports if r["timestamp_domain"] == "global_time"]
    assert reopened and min(reopened) >= 1
    assert float(reports[-1]["depth_units"]) == pytest.approx(0.001)


def test_realsense_refuses_to_start_without_the_configured_device(launch_node):
    node = launch_node("vla_mbpo_ros.nodes.realsense_camera", "head_camera", params={"serial_number": SERIAL})
    code = node.process.wait(timeout=60)
    output = node.output()
    assert code == 2, output
    assert f"serial_number: RealSense {SERIAL} not found (no RealSense device is connected)" in output
    assert "wait_for_device:=true" in output and "Traceback" not in output


def test_realsense_waits_for_the_device_when_asked(ros, launch_node):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from ros_harness import wait_until

    diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics")
    node = launch_node(
        "vla_mbpo_ros.nodes.realsense_camera", "head_camera", params={"serial_number": SERIAL, "wait_for_device": True}
    )
    reports = wait_until(lambda: _diagnostic_values(diagnostics, "head_camera"), 60.0, "a diagnostics report")
    assert reports[0]["_message"] == f"waiting for device {SERIAL}" and reports[0]["frames"] == "0"
    assert reports[0]["_level"] == DiagnosticStatus.WARN
    assert node.alive()
    assert node.stop() == 0, node.output()


# ---------------------------------------------------------------------------------------------
def _write_video(path: Path, frames: int, size=(W, H), fps: float = 30.0) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for index in range(frames):
        # A flat frame whose grey level encodes its index (robust to MJPEG compression).
        writer.write(np.full((size[1], size[0], 3), 20 + index * 20, dtype=np.uint8))
    writer.release()


def _frame_index(msg) -> int:
    from vla_mbpo_ros.conversions import image_to_numpy

    return int(round((float(image_to_numpy(msg).mean()) - 20) / 20))


def test_opencv_camera_publishes_a_video_file_in_order_and_loops(ros, launch_node, tmp_path):
    from ros_harness import wait_until
    from sensor_msgs.msg import CameraInfo, Image

    from vla_mbpo_ros.conversions import image_to_numpy, stamp_to_seconds
    from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

    video = tmp_path / "clip.avi"
    _write_video(video, frames=8)
    images = ros.subscribe(Image, "/cameras/wrist/image_raw", SENSOR_QOS)
    infos = ros.subscribe(CameraInfo, "/cameras/wrist/camera_info", SENSOR_QOS)
    launch_node("vla_mbpo_ros.nodes.opencv_camera", "wrist_camera", params={"view": "wrist", "source": str(video), "fps": 30.0})
    wait_until(lambda: len(images) >= 30, 60.0, "30 frames (more than the 8 of the file)")
    first = images[0]
    assert (first.encoding, first.width, first.height) == ("rgb8", W, H)
    frame = image_to_numpy(first)
    assert np.ptp(frame) <= 6, "a flat frame stays flat (and grey: R == G == B)"
    indices = [_frame_index(m) for m in images]
    assert set(indices) == set(range(8))
    # In file order, restarting at 0 after the last frame (loop); losses can only skip ahead.
    steps = [(b - a) % 8 for a, b in zip(indices, indices[1:])]
    assert all(step >= 1 for step in steps)
    assert indices.count(0) >= 2, "the file must restart from its first frame"
    stamps = [stamp_to_seconds(m.header.stamp) for m in images]
    assert np.all(np.diff(stamps) > 0)
    assert infos and (infos[-1].width, infos[-1].height) == (W, H)


def test_opencv_camera_without_loop_reopens_the_file_at_its_end(ros, launch_node, tmp_path):
    from ros_harness import wait_until
    from sensor_msgs.msg import Image

    from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

    video = tmp_path / "clip.avi"
    _write_video(video, frames=5)
    images = ros.subscribe(Image, "/cameras/head/image_raw", SENSOR_QOS)
    node = launch_node(
        "vla_mbpo_ros.nodes.opencv_camera",
        "head_camera",
        params={"view": "head", "source": str(video), "fps": 30.0, "loop": False, "reconnect_period": 0.1},
    )
    wait_until(lambda: [_frame_index(m) for m in images].count(0) >= 2, 60.0, "the file played twice")
    assert "read failed, reopening" in node.output()
    indices = [_frame_index(m) for m in images]
    assert set(indices) == set(range(5))
    assert all((b - a) % 5 >= 1 for a, b in zip(indices, indices[1:]))


# ---------------------------------------------------------------------------------------------
def test_bringup_picks_the_camera_driver_by_the_cameras_argument():
    from vla_mbpo_ros import bringup

    def drivers(**arguments):
        return {n.name: (n.executable, n.param_files[0].name) for n in bringup.resolve("deploy", arguments) if "camera" in n.name}

    usb = ("opencv_camera", "so101_usb.yaml")
    realsense = ("realsense_camera", "so101_realsense.yaml")
    assert drivers(robot="so101") == {"head_camera": usb, "wrist_camera": usb}
    assert drivers(robot="so101", cameras="realsense") == {"head_camera": realsense, "wrist_camera": realsense}
    assert drivers(robot="sim", cameras="realsense") == {}
    for node in bringup.resolve("deploy", {"robot": "so101", "cameras": "realsense"}):
        assert all(path.is_file() for path in node.param_files), node.name
    with pytest.raises(ValueError, match="cameras:='gige' is not one of"):
        bringup.resolve("deploy", {"robot": "so101", "cameras": "gige"})


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "realsense-child":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _realsense_child(sys.argv[2])
