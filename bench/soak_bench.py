"""An unattended run with faults: the finetune profile on the simulated arm, faults injected at random times.

    python bench/soak_bench.py --minutes 60 [--out /tmp/soak] [--seed 0]

Starts ``python -m vla_mbpo_ros.bringup finetune`` (the pip-only runner, exactly what `make demo` runs; the
loop at test sizes: 32 px, a random-init tiny world model, 2 episodes per iteration) seeded with 4 recorded
demonstrations, and injects, in a seeded random order at random times:

  world_model_kill  SIGKILL of world_model_node mid-phase (the runner respawns it: NodeSpec.respawn; it
                    resumes the unfinished iteration; its training worker exits with it);
  recorder_kill     SIGKILL of the recorder (respawned the same way; the episode it was recording is not
                    saved, so the episode manager discards and re-runs it);
  camera_stall      the simulated robot's process stopped for 2 s (SIGSTOP/SIGCONT): no camera frame, no
                    joint state; the executor must hold, the manager resets and goes on;
  rogue_policy      a PolicyUpdate for an unsigned, well-formed checkpoint under the executor's trusted root;
  disk_full         the run's filesystem (a tmpfs of its own, 1.5 GB) filled to below the recorder's
                    min_free_disk_mb (200 MB) for 60 s: the recorder refuses new episodes, the episode
                    manager does not move the arm without a recording and retries (needs root for the
                    mount; skipped otherwise).

The respawning is the bringup runner's; with ``ros2 launch`` it is launch_ros' ``respawn`` of the same
nodes (bringup/ros_launch.py).

Watched from outside: every arm command (JointTrajectory) must be finite, within the position limits of
config/robots/so101.yaml and within max_step of the command before it (unsafe = any that is not); every
episode the manager labelled SUCCESS/FAILURE must be in the dataset at the end (lost = labelled - saved);
iterations = policy versions the executor swapped in; recovery per fault (s): world model -> its next
status message, recorder -> the next saved episode (which may wait for a policy update), camera -> the
first observation set captured after the robot resumed, rogue -> its rejection on /vla_mbpo/policy_status
(and it never runs). Last line:

    soak_bench: minutes=... faults=... unsafe=0 lost=0 iterations=... max_recovery_s=...
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))  # the real-process harness and sim data of the tests
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

FAULTS = ("world_model_kill", "recorder_kill", "camera_stall", "rogue_policy", "disk_full")
DISK_MB, MIN_FREE_MB, FULL_FOR_S = 1536, 200, 60.0


def mount_tmpfs(run: Path) -> bool:
    """The run's own filesystem, so that filling it cannot touch anything else on the machine."""
    run.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or any(run.iterdir()):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(run)]).returncode == 0


def prepare(out: Path) -> Path:
    """Demonstrations and the site overrides of a small, unending loop; returns the overrides file."""
    import yaml
    from sim_data import record_sim_episodes, small_finetune_config

    if not (out / "dataset" / "meta" / "info.json").is_file():
        record_sim_episodes(out / "dataset", seeds=range(4))
    small_finetune_config(out / "finetune.yaml", bc_steps=300, world_model_steps=40, vq_fit_steps=40, actor_frozen=True)
    params = {
        "sim_robot": {"sim": {"image_size": [32, 32]}},
        "recorder": {"image_size": [32, 32], "min_free_disk_mb": float(MIN_FREE_MB)},
        "episode_manager": {"episodes_per_iteration": 2, "iterations": 0, "max_episode_s": 6.0, "start_delay_s": 1.0},
        "world_model_node": {"pipeline_config": str(out / "finetune.yaml"), "episodes_per_update": 2},
    }
    path = out / "overrides.yaml"
    path.write_text(yaml.safe_dump({node: {"ros__parameters": values} for node, values in params.items()}))
    return path


def _json(msg) -> dict:
    return json.loads(msg.data)


