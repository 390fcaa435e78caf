"""Publishing /diagnostics without diagnostic_updater (not installable from PyPI): one status per
node, with key/value pairs, at a fixed period. Viewable with rqt_robot_monitor on a workstation."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE

Report = tuple[int, str, Mapping[str, object]]  # (level, message, values)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class DiagnosticsPublisher:
    """Calls ``report()`` every ``period`` s and publishes it as this node's DiagnosticStatus."""

    def __init__(self, node: Node, report: Callable[[], Report], period: float = 1.0, hardware_id: str = "") -> None:
        self._node = node
        self._report = report
        self._hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        level, message, values = self._report()
        status = DiagnosticStatus(
            level=level,
            name=f"vla_mbpo_ros: {self._node.get_name()}",
            message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(array)
