"""A synthetic camera: a moving test pattern on /cameras/<view>/image_raw at a fixed rate.

With ``transport: compressed`` it publishes JPEG sensor_msgs/CompressedImage on
/cameras/<view>/image_raw/compressed instead, as image_transport's compressed publisher does.

For checking a pipeline without hardware (sync tests and bench): stamps can carry a constant
offset and uniform jitter, and the stream can stop after a while, like a camera that hangs.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from vla_mbpo_ros.conversions import numpy_to_image, seconds_to_stamp, stamp_to_seconds
from vla_mbpo_ros.core.data.image_transport import IMAGE_TRANSPORTS
from vla_mbpo_ros.nodes._runtime import SENSOR_QOS, ConfigError, declare, publishing_until_shutdown, run_node


class TestPatternCameraNode(Node):
    def __init__(self) -> None:
        super().__init__("test_pattern_camera")
        self.view = declare(self, "view", "head")
        self.fps = float(declare(self, "fps", 30.0))
        self.width = declare(self, "width", 640)
        self.height = declare(self, "height", 480)
        self.stamp_offset = float(declare(self, "stamp_offset", 0.0, "added to every stamp (s)"))
        self.jitter = float(declare(self, "jitter", 0.0, "uniform stamp and send jitter, +/- this (s)"))
        self.stop_after = float(
            declare(self, "stop_after", 0.0, "stop publishing this long (s) after the first subscriber matched; 0 = never")
        )
        seed = declare(self, "seed", 0)
        self.transport = declare(self, "transport", "raw", "raw (Image) or compressed (JPEG CompressedImage)")
        self.jpeg_quality = declare(self, "jpeg_quality", 90)
        if self.fps <= 0 or self.width <= 0 or self.height <= 0:
            raise ConfigError("fps, width and height must be > 0")
        if self.transport not in IMAGE_TRANSPORTS:
            raise ConfigError(f"transport: expected one of {list(IMAGE_TRANSPORTS)}, got {self.transport!r}")
        self.rng = np.random.default_rng(seed)
        if self.transport == "compressed":
            self.pub = self.create_publisher(CompressedImage, f"/cameras/{self.view}/image_raw/compressed", SENSOR_QOS)
        else:
            self.pub = self.create_publisher(Image, f"/cameras/{self.view}/image_raw", SENSOR_QOS)
        base = np.linspace(0, 255, self.width, dtype=np.float32)
        self._row = np.broadcast_to(base, (self.height, self.width))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = 1.0 / self.fps
        start = time.monotonic()
        frame = 0
        frames = np.empty((self.height, self.width, 3), dtype=np.uint8)
        subscribed_at = None  # a simulated hang counts from then: a slow-starting consumer still sees frames
        while not self._stop.is_set() and self.context.ok():
            if subscribed_at is None and self.pub.get_subscription_count() > 0:
                subscribed_at = time.monotonic()
            if self.stop_after and subscribed_at is not None and time.monotonic() - subscribed_at > self.stop_after:
                self._stop.wait(0.1)
                continue
            now = stamp_to_seconds(self.get_clock().now().to_msg())
            stamp = now + self.stamp_offset + self.rng.uniform(-self.jitter, self.jitter)
            frames[..., 0] = (self._row + 4 * frame) % 256
            frames[..., 1] = frame % 256
            frames[..., 2] = 255 - frames[..., 0]
            with publishing_until_shutdown(self):
                self.pub.publish(self._message(frames, seconds_to_stamp(stamp)))
            frame += 1
            delay = start + frame * period + self.rng.uniform(0, self.jitter) - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _message(self, rgb: np.ndarray, stamp):
        if self.transport == "raw":
            return numpy_to_image(rgb, "rgb8", stamp, f"{self.view}_camera")
        import cv2

        ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpeg.tobytes())
        msg.header.stamp, msg.header.frame_id = stamp, f"{self.view}_camera"
        return msg

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def main() -> int:
    return run_node(TestPatternCameraNode)


if __name__ == "__main__":
    raise SystemExit(main())
