"""A node in an rclpy Context of its own, for code that runs inside someone else's process.

LeRobot's CLIs own their process: its Ctrl-C (KeyboardInterrupt), its logging, and any other ROS
user in it. So a session never touches rclpy's default context (no ``rclpy.init()`` /
``rclpy.shutdown()``), installs no signal handlers, spins its node on a thread of its own with a
single-threaded executor, and ``close()`` shuts down its context only; it is idempotent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions


class RosSession:
    def __init__(self, node_name: str, domain_id: int | None = None) -> None:
        self.context = Context()
        # args=[]: the host program's argv is not ours to parse (rcl would take --ros-args from it).
        rclpy.init(args=[], context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = Node(node_name, context=self.context, start_parameter_services=False)
            self._executor = SingleThreadedExecutor(context=self.context)
            self._executor.add_node(self.node)
        except BaseException:
            self.context.try_shutdown()
            raise
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[object, float]] = {}  # topic -> (newest message, monotonic receipt time)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._spin, name=f"{node_name}_spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                return

    # ------------------------------------------------------------------ newest message per topic
    def keep_latest(self, msg_type, topic: str, qos: QoSProfile, on_message=None) -> None:
        """Subscribe to ``topic`` and keep its newest message (``latest``); ``on_message`` is
        called with it on the spin thread, after it is stored."""

        def callback(msg) -> None:
            with self._lock:
                self._latest[topic] = (msg, time.monotonic())
            if on_message is not None:
                on_message(msg)

        self.node.create_subscription(msg_type, topic, callback, qos)

    def latest(self, topic: str, max_age_s: float):
        """The newest message on ``topic``; TimeoutError naming the topic when there is none or it
        is older than ``max_age_s`` (receipt time)."""
        with self._lock:
            entry = self._latest.get(topic)
        if entry is None:
            raise TimeoutError(f"{topic}: no message received")
        msg, received = entry
        age = time.monotonic() - received
        if age > max_age_s:
            raise TimeoutError(f"{topic}: the newest message is {age:.2f} s old (more than {max_age_s} s)")
        return msg

    def wait_for_messages(self, topics: Iterable[str], timeout_s: float, hint: str = "") -> None:
        """Until every topic has delivered a message; TimeoutError naming those that have not."""
        topics = list(topics)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                missing = [t for t in topics if t not in self._latest]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message on {', '.join(missing)} after {timeout_s:.0f} s{hint}")
            time.sleep(0.02)

    def wait_for_matches(self, publisher, timeout_s: float, settle_s: float = 5.0) -> int:
        """Until ``publisher`` is matched (DDS) to a reader, at most ``timeout_s``, and then to every
        reader the graph knows on its topic, at most ``settle_s`` more (a reader with incompatible
        QoS never matches), so that its first messages reach them. Returns the matched count."""
        deadline = time.monotonic() + timeout_s
        while publisher.get_subscription_count() < 1:
            if time.monotonic() > deadline:
                return 0
            time.sleep(0.02)
        deadline = time.monotonic() + settle_s
        while publisher.get_subscription_count() < self.node.count_subscribers(publisher.topic_name):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return publisher.get_subscription_count()

    # ------------------------------------------------------------------ services
    def call(self, srv_type, name: str, request, timeout_s: float):
        """The service's response; TimeoutError naming the service when it is absent or silent."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise TimeoutError(f"service {name} is not available after {timeout_s:.0f} s")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _future: done.set())
            if not done.wait(timeout_s):
                raise TimeoutError(f"service {name} did not answer within {timeout_s:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    # ------------------------------------------------------------------ end
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop spinning, destroy the node, shut this session's context down (not rclpy's default)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
