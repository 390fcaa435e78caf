"""What every node executable shares: init, the executor, clean shutdown, QoS, typed parameters.

Execution model (README, "Runtime"): every node spins one rclpy ``SingleThreadedExecutor`` on its
main thread, and its callbacks are short (convert a message, take a lock, hand work on). Work
that must not wait behind callbacks, or would hold them up, runs on the node's own threads: the
executor's control loop, inference and hot-swap check, the recorder's dataset writer, the sim's
physics, the episode manager's schedule. No node uses rclpy's ``MultiThreadedExecutor``: in the
Jazzy and Kilted wheels it hands a task that is still queued in its thread pool out again (rclpy
issue #1452, fixed upstream after both), so its loop can spin without blocking, and it rebuilds
its wait set in Python for every callback; measured here it cost up to a whole core per node.

This module is also the one place that deals with differences between the rclpy versions of the
supported distributions (Jazzy 7.x, Kilted 9.x).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor

# Raised by rcl calls on a context that is shut down; public in neither Jazzy's nor Kilted's rclpy.
from rclpy._rclpy_pybind11 import RCLError  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from vla_mbpo_ros.core.util.process import exit_with_launcher

# QoS of the interface contract (README, "ROS interface").
SENSOR_QOS = qos_profile_sensor_data
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Observation sets: reliable, and a history of 10 (1 s at 10 fps) so that a reader stalled for a
# moment (the recorder while its writer holds the GIL) still gets every set.
OBSERVATION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)
# The e-stop is a level, not an edge: its source publishes the current state reliably and transient
# local, again every period, so a reader that matches late (discovery still running right after the
# publisher was created) still gets the last state, and a silent source can be told from a calm one.
ESTOP_QOS = LATCHED_QOS


class ConfigError(ValueError):
    """Bad parameter value: the message names the parameter; the node refuses to start."""


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _coerce(value: Any, default: Any) -> Any:
    """``value`` (a parameter override) as the type of ``default``; TypeError if it can't be.
    Integers are numbers: ``3`` where a float is declared means ``3.0``."""
    kind = type(default)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"a list, got {value!r}")
        if not default:
            return list(value)
        return [_coerce(item, default[0]) for item in value]
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise TypeError(f"{_TYPE_NAMES.get(kind, kind.__name__)}, got {type(value).__name__} {value!r}")
    return value


def declare(node: Node, name: str, default: Any, description: str = "", read_only: bool = False) -> Any:
    """Declare a parameter with a description and return its value, typed like ``default``.

    An override of another type is a ConfigError naming the node, the parameter and the type,
    except an integer for a float parameter, which is taken as that number.
    """
    if isinstance(default, (list, tuple)) and not default:
        raise TypeError(f"parameter {name}: empty list defaults need an explicit type")
    if isinstance(default, tuple):
        default = list(default)
    # Read the override with any type first, then declare the parameter statically typed with the
    # coerced value (rclpy itself raises InvalidParameterTypeException with a traceback).
    override = node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True)).value
    try:
        value = _coerce(override, default)
    except TypeError as err:
        raise ConfigError(f"node {node.get_name()}: parameter {name}: expected {err}") from None
    node.undeclare_parameter(name)
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    return node.declare_parameter(name, value, descriptor, ignore_override=True).value


T = typing.TypeVar("T")


def declare_config(node: Node, cls: type[T], prefix: str = "") -> T:
    """Every field of the config dataclass ``cls`` as a parameter ``<prefix>.<field>`` (defaults
    from the dataclass); the instance is built by the core's config loader, whose ValueError
    (naming the field) becomes a ConfigError."""
    from vla_mbpo_ros.core.util.config import load_config

    dotted = f"{prefix}." if prefix else ""
    values = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default) or isinstance(default, dict) or default == ():
            continue  # nested sections are not ROS parameters; nor are lists without a typed default
        values[f.name] = declare(node, dotted + f.name, default)
    try:
        return load_config(cls, values, section=prefix)
    except ValueError as err:
        raise ConfigError(f"node {node.get_name()}: parameter {err}") from err


@contextmanager
def publishing_until_shutdown(node: Node):
    """For publishing from a node's own worker thread: a publish racing the SIGINT shutdown of the
    context is dropped silently instead of raising; any other error still raises."""
    try:
        yield
    except RCLError:
        if node.context.ok():
            raise


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
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
        executor = SingleThreadedExecutor()
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
