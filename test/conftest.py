"""Fixtures shared by all tests: an isolated ROS graph per test run, node processes, a probe node."""

from __future__ import annotations

import itertools
import os

import pytest

# Discovery on this machine only: other ROS systems on the network never see our test traffic.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Each test gets its own ROS domain (numbered on from one picked by pid, overridable), so a node
# that outlived an earlier test, one whose endpoints are still announced after a kill -9, or a
# parallel run never talks to this test's nodes.
_FIRST_DOMAIN = int(os.environ.get("VLA_MBPO_TEST_DOMAIN_ID", os.getpid() % 101))
_domains = itertools.count()


def _next_domain() -> int:
    # 1-101: higher domains' DDS ports run into Linux's ephemeral port range (ROS 2 docs), and
    # large samples (images) then stop arriving.
    return (_FIRST_DOMAIN + next(_domains)) % 101 + 1


@pytest.fixture(scope="module")
def module_ros_domain():
    """One domain for a module whose module-scoped nodes (e.g. a sim robot) serve all its tests:
    request it from that fixture, and the module's tests run in the same domain."""
    with pytest.MonkeyPatch.context() as patch:
        domain = _next_domain()
        patch.setenv("ROS_DOMAIN_ID", str(domain))
        yield domain


@pytest.fixture(autouse=True)
def ros_domain(request, monkeypatch) -> int:
    if "module_ros_domain" in request.fixturenames:
        domain = request.getfixturevalue("module_ros_domain")
    else:
        domain = _next_domain()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


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