class Watch:
    """The probe's view of the graph: commands checked as they arrive, events and statuses kept."""

    def __init__(self, probe) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory
        from vla_mbpo_ros.msg import EpisodeEvent, MultiViewObservation, SafetyStatus

        from vla_mbpo_ros.conversions import capture_stamp
        from vla_mbpo_ros.nodes._runtime import OBSERVATION_QOS

        from vla_mbpo_ros.core.control.limits import load_safety_config

        safety = load_safety_config(REPO / "config" / "robots" / "so101.yaml")
        self.lo, self.hi = safety.effective_position_bounds()
        self.max_step = safety.limits.max_step
        self.commands = self.unsafe = 0
        self.unsafe_examples: list[str] = []
        self._last: np.ndarray | None = None
        self.events: list[tuple[float, object]] = []
        self.statuses: list[tuple[float, object]] = []
        self.world_model: list[tuple[float, dict]] = []
        self.policy_status: list[tuple[float, dict]] = []
        self.observations: list[tuple[float, float]] = []  # (arrival, capture stamp)
        self._lock = threading.Lock()
        deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node = probe.node
        node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_command,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(EpisodeEvent, "/vla_mbpo/episode_event", self._keep(self.events), 100)
        node.create_subscription(SafetyStatus, "/vla_mbpo/safety_status", self._keep(self.statuses), deep)
        node.create_subscription(String, "/vla_mbpo/world_model/status", self._keep(self.world_model, _json), deep)
        node.create_subscription(String, "/vla_mbpo/policy_status", self._keep(self.policy_status, _json), deep)
        node.create_subscription(MultiViewObservation, "/vla_mbpo/observation",
                                 self._keep(self.observations, lambda m: capture_stamp(m)), OBSERVATION_QOS)

    def _keep(self, into: list, convert=lambda msg: msg):
        def callback(msg):
            with self._lock:
                into.append((time.monotonic(), convert(msg)))
        return callback

    def _on_command(self, msg) -> None:
        q = np.asarray(msg.points[0].positions if msg.points else [], dtype=float)
        problem = ""
        if q.shape != self.lo.shape or not np.all(np.isfinite(q)):
            problem = f"malformed {q.tolist()}"
        elif np.any(q < self.lo - 1e-6) or np.any(q > self.hi + 1e-6):
            problem = f"outside the position limits: {np.round(q, 4).tolist()}"
        elif self._last is not None and np.any(np.abs(q - self._last) > self.max_step + 1e-6):
            problem = f"step {np.round(np.abs(q - self._last), 4).tolist()} > max_step"
        with self._lock:
            self.commands += 1
            if problem:
                self.unsafe += 1
                self.unsafe_examples.append(problem)
            if q.shape == self.lo.shape:
                self._last = q

    def first_after(self, items: list, since: float, predicate) -> float | None:
        with self._lock:
            return next((t for t, m in items if t > since and predicate(m)), None)


def graph_processes(runner: subprocess.Popen) -> dict[str, int]:
    """Node name -> pid of the runner's children (this run's, not another graph's on the machine)."""
    import psutil

    found = {}
    for child in psutil.Process(runner.pid).children(recursive=False):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        for i, arg in enumerate(cmdline):
            if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1].startswith("vla_mbpo_ros.nodes."):
                found[cmdline[i + 1].rsplit(".", 1)[1]] = child.pid
    return found


def rogue_checkpoint(out: Path, number: int) -> tuple[str, str, str]:
    """A well-formed, unsigned checkpoint inside the executor's trusted root: (version, uri, sha256)."""
    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
    from vla_mbpo_ros.core.policy.replay import ReplayPolicy

    version = f"rogue{number}"  # not v<N>: a folder named like a version would shift the trainer's numbering
    folder = out / "finetune" / "checkpoints" / version
    ReplayPolicy(np.zeros((2, 10, 6), np.float32), ("head", "wrist"), version).save(folder)
    return version, folder.as_uri(), checkpoint_sha256(folder)


