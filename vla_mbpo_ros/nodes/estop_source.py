"""E-stop source: the operator's e-stop input on /vla_mbpo/estop as a level, republished every period.

Glue around ``core.control.estop_source.EStopSource``. Publishes std_msgs/Bool (true = pressed) at
``rate`` Hz, reliable + transient local (``ESTOP_QOS``): a press published right after start-up still
reaches an executor whose discovery is not finished, and the executor of a hardware profile
(``estop_source_timeout_s`` > 0) holds the arm when this node dies. A change of level is published at
once, not at the next period. Inputs: a /joy button (``joy_button``), services ~/press and ~/release.
"""

from __future__ import annotations

import time

from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vla_mbpo_ros.core.control.estop_source import EStopSource, EStopSourceConfig
from vla_mbpo_ros.nodes._runtime import ESTOP_QOS, SENSOR_QOS, declare, declare_config, publishing_until_shutdown, run_node


class EStopSourceNode(Node):
    def __init__(self) -> None:
        super().__init__("estop_source")
        self.config = declare_config(self, EStopSourceConfig)
        joy_topic = declare(self, "joy_topic", "/joy")
        self.source = EStopSource(self.config, time.monotonic())
        self.pub = self.create_publisher(Bool, "/vla_mbpo/estop", ESTOP_QOS)
        if self.config.joy_button >= 0:
            self.create_subscription(Joy, joy_topic, self._on_joy, SENSOR_QOS)
        self.create_service(Trigger, "~/press", self._on_press)
        self.create_service(Trigger, "~/release", self._on_release)
        self._level: bool | None = None
        self.create_timer(1.0 / self.config.rate, self._publish)
        self._publish()
        self.get_logger().info(f"e-stop source at {self.config.rate:g} Hz"
                               + (f", /joy button {self.config.joy_button}" if self.config.joy_button >= 0 else ""))

    def _on_joy(self, msg: Joy) -> None:
        self.source.joy(msg.buttons, time.monotonic())
        self._publish(changes_only=True)

    def _on_press(self, _request, response):
        self.source.press()
        self._publish()
        response.success, response.message = True, "e-stop pressed"
        return response

    def _on_release(self, _request, response):
        self.source.release()
        pressed, why = self._publish()
        response.success = not pressed
        response.message = "e-stop released" if not pressed else f"still pressed: {why}"
        return response

    def _publish(self, changes_only: bool = False) -> tuple[bool, str]:
        pressed, why = self.source.pressed(time.monotonic())
        if pressed != self._level:
            log = self.get_logger().error if pressed else self.get_logger().info
            log(f"e-stop {'PRESSED' if pressed else 'released'} ({why})")
        elif changes_only:
            return pressed, why
        self._level = pressed
        with publishing_until_shutdown(self):
            self.pub.publish(Bool(data=pressed))
        return pressed, why


def main() -> int:
    return run_node(EStopSourceNode)


if __name__ == "__main__":
    raise SystemExit(main())
