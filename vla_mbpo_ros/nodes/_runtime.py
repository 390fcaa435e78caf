"""What every node executable shares: init, executor, clean shutdown on SIGINT/SIGTERM, QoS."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from vla_mbpo_ros.core.process import exit_with_launcher

# QoS of the interface contract (README, "ROS interface").
SENSOR_QOS = qos_profile_sensor_data
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
OBSERVATION_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


class ConfigError(ValueError):
    """Bad parameter value: the message names the parameter; the node refuses to start."""


def declare(node: Node, name: str, default: Any, description: str = "", read_only: bool = False) -> Any:
    """Declare a parameter with a description and return its value (typed like ``default``)."""
    from rcl_interfaces.msg import ParameterDescriptor

    if isinstance(default, (list, tuple)) and not default:
        raise TypeError(f"parameter {name}: empty list defaults need an explicit type")
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    return node.declare_parameter(name, default, descriptor).value


@contextmanager
def publishing_until_shutdown(node: Node):
    """For publishing from a node's own worker thread: a publish racing the SIGINT shutdown of the
    context is dropped silently instead of raising; any other error still raises."""
    try:
        yield
    except RCLError:
        if node.context.ok():
            raise


def run_node(factory: Callable[[], Node], threads: int = 2, args: list[str] | None = None) -> int:
    """Create the node, spin it until SIGINT/SIGTERM or until it shuts its context down itself (a
    node whose work is finished), clean up, and return the exit code: the node's ``exit_code()``
    if it has one, else 0.

    A ConfigError while constructing the node is reported in one line and exits with code 2, so a
    launcher shows why a node refused to start instead of a traceback.
    """
    exit_with_launcher()  # SIGTERM (a clean shutdown) if the launcher that started us dies
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()
    except ConfigError as err:
        print(f"[error] configuration: {err}", file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if node is not None or rclpy.ok():
            raise
        # SIGINT/SIGTERM while the node was still being built: rclpy's handler shut the context
        # down under the constructor. That is a stop, not a crash.
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    exit_code = getattr(node, "exit_code", None)
    return exit_code() if exit_code is not None else 0