def inject(fault: str, runner, watch: Watch, probe, out: Path, number: int) -> dict:
    """Inject one fault; returns what to wait for to call it recovered."""
    now = time.monotonic()
    pids = graph_processes(runner)
    if fault in ("world_model_kill", "recorder_kill"):
        node = "world_model_node" if fault == "world_model_kill" else "recorder"
        phase = (watch.world_model[-1][1].get("phase") or watch.world_model[-1][1].get("state")) if watch.world_model else "?"
        os.kill(pids[node], signal.SIGKILL)
        detail = f"pid {pids[node]}" + (f", phase {phase}" if node == "world_model_node" else "")
        if node == "world_model_node":
            return {"fault": fault, "at": now, "detail": detail, "recovered": lambda: watch.first_after(watch.world_model, now, lambda m: True)}
        return {"fault": fault, "at": now, "detail": detail,
                "recovered": lambda: watch.first_after(watch.events, now, lambda m: m.event in (m.SUCCESS, m.FAILURE))}
    if fault == "disk_full":
        ballast = out / "ballast"
        with open(ballast, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, max(0, shutil.disk_usage(out).free - (MIN_FREE_MB // 2) * 2**20))
        time.sleep(FULL_FOR_S)
        ballast.unlink()
        freed = time.monotonic()
        return {"fault": fault, "at": freed, "detail": f"{FULL_FOR_S:g} s below {MIN_FREE_MB} MB free",
                "recovered": lambda: watch.first_after(watch.events, freed, lambda m: m.event in (m.SUCCESS, m.FAILURE))}
    if fault == "camera_stall":
        os.kill(pids["sim_robot"], signal.SIGSTOP)
        time.sleep(2.0)
        os.kill(pids["sim_robot"], signal.SIGCONT)
        resumed, resumed_stamp = time.monotonic(), probe.node.get_clock().now().nanoseconds * 1e-9
        return {"fault": fault, "at": resumed, "detail": "sim_robot stopped 2 s",
                "recovered": lambda: watch.first_after(watch.observations, resumed, lambda captured: captured >= resumed_stamp)}
    from vla_mbpo_ros.msg import PolicyUpdate
    from vla_mbpo_ros.nodes._runtime import LATCHED_QOS

    version, uri, sha = rogue_checkpoint(out, number)
    publisher = probe.node.create_publisher(PolicyUpdate, "/vla_mbpo/policy_update", LATCHED_QOS)
    publisher.publish(PolicyUpdate(version=version, uri=uri, sha256=sha, policy_type="replay"))
    return {"fault": fault, "at": now, "detail": version, "version": version,
            "recovered": lambda: watch.first_after(watch.policy_status, now,
                                                   lambda m: m.get("version") == version and m.get("state") == "rejected")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/soak_bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-s", type=float, default=90.0, help="no fault before the loop runs (BC, first episodes)")
    parser.add_argument("--recovery-timeout-s", type=float, default=600.0)
    args = parser.parse_args()

    from ros_harness import RosTestNode

    args.out.mkdir(parents=True, exist_ok=True)
    run = args.out / "run"  # the graph's output_dir, on a tmpfs of its own when possible (the disk_full fault)
    mounted = mount_tmpfs(run)
    faults = FAULTS if mounted else tuple(f for f in FAULTS if f != "disk_full")
    if not mounted:
        print("disk_full skipped: no filesystem of its own for the run (needs root and an empty --out)", flush=True)
    overrides = prepare(run)
    saved_before = json.loads((run / "dataset" / "meta" / "info.json").read_text())["total_episodes"]
    rng = random.Random(args.seed)
    total_s = args.minutes * 60.0
    count = max(len(faults), int(args.minutes / 6))  # about one fault every 6 minutes, each kind at least once
    kinds = [faults[i % len(faults)] for i in range(count)]
    rng.shuffle(kinds)
    times = sorted(rng.uniform(args.warmup_s, max(args.warmup_s + 1, total_s - 60.0)) for _ in kinds)
    log = open(args.out / "runner.log", "w")
    runner = subprocess.Popen([sys.executable, "-m", "vla_mbpo_ros.bringup", "finetune", f"output_dir:={run}",
                               f"config:={overrides}"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    probe = RosTestNode("soak_bench")
    watch = Watch(probe)
    started = time.monotonic()
    pending: list[dict] = []
    results: list[dict] = []
    try:
        for number, (at, kind) in enumerate(zip(times, kinds)):
            while time.monotonic() - started < at:
                if runner.poll() is not None:
                    raise RuntimeError(f"the graph stopped (runner exit {runner.returncode}); see {args.out / 'runner.log'}")
                time.sleep(0.5)
            pending.append(inject(kind, runner, watch, probe, run, number))
            print(f"[{time.monotonic() - started:7.1f} s] {kind}: {pending[-1]['detail']}", flush=True)
        while time.monotonic() - started < total_s and runner.poll() is None:
            time.sleep(1.0)
        deadline = time.monotonic() + args.recovery_timeout_s
        for fault in pending:
            while (t := fault["recovered"]()) is None and time.monotonic() < deadline and runner.poll() is None:
                time.sleep(1.0)
            results.append({"fault": fault["fault"], "detail": fault["detail"],
                            "recovery_s": None if t is None else round(t - fault["at"], 2)})
        alive = runner.poll() is None
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            runner.kill()
        probe.close()
        log.close()

    saved = json.loads((run / "dataset" / "meta" / "info.json").read_text())["total_episodes"] - saved_before
    labelled = sum(1 for _, m in watch.events if m.event in (m.SUCCESS, m.FAILURE))
    running_versions = {m.policy_version for _, m in watch.statuses if m.policy_version}
    rogue_ran = [r["detail"] for r in results if r["fault"] == "rogue_policy" and r["detail"] in running_versions]
    iterations = len([v for v in running_versions if not v.startswith("rogue")])
    recoveries = [r["recovery_s"] for r in results]
    for r in results:
        print(f"{r['fault']:17s} {r['detail']:32s} recovered in {r['recovery_s']} s")
    print(f"{watch.commands} arm commands, {watch.unsafe} unsafe {watch.unsafe_examples[:3]}; {labelled} labelled episodes, "
          f"{saved} saved; policy versions run: {sorted(running_versions)}; graph alive at the end: {alive}; "
          f"rogue versions that ran: {rogue_ran}")
    (args.out / "soak.json").write_text(json.dumps({"results": results, "commands": watch.commands, "unsafe": watch.unsafe,
                                                    "labelled": labelled, "saved": saved, "versions": sorted(running_versions)}))
    if mounted:
        subprocess.run(["umount", str(run)])  # the run's data goes with its tmpfs; logs and results stay in --out
    worst = "none" if None in recoveries else f"{max(recoveries):.1f}"
    print(f"soak_bench: minutes={args.minutes:g} faults={len(results)} unsafe={watch.unsafe + len(rogue_ran)} "
          f"lost={max(0, labelled - saved)} iterations={iterations} max_recovery_s={worst}")


if __name__ == "__main__":
    main()
