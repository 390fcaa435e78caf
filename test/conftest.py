"""Fixtures shared by all tests: an isolated ROS graph per test run, node processes, a probe node."""

from __future__ import annotations

import itertools
import os

import pytest

# Discovery on this machine only: other ROS systems on the network never see our test traffic.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Each test module gets its own ROS domain (starting from one picked by pid, overridable), so a
# process that outlived an earlier module, or a parallel run, never talks to this module's nodes.
# Module scope: a module's shared fixtures (a sim robot serving all its tests) share its domain.
_FIRST_DOMAIN = int(os.environ.get("VLA_MBPO_TEST_DOMAIN_ID", 1 + os.getpid() % 200))
_domains = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def ros_domain():
    domain = (_FIRST_DOMAIN + next(_domains)) % 232 + 1  # Fast DDS' localhost ports allow 0-232
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(domain))
        yield domain


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
