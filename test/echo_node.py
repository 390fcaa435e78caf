"""A second process for interface tests: echoes every custom message and serves the custom services."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from vla_mbpo_ros import msg, srv

MESSAGE_TYPES = ("MultiViewObservation", "ActionChunk", "SafetyStatus", "EpisodeEvent", "PolicyUpdate")


class EchoNode(Node):
    def __init__(self) -> None:
        super().__init__("echo")
        self._pubs = {}
        for name in MESSAGE_TYPES:
            msg_type = getattr(msg, name)
            self._pubs[name] = self.create_publisher(msg_type, f"echo_out/{name}", 10)
            self.create_subscription(msg_type, f"echo_in/{name}", lambda m, n=name: self._pubs[n].publish(m), 10)
        self.create_service(srv.StartEpisode, "echo/start_episode", self._start)
        self.create_service(srv.EndEpisode, "echo/end_episode", self._end)

    def _start(self, request, response):
        response.success = True
        response.message = f"started: {request.task} ({request.source})"
        response.episode_index = len(request.task)
        return response

    def _end(self, request, response):
        response.success = request.outcome != srv.EndEpisode.Request.OUTCOME_DISCARD
        response.message = f"outcome {request.outcome}"
        response.episode_index = 7
        return response


def main() -> None:
    rclpy.init()
    node = EchoNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
