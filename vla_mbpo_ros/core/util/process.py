"""Process lifetime: a child process must never outlive the process that started it.

An orphaned node would keep publishing on the robot's topics after its launcher is gone (killed,
crashed, or a test that timed out), and an orphaned training worker would keep a GPU busy. The
launcher puts its pid in the child's environment; the child asks the kernel for a signal when its
parent dies (Linux ``PR_SET_PDEATHSIG``) and falls back to polling its parent pid elsewhere.

The kernel's signal follows the *thread* that forked the child, not the process: a child started from a
worker thread (an rclpy executor callback) must poll instead, or it dies with that thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

LAUNCHER_PID_ENV = "VLA_MBPO_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def launcher_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child started by this process: this process is its launcher."""
    return {**(os.environ if env is None else env), LAUNCHER_PID_ENV: str(os.getpid())}


def exit_with_launcher(parent_pid: int | None = None, sig: int = signal.SIGTERM, poll: bool = False) -> bool:
    """Deliver ``sig`` to this process when ``parent_pid`` (default: ``$VLA_MBPO_LAUNCHER_PID``)
    is gone; ``poll`` checks every 0.5 s instead of asking the kernel (for children forked from a thread
    that may end first). Returns False when there is no launcher to follow."""
    if parent_pid is None:
        value = os.environ.get(LAUNCHER_PID_ENV, "")
        if not value.isdigit():
            return False
        parent_pid = int(value)
    if sys.platform.startswith("linux") and not poll:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_poll_parent, args=(parent_pid, sig), daemon=True, name="exit-with-launcher").start()
    if os.getppid() != parent_pid:  # the launcher died before the request above: nobody will signal us
        os.kill(os.getpid(), sig)
    return True


def _poll_parent(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), sig)
