"""A child started with launcher_environment() dies with its launcher, even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from waiting import wait_until

from vla_mbpo_ros.core.util.process import LAUNCHER_PID_ENV, exit_with_launcher, launcher_environment

# launcher -> child. The child says (one line) once it follows its launcher; the launcher passes that on as
# the child's pid. Each then lives until killed: the 120 s sleep is the process's body, not a wait (it
# bounds the life of a process a broken test leaves behind).
_CHILD = ("from vla_mbpo_ros.core.util.process import exit_with_launcher; import time; exit_with_launcher(); "
          "print(flush=True); time.sleep(120)")
_LAUNCHER = (
    "import subprocess, sys, time; from vla_mbpo_ros.core.util.process import launcher_environment; "
    f"child = subprocess.Popen([sys.executable, '-c', {_CHILD!r}], env=launcher_environment(), stdout=subprocess.PIPE); "
    "child.stdout.readline(); print(child.pid, flush=True); time.sleep(120)"
)


def test_the_child_gets_sigterm_when_its_launcher_is_killed():
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(launcher.stdout.readline()))  # it follows its launcher from now on
    try:
        assert child.is_running()
        launcher.kill()
        launcher.wait(timeout=10)
        child.wait(timeout=10)  # not our child: psutil can tell that it ended, not its status
        assert not child.is_running()
    finally:
        if child.is_running():
            child.kill()


# The same child, started from a thread that ends once the child follows its launcher; the first argument
# says whether the child polls.
_THREAD_LAUNCHER = """
import subprocess, sys, threading, time
from vla_mbpo_ros.core.util.process import launcher_environment
child = ("from vla_mbpo_ros.core.util.process import exit_with_launcher; import time; "
         f"exit_with_launcher(poll={sys.argv[1]}); print(flush=True); time.sleep(120)")

def start():
    process = subprocess.Popen([sys.executable, "-c", child], env=launcher_environment(), stdout=subprocess.PIPE)
    process.stdout.readline()
    print(process.pid, flush=True)

thread = threading.Thread(target=start)
thread.start()
thread.join()
time.sleep(120)
"""


def _pending_signals(pid: int) -> set[int]:
    """Signals queued to ``pid`` and not yet delivered (its own and its thread group's)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    mask = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return {number + 1 for number in range(64) if mask >> number & 1}


@pytest.mark.parametrize("poll", [True, False])
def test_a_child_forked_from_a_thread_follows_the_process_only_when_polling(poll: bool):
    launcher = subprocess.Popen([sys.executable, "-c", _THREAD_LAUNCHER, str(poll)], stdout=subprocess.PIPE,
                                text=True)
    child = psutil.Process(int(launcher.stdout.readline()))
    try:
        # The forking thread has left the launcher (the kernel sends the parent-death signal while it exits).
        wait_until(lambda: psutil.Process(launcher.pid).num_threads() == 1, 10.0, "the launcher's forking thread to end")
        # The kernel's signal follows the thread, not the process (a dead child stays a zombie: never reaped).
        if poll:
            assert child.status() != psutil.STATUS_ZOMBIE and signal.SIGTERM not in _pending_signals(child.pid)
        else:
            wait_until(lambda: child.status() == psutil.STATUS_ZOMBIE, 10.0, "the child to die with the forking thread")
        launcher.kill()
        launcher.wait(timeout=10)
        child.wait(timeout=10)
        assert not child.is_running()
    finally:
        if child.is_running():
            child.kill()
        launcher.kill()


def test_no_launcher_means_nothing_to_follow(monkeypatch):
    monkeypatch.delenv(LAUNCHER_PID_ENV, raising=False)
    assert exit_with_launcher() is False
    assert launcher_environment({})[LAUNCHER_PID_ENV] == str(os.getpid())
