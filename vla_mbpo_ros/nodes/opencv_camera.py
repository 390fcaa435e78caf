"""USB/V4L2 camera (or a video file, for tests and replay) -> /cameras/<view>/image_raw + camera_info.

Frames are grabbed on a thread of their own and stamped with the node clock at capture time, so
a slow subscriber never delays capture and the stamp reflects when the frame was taken.
"""

from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # our own throttled warning says it once
import cv2  # noqa: E402
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from vla_mbpo_ros.conversions import numpy_to_image, pinhole_camera_info
from vla_mbpo_ros.nodes._runtime import SENSOR_QOS, ConfigError, declare, publishing_until_shutdown, run_node


class OpenCVCameraNode(Node):
    def __init__(self) -> None:
        super().__init__("opencv_camera")
        self.view = declare(self, "view", "head", "view name: topics are /cameras/<view>/...")
        self.source = declare(self, "source", "0", "device index, /dev/videoN path, or a video file")
        self.fps = float(declare(self, "fps", 30.0, "capture rate (Hz); a video file is paced at this rate"))
        self.width = declare(self, "width", 0, "requested width (0 = device default)")
        self.height = declare(self, "height", 0, "requested height (0 = device default)")
        self.fourcc = declare(self, "fourcc", "", "requested FOURCC, e.g. MJPG (empty = device default)")
        self.loop = declare(self, "loop", True, "restart a video file at its end")
        self.reconnect_period = float(declare(self, "reconnect_period", 1.0, "seconds between reopen attempts"))
        if self.fps <= 0:
            raise ConfigError(f"fps must be > 0, got {self.fps}")
        self.frame_id = f"{self.view}_camera_optical_frame"
        self.image_pub = self.create_publisher(Image, f"/cameras/{self.view}/image_raw", SENSOR_QOS)
        self.info_pub = self.create_publisher(CameraInfo, f"/cameras/{self.view}/camera_info", SENSOR_QOS)
        self.frames_published = 0
        self._stop = threading.Event()
        self._capture: cv2.VideoCapture | None = None
        self._thread = threading.Thread(target=self._capture_loop, name=f"capture-{self.view}", daemon=True)
        self._thread.start()

    def _open(self) -> cv2.VideoCapture | None:
        source: int | str = int(self.source) if self.source.isdigit() else self.source
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            return None
        if self.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        if self.width > 0:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height > 0:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        return capture

    def _capture_loop(self) -> None:
        period = 1.0 / self.fps
        next_time = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            if self._capture is None:
                self._capture = self._open()
                if self._capture is None:
                    self.get_logger().warning(
                        f"cannot open camera source {self.source!r}; retrying in {self.reconnect_period:.1f} s",
                        throttle_duration_sec=10.0,
                    )
                    self._stop.wait(self.reconnect_period)
                    continue
            ok, frame = self._capture.read()
            if not ok:
                if self.loop and self._capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
                    self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self.get_logger().warning(f"camera {self.view}: read failed, reopening")
                self._capture.release()
                self._capture = None
                continue
            stamp = self.get_clock().now().to_msg()
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            with publishing_until_shutdown(self):
                self.image_pub.publish(numpy_to_image(rgb, "rgb8", stamp, self.frame_id))
                self.info_pub.publish(self._camera_info(rgb.shape[1], rgb.shape[0], stamp))
            self.frames_published += 1
            next_time += period
            delay = next_time - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_time = time.monotonic()

    def _camera_info(self, width: int, height: int, stamp) -> CameraInfo:
        # Uncalibrated: a pinhole guess (fx = width) until a calibration file is configured.
        return pinhole_camera_info(width, height, float(width), float(width), width / 2.0, height / 2.0, stamp, self.frame_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._capture is not None:
            self._capture.release()


def main() -> int:
    return run_node(OpenCVCameraNode)


if __name__ == "__main__":
    raise SystemExit(main())
