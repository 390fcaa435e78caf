"""Time-synchronized multi-view observations: N camera streams + joint state -> MultiViewObservation.

Matching is core.data.sync.ApproximateTimeSync on header stamps (the head view is the reference; one
set per head frame). Subscriptions use the sensor-data QoS of the drivers; the output is reliable.
Raw images are taken and forwarded serialized (``vla_mbpo_ros.cdr``): the node never decodes them, and
their pixels are copied once, into the set. A view whose camera publishes sensor_msgs/CompressedImage
(``transports``, per view; core.data.image_transport) is matched on its serialized stamp too, and only
the frames that make it into a set are decoded, once, here: every consumer of the set (executor,
recorder) gets rgb8 pixels. /diagnostics reports per-stream rates, drops, the matched-set rate, skew,
latency and decode-time percentiles, and stale streams. ``latency_ms`` is the
latency the node adds: from the DDS receipt of a set's last-arriving member (rmw reception
timestamp, so executor queueing counts) to the publish of the set.
"""

from __future__ import annotations

import struct
import time
from functools import partial

from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState

from vla_mbpo_ros.cdr import image_stamp, multiview_observation, rgb_image
from vla_mbpo_ros.conversions import compressed_image_to_rgb, stamp_to_seconds
from vla_mbpo_ros.core.data.image_transport import per_view
from vla_mbpo_ros.core.data.sync import ApproximateTimeSync
from vla_mbpo_ros.core.util.stats import RateStats
from vla_mbpo_ros.msg import MultiViewObservation
from vla_mbpo_ros.nodes._diagnostics import OK, WARN, DiagnosticsPublisher
from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS, SENSOR_QOS, ConfigError, declare, run_node

JOINTS = "joint_state"


class ObservationSyncNode(Node):
    def __init__(self) -> None:
        super().__init__("observation_sync")
        self.views = list(declare(self, "views", ["head", "wrist"], "camera views; the first is the reference (head)"))
        image_topic = declare(self, "image_topic", "/cameras/{view}/image_raw", "per-view topic pattern")
        compressed_topic = declare(self, "compressed_image_topic", "/cameras/{view}/image_raw/compressed",
                                   "per-view topic pattern of compressed views")
        transports = declare(self, "transports", ["raw"], "per view (or one for all): raw (Image) or compressed (CompressedImage)")
        joint_topic = declare(self, "joint_state_topic", "/joint_states")
        output_topic = declare(self, "output_topic", "/vla_mbpo/observation")
        slop = declare(self, "slop", 0.02, "max |stamp offset| of any member from the head view (s)")
        queue_size = declare(self, "queue_size", 10, "messages kept per stream while matching")
        stale_after = declare(self, "stale_after", 0.5, "a stream with no message for this long is stale (s)")
        min_gap_fraction = declare(self, "min_gap_fraction", 1.0, "next message assumed >= this x the smallest recent gap later")
        if not self.views:
            raise ConfigError("views: at least one camera view is required")
        try:
            self.transports = per_view(self.views, transports)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        try:
            self.sync = ApproximateTimeSync(
                [*self.views, JOINTS], slop=slop, queue_size=queue_size, reference=self.views[0], stale_after=stale_after,
                min_gap_fraction=min_gap_fraction,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.stats = RateStats(window_s=5.0)
        self.sequence = 0
        self.pub = self.create_publisher(MultiViewObservation, output_topic, OBSERVATION_QOS)
        for view in self.views:
            compressed = self.transports[view] == "compressed"
            topic = (compressed_topic if compressed else image_topic).format(view=view)
            self.create_subscription(CompressedImage if compressed else Image, topic, partial(self._on_image, view),
                                     SENSOR_QOS, raw=True)
        self.create_subscription(JointState, joint_topic, self._on_joint_state, SENSOR_QOS)
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=1.0)
        self._warned_stale: set[str] = set()

    def _on_image(self, view: str, raw: bytes, info) -> None:
        sec, nanosec = image_stamp(raw)
        self._on_message(view, sec + nanosec * 1e-9, raw, info)

    def _on_joint_state(self, msg: JointState, info) -> None:
        self._on_message(JOINTS, stamp_to_seconds(msg.header.stamp), msg, info)

    def _on_message(self, stream: str, stamp: float, msg, info) -> None:
        received = time.monotonic()
        # Host (system clock) time at which DDS received the message; the callback time if unknown.
        received_wall = info["received_timestamp"] * 1e-9 if info.get("received_timestamp") else time.time()
        self.stats.tick(stream, received)
        for matched in self.sync.add(stream, stamp, (msg, received_wall), received):
            self._publish(matched)

    def _publish(self, matched) -> None:
        last_receipt = max(received_wall for _, received_wall in matched.items.values())
        items = {stream: msg for stream, (msg, _) in matched.items.items()}
        try:
            images = [self._decoded(items[v]) if self.transports[v] == "compressed" else items[v] for v in self.views]
            data = multiview_observation(
                image_stamp(items[self.views[0]]), "base_link", self.sequence, self.views, images,
                [float(matched.offsets[v]) for v in self.views], float(matched.offsets[JOINTS]), float(matched.max_skew),
                items[JOINTS],
            )
        except (ValueError, struct.error) as err:
            self.get_logger().error(f"set not published: {err}", throttle_duration_sec=5.0)
            return
        self.pub.publish(data)
        latency_ms = (time.time() - last_receipt) * 1e3
        self.sequence += 1
        now = time.monotonic()
        self.stats.tick("sets", now)
        self.stats.add("skew_ms", matched.max_skew * 1e3, now)
        self.stats.add("latency_ms", latency_ms, now)

    def _decoded(self, raw: bytes) -> bytes:
        """A serialized CompressedImage -> the serialized rgb8 Image of its pixels (same header)."""
        started = time.monotonic()
        msg = deserialize_message(raw, CompressedImage)
        image = rgb_image((msg.header.stamp.sec, msg.header.stamp.nanosec), msg.header.frame_id, compressed_image_to_rgb(msg))
        self.stats.add("decode_ms", (time.monotonic() - started) * 1e3, time.monotonic())
        return image

    def _report(self):
        now = time.monotonic()
        stale = self.sync.stale_streams(now)
        for stream in set(stale) - self._warned_stale:
            self.get_logger().warning(f"stream {stream} is stale: no message for > {self.sync.stale_after} s")
        self._warned_stale = set(stale)
        values: dict[str, object] = {"sets_published": self.sequence, "clock_resets": self.sync.resets}
        values.update(self.stats.summary(now))  # rate/<stream>, rate/sets, skew_ms/p50, latency_ms/p99, ...
        values.update({f"dropped/{name}": s.dropped for name, s in self.sync.stats().items()})
        if stale:
            return WARN, f"stale: {', '.join(stale)}", values
        return OK, "synchronized", values


def main() -> int:
    return run_node(ObservationSyncNode)


if __name__ == "__main__":
    raise SystemExit(main())
