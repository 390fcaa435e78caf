"""Test harness for real rclpy processes: node processes, the test's own node, waiting with timeouts.

No ROS mocks: nodes run as separate OS processes exchanging real messages over Fast DDS on this
machine only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a per-test ROS_DOMAIN_ID set in conftest).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from waiting import DEFAULT_TIMEOUT, wait_until

from vla_mbpo_ros.core.util.process import launcher_environment


def _format_param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_param(v) if not isinstance(v, str) else f"'{v}'" for v in value) + "]"
    return str(value)


class NodeProcess:
    """One node executable (``python -m <module>``) in its own process, output captured to a file."""

    def __init__(
        self,
        module: str,
        name: str,
        log_dir: Path,
        params: dict[str, Any] | None = None,
        param_files: list[Path] | None = None,
        remappings: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        argv = [sys.executable, "-u", "-m", module, "--ros-args", "-r", f"__node:={name}"]
        for path in param_files or []:
            argv += ["--params-file", str(path)]
        for key, value in (params or {}).items():
            argv += ["-p", f"{key}:={_format_param(value)}"]
        for source, target in (remappings or {}).items():
            argv += ["-r", f"{source}:={target}"]
        self._log = open(self.log_path, "wb")
        # The node dies with this test process (launcher_environment), whatever ends it.
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
            env=launcher_environment({**os.environ, **(env or {})}),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Signal the node and wait for it; kill it if it hangs (then the test sees -9)."""
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


class RosTestNode:
    """The test's own rclpy node, spun on a background thread in a private context."""

    def __init__(self, name: str = "test_probe") -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                if self.context.ok():
                    raise

    def subscribe(self, msg_type, topic: str, qos: QoSProfile | int = 10) -> list:
        """Messages received on ``topic``, appended as they arrive."""
        received: list = []

        def callback(msg):
            with self._lock:
                received.append(msg)

        self.node.create_subscription(msg_type, topic, callback, qos)
        return received

    def publisher(self, msg_type, topic: str, qos: QoSProfile | int = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: self.node.count_publishers(topic) >= count, timeout, f"{count} publisher(s) on {topic}")

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: self.node.count_subscribers(topic) >= count, timeout, f"{count} subscriber(s) on {topic}")

    def node_names(self) -> set[str]:
        return {name for name, _ns in self.node.get_node_names_and_namespaces()}

    def call(self, srv_type, name: str, request, timeout: float = DEFAULT_TIMEOUT):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available after {timeout:.0f} s")
            future = client.call_async(request)
            wait_until(future.done, timeout, f"response from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
