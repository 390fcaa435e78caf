"""The test runs' ROS domain allocator (test/ros_domains.py): locks across processes, the 1-101 walk, and
refusing a domain that a graph without locks is using."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ros_domains import DomainAllocator, domain_is_empty, ports_in_use, try_lock
from waiting import wait_until

TEST_DIR = Path(__file__).resolve().parent


def test_domains_walk_on_from_the_start_and_wrap_within_1_to_101(tmp_path):
    allocator = DomainAllocator(start=99, lock_dir=tmp_path)
    leases = [allocator.acquire() for _ in range(4)]
    assert [lease.domain for lease in leases] == [100, 101, 1, 2]
    leases[0].release()
    leases.append(allocator.acquire())
    assert leases[-1].domain == 3, "a released domain is not handed out again until the walk comes round"
    for lease in leases:
        lease.release()


def test_a_lease_excludes_every_other_one_until_released(tmp_path):
    first = try_lock(7, tmp_path)
    assert first is not None and try_lock(7, tmp_path) is None  # a second open file of this very process
    first.release()
    again = try_lock(7, tmp_path)
    assert again is not None and again.held
    again.release()
    assert not again.held


def test_a_domain_held_by_another_process_is_skipped_until_it_ends(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ros_domains import try_lock; from pathlib import Path; "
                               f"lease = try_lock(5, Path({str(tmp_path)!r})); print(lease.domain, flush=True); sys.stdin.read()"],
        cwd=TEST_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "5"  # the other process holds domain 5
        assert (tmp_path / "domain_5.lock").read_text().strip() == str(holder.pid)
        lease = DomainAllocator(start=4, lock_dir=tmp_path).acquire()
        assert lease.domain == 6
        lease.release()
        holder.stdin.close()  # the holder ends: the kernel drops its lock
        assert holder.wait(timeout=30) == 0
        with DomainAllocator(start=4, lock_dir=tmp_path).acquire() as lease:
            assert lease.domain == 5
    finally:
        holder.kill()


def test_running_out_of_domains_is_a_clear_error(tmp_path):
    held = [try_lock(domain, tmp_path) for domain in (1, 2)]
    with pytest.raises(RuntimeError, match=r"no free ROS domain among 1-2: all are locked by other test runs"):
        DomainAllocator(start=0, lock_dir=tmp_path, domains=[1, 2]).acquire()
    for lease in held:
        lease.release()
    with DomainAllocator(start=0, lock_dir=tmp_path, domains=[1, 2]).acquire() as lease:
        assert lease.domain == 1


def _free_domains(count: int) -> list:
    """``count`` domains this run owns (locked in the shared lock directory) and nothing here uses."""
    allocator = DomainAllocator(start=os.getpid(), usable=domain_is_empty)
    return [allocator.acquire() for _ in range(count)]


def test_a_bound_port_of_the_domain_makes_it_in_use():
    (lease,) = _free_domains(1)
    try:
        port = 7400 + 250 * lease.domain + 10  # the first participant's discovery (metatraffic unicast) port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))
            assert ports_in_use(lease.domain) == [port] and not domain_is_empty(lease.domain)
        assert domain_is_empty(lease.domain)
    finally:
        lease.release()


@pytest.mark.ros
def test_a_domain_with_a_live_ros_node_is_refused_and_free_again_once_it_exits(tmp_path):
    busy, other = _free_domains(2)
    node = subprocess.Popen(
        [sys.executable, "-c", "import rclpy; rclpy.init(); node = rclpy.create_node('foreign'); rclpy.spin(node)"],
        env={**os.environ, "ROS_DOMAIN_ID": str(busy.domain)})
    try:
        wait_until(lambda: ports_in_use(busy.domain), 60.0, f"the node's participant bound in domain {busy.domain}")
        # An allocator of another run (its own lock directory: these domains are not locked there).
        allocator = DomainAllocator(start=0, lock_dir=tmp_path, domains=[busy.domain, other.domain], usable=domain_is_empty)
        lease = allocator.acquire()
        assert lease.domain == other.domain and allocator.refused == [busy.domain]
        lease.release()
        node.kill()
        node.wait(timeout=30)
        assert domain_is_empty(busy.domain), "a dead participant's sockets are gone with it"
        with DomainAllocator(start=0, lock_dir=tmp_path, domains=[busy.domain], usable=domain_is_empty).acquire() as lease:
            assert lease.domain == busy.domain
    finally:
        node.kill()
        busy.release()
        other.release()
