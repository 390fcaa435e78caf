"""ROS domains owned by one test run.

Every test runs its nodes in a ROS domain of its own, so nodes of another test, of another test run on this
machine, or of any other graph here never talk to its nodes (seen before this: a 64 px test received a 96 px
image from another graph). A domain is owned by holding an exclusive ``flock`` on a lock file per domain
(``<lock_dir>/domain_<id>.lock``) for as long as the test uses it: two processes can never hold the same
one, and the kernel releases it when its holder dies, however it dies. A domain that is free of locks may
still be in use by a graph that takes none (a bench, a demo, a checkout with an older conftest): ``usable``
looks at the domain before it is handed out, e.g. ``domain_is_empty`` (no DDS participant on this machine).

Domains stay in 1-101: higher domains' DDS ports run into Linux's ephemeral port range (ROS 2 docs), and
large samples (images) then stop arriving.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

DOMAINS = range(1, 102)
LOCK_DIR = Path(tempfile.gettempdir()) / "vla_mbpo_ros_domains"
RTPS_PORT_BASE, RTPS_DOMAIN_GAIN = 7400, 250  # the RTPS spec's port mapping (Fast DDS and Cyclone use it)
UDP_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


class DomainLease:
    """One domain, held (locked) until ``release()``."""

    def __init__(self, domain: int, fd: int) -> None:
        self.domain = domain
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases its flock
            self._fd = None

    def __enter__(self) -> DomainLease:
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


def try_lock(domain: int, lock_dir: Path = LOCK_DIR) -> DomainLease | None:
    """The domain's lease, or None when another open file (this process or another) holds it."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"domain_{domain}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
    return DomainLease(domain, fd)


class DomainAllocator:
    """Hands out domains walking on from ``start``, skipping the ones another holder has locked and the ones
    ``usable`` refuses. Walking on (rather than reusing the domain just released) keeps a test away from the
    endpoints of the previous tests' nodes: those of a node killed with -9 stay announced for 20 s."""

    def __init__(self, start: int, lock_dir: Path = LOCK_DIR, domains: Iterable[int] = DOMAINS,
                 usable: Callable[[int], bool] | None = None) -> None:
        self.domains = list(domains)
        if not self.domains:
            raise ValueError("no domains to allocate from")
        self.lock_dir = lock_dir
        self.usable = usable
        self._next = start % len(self.domains)
        self.refused: list[int] = []  # unlocked domains that ``usable`` refused (in use by other graphs)

    def acquire(self, check: bool = True) -> DomainLease:
        """The next free domain; ``check=False`` skips ``usable``. RuntimeError when every domain is taken."""
        for _ in range(len(self.domains)):
            domain = self.domains[self._next]
            self._next = (self._next + 1) % len(self.domains)
            lease = try_lock(domain, self.lock_dir)
            if lease is None:
                continue
            if check and self.usable is not None and not self.usable(domain):
                lease.release()
                self.refused.append(domain)
                continue
            return lease
        raise RuntimeError(f"no free ROS domain among {self.domains[0]}-{self.domains[-1]}: all are locked by other "
                           f"test runs ({self.lock_dir}) or in use by other graphs ({sorted(set(self.refused))})")


def ports_in_use(domain: int, tables: Iterable[Path] = UDP_TABLES) -> list[int]:
    """UDP ports of ``domain`` that a socket on this machine is bound to: a live DDS participant in that
    domain binds its discovery (and data) ports there, by the RTPS port mapping (7400 + 250 x domain, and
    the 250 ports after it); a dead one's sockets are gone at once. Unlike the graph (which a newcomer learns
    by discovery, up to 2 s here under load, and which keeps a node killed with -9 for 20 s) this is exact
    and instant."""
    first = RTPS_PORT_BASE + RTPS_DOMAIN_GAIN * domain
    ports = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            port = int(line.split()[1].rsplit(":", 1)[1], 16)  # local_address is HEXIP:HEXPORT
            if first <= port < first + RTPS_DOMAIN_GAIN:
                ports.add(port)
    return sorted(ports)


def domain_is_empty(domain: int) -> bool:
    """``usable`` for DomainAllocator: no DDS participant on this machine in ``domain``."""
    return not ports_in_use(domain)
