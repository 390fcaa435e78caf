"""Pip-only runner: start a bringup profile's nodes as processes, like ``ros2 launch`` would.

    python -m vla_mbpo_ros.bringup finetune [robot:=sim] [config:=extra.yaml] [output_dir:=...]
    python -m vla_mbpo_ros.bringup deploy --list

Each node's output is prefixed with its name. SIGINT/SIGTERM are forwarded to every node; a node
that does not exit within the grace period is terminated, then killed. When a required node dies
the others are shut down and the runner exits non-zero, naming the node, unless it respawns
(``NodeSpec.respawn``: started again after ``RESPAWN_DELAY_S``, as launch_ros' ``respawn``); a
required node that exits 0 (its work is done) shuts the rest down cleanly and the runner exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vla_mbpo_ros.bringup import (
    LAUNCH_ARGUMENTS,
    RESPAWN_DELAY_S,
    PROFILES,
    ResolvedNode,
    dds_profile_environment,
    discovery_warning,
    parse_cli_arguments,
    resolve,
    ros_arguments,
    write_parameters,
)
from vla_mbpo_ros.core.util.process import exit_with_launcher, launcher_environment

GRACE_PERIOD_S = 10.0
# A node started again after it died talks UDP only: Fast DDS 2.14 (Jazzy) cannot reuse the shared-memory
# port of a SIGKILLed participant, and the others keep writing into the dead one's segment, so the new
# process was seen never to be discovered (eProsima/Fast-DDS#5053). UDP costs a copy, not correctness.
RESPAWN_DDS_ENVIRONMENT = {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}
DDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


@dataclass
class RunningNode:
    node: ResolvedNode
    process: subprocess.Popen
    exit_seen: bool = False
    respawns: int = 0


def _pump_output(name: str, stream, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
            sys.stdout.flush()
    stream.close()


def start(node: ResolvedNode, lock: threading.Lock, parameters_dir: Path, respawned: bool = False) -> RunningNode:
    cmd = [sys.executable, "-u", "-m", node.module, *ros_arguments(node, write_parameters(node, parameters_dir))]
    # Own process group: a terminal's Ctrl-C reaches only the runner, which forwards it, so the
    # shutdown order and grace period are the runner's.
    # Every node exits when the runner dies, even by SIGKILL: no orphan keeps publishing.
    env = launcher_environment({**os.environ, **dds_profile_environment()})
    if respawned:
        env.update(RESPAWN_DDS_ENVIRONMENT)
        for name in DDS_PROFILE_VARIABLES:
            env.pop(name, None)
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    threading.Thread(target=_pump_output, args=(node.name, process.stdout, lock), daemon=True).start()
    return RunningNode(node, process)


def shutdown(running: list[RunningNode], sig: int = signal.SIGINT) -> None:
    for r in running:
        if r.process.poll() is None:
            r.process.send_signal(sig)
    deadline = time.monotonic() + GRACE_PERIOD_S
    for r in running:
        try:
            r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[bringup] {r.node.name} did not exit in {GRACE_PERIOD_S:.0f} s: terminating", flush=True)
            r.process.terminate()
            try:
                r.process.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait()


def run(profile: str, arguments: dict[str, str]) -> int:
    exit_with_launcher()  # started by a program of ours (a test): SIGTERM, a clean shutdown, when it dies
    nodes = resolve(profile, arguments)
    if warning := discovery_warning(arguments.get("machine", "all")):
        print(f"[bringup] warning: {warning}", flush=True)
    if not nodes:
        print(f"[bringup] profile {profile} has no nodes for {arguments}", flush=True)
        return 1
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    lock = threading.Lock()
    parameters_dir = Path(tempfile.mkdtemp(prefix=f"vla_mbpo_{profile}_"))  # the bringup's values per node
    running = [start(node, lock, parameters_dir) for node in nodes]
    print(f"[bringup] {profile}: started {', '.join(r.node.name for r in running)}", flush=True)
    failure = ""
    while not stop.wait(0.1):
        for i, r in enumerate(running):
            code = r.process.poll()
            if code is None or r.exit_seen:
                continue
            r.exit_seen = True
            if r.node.respawn and code != 0:
                print(f"[bringup] {r.node.name} exited with code {code}; respawning in {RESPAWN_DELAY_S:g} s", flush=True)
                if stop.wait(RESPAWN_DELAY_S):
                    break
                running[i] = start(r.node, lock, parameters_dir, respawned=True)
                running[i].respawns = r.respawns + 1
                continue
            if r.node.required and code == 0:
                # A required node that finished its work (e.g. the episode manager after its last
                # iteration) ends the run, like launch's on_exit=Shutdown.
                print(f"[bringup] required node {r.node.name} finished; shutting down {profile}", flush=True)
                stop.set()
                break
            if r.node.required:
                failure = f"required node {r.node.name} exited with code {code}; shutting down {profile}"
                stop.set()
                break
            print(f"[bringup] optional node {r.node.name} exited with code {code}; continuing", flush=True)
    if failure:
        print(f"[bringup] error: {failure}", file=sys.stderr, flush=True)
    shutdown(running, received[0] if received else signal.SIGINT)
    shutil.rmtree(parameters_dir, ignore_errors=True)
    codes = {r.node.name: r.process.returncode for r in running}
    # A node that dies of the very signal it was sent (e.g. SIGINT while still importing, before
    # it could install a handler) stopped as asked.
    stopped = (0, None, -(received[0] if received else signal.SIGINT))
    bad = {name: code for name, code in codes.items() if code not in stopped}
    if failure:
        return 1
    if bad:
        print(f"[bringup] nodes exited uncleanly: {bad}", file=sys.stderr, flush=True)
        return 1
    print(f"[bringup] {profile}: all nodes exited cleanly", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_mbpo_ros.bringup",
        description="Start a bringup profile without launch_ros. Launch arguments: "
        + "; ".join(f"{a.name}:= ({a.description}, default {a.default!r})" for a in LAUNCH_ARGUMENTS),
    )
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("arguments", nargs="*", metavar="name:=value")
    parser.add_argument("--list", action="store_true", help="print the nodes and their arguments, start nothing")
    opts = parser.parse_args(argv)
    try:
        arguments = parse_cli_arguments(opts.arguments)
        if opts.list:
            for node in resolve(opts.profile, arguments):
                flag = ("required" if node.required else "optional") + (", respawns" if node.respawn else "")
                args = " ".join(ros_arguments(node, Path(f"<{node.name}.bringup.yaml>") if node.parameters else None))
                print(f"{node.name} ({flag}): python -m {node.module} {args}")
                if node.parameters:
                    print(f"    <{node.name}.bringup.yaml>: {node.parameters}")
            return 0
        return run(opts.profile, arguments)
    except ValueError as err:
        print(f"[bringup] error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
