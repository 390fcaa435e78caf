"""Fixtures shared by all tests: an isolated ROS graph per test run, node processes, a probe node."""

from __future__ import annotations

import os
import signal

import pytest
from ros_domains import DomainAllocator, domain_is_empty

# Discovery on this machine only: other ROS systems on the network never see our test traffic.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Ctrl-C reaches the processes the tests start as it would from a terminal. A run started in the background
# by a shell without job control (a CI script, `make test &`) inherits SIGINT ignored, its children too, and
# a Python program that starts with SIGINT ignored never raises KeyboardInterrupt: a test stopping a LeRobot
# CLI with Ctrl-C would wait on a process that cannot hear it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Each test gets a ROS domain of its own, held (locked) for its lifetime and checked empty before use
# (ros_domains.py): nodes of another test, of a parallel test run or of any other graph on this machine
# never talk to this test's nodes. The walk starts at a domain picked by pid (VLA_MBPO_TEST_DOMAIN_ID picks
# it instead) and goes on from there, so the domain a test just left is not reused soon.
_domains = DomainAllocator(
    start=int(os.environ["VLA_MBPO_TEST_DOMAIN_ID"]) - 1 if os.environ.get("VLA_MBPO_TEST_DOMAIN_ID") else os.getpid(),
    usable=domain_is_empty,
)


@pytest.fixture(scope="module")
def module_ros_domain():
    """One domain for a module whose module-scoped nodes (e.g. a sim robot) serve all its tests:
    request it from that fixture, and the module's tests run in the same domain."""
    with _domains.acquire() as lease, pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(lease.domain))
        yield lease.domain


@pytest.fixture(autouse=True)
def ros_domain(request, monkeypatch):
    if "module_ros_domain" in request.fixturenames:
        domain = request.getfixturevalue("module_ros_domain")
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        yield domain
        return
    with _domains.acquire() as lease:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(lease.domain))
        yield lease.domain


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
