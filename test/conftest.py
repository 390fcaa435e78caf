"""Fixtures shared by all tests: an isolated ROS graph per test run, node processes, a probe node."""

from __future__ import annotations

import os

import pytest

# One ROS domain per test run (by pid, overridable), discovery on this machine only: parallel runs
# and other ROS systems on the network never see our test traffic.
os.environ["ROS_DOMAIN_ID"] = os.environ.get("VLA_MBPO_TEST_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def ros():
    """The test's own rclpy node (probe), spinning in the background."""
    from ros_harness import RosTestNode

    probe = RosTestNode()
    yield probe
    probe.close()


@pytest.fixture
def launch_node(tmp_path):
    """Factory: start a node module as a process; every process is stopped at teardown."""
    from ros_harness import NodeProcess

    started: list[NodeProcess] = []

    def start(module: str, name: str, **kwargs) -> NodeProcess:
        process = NodeProcess(module, name, tmp_path, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(timeout=10.0)
