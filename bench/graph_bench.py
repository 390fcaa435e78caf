"""The launched graph at steady state on the sim: CPU per node, e-stop latches, recording gaps, success.

    python bench/graph_bench.py                      # teleop (20 episodes), then deploy (10 episodes)
    python bench/graph_bench.py --profiles teleop --episodes 20 --seed 100

Profiles, each started with the pip-only runner (``python -m vla_mbpo_ros.bringup``), i.e. the
same nodes and parameters as ``ros2 launch``, in a fresh output folder and ROS domain:

* teleop: sim + sync + executor + recorder + episode manager, the scripted expert as operator,
  N seeded episodes (the sim resets with seeds seed+1 ... seed+N);
* deploy: the finetune profile with a behaviour-cloned policy given to the executor at start (BC on
  expert demos in the sim, trained here first), the world-model node idle: the real-episode part
  of finetune.

Measured from outside, without touching the nodes:

* CPU per node as % of one core: CPU-time deltas of each node process (psutil) in 1 s windows
  while episodes run (start-up and imports excluded); mean and p95 of the windows; the machine's
  CPU (all cores, all processes) over the same windows;
* e-stop latches by reason, from /vla_mbpo/safety_status (transient local, every change);
* recording gaps per episode, from the recorded dataset: missing frames between consecutive
  ``obs_stamp``s at the dataset fps;
* the expert's success through ROS (the episode manager's sim labels) next to its offline success
  (``core.sim.rollouts.expert_episodes``, same sim config and seeds, no ROS, no gate).

Last line: ``graph_bench: cpu_machine=<%> latches=<n> gaps_per_episode=<x> expert_ros=<%> expert_offline=<%>``
(teleop profile; the deploy figures on the line before).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sim_policy_config():
    """The compact VLA of the sim setup (config/finetune_sim.yaml), with the sim's view names."""
    from vla_mbpo_ros.core.loop.pipeline import PipelineConfig

    setup = PipelineConfig.from_yaml(REPO / "config" / "finetune_sim.yaml")
    return dataclasses.replace(setup.policy.compact, view_names=setup.view_names)


def site_config(path: Path, profile: str, episodes: int, seed: int, checkpoint: Path | None) -> Path:
    """A site file (config:=) that sets the schedule and, for deploy, the policy checkpoint."""
    manager = {"episodes_per_iteration": episodes, "iterations": 1, "wait_for_policy_update": False, "start_delay_s": 1.0}
    data = {"episode_manager": {"ros__parameters": manager}, "sim_robot": {"ros__parameters": {"sim": {"seed": seed}}}}
    if profile == "deploy":
        data["policy_executor"] = {"ros__parameters": {"policy_checkpoint": str(checkpoint)}}
        data["world_model_node"] = {"ros__parameters": {"bootstrap": False, "episodes_per_update": 100000}}
    path.write_text(yaml.safe_dump(data))
    return path


class Probe:
    """This process's own rclpy node: safety status changes and episode starts."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from vla_mbpo_ros.msg import EpisodeEvent, SafetyStatus

        from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS

        rclpy.init()
        self.node = rclpy.create_node("graph_bench")
        self.latches: Counter[str] = Counter()
        self.episode_started = threading.Event()
        self._latched = False

        def on_status(msg: SafetyStatus) -> None:
            latched = msg.state == SafetyStatus.STATE_LATCHED
            if latched and not self._latched:
                self.latches[msg.latch_reason.split(":")[0] or "unknown"] += 1
            self._latched = latched

        def on_event(msg: EpisodeEvent) -> None:
            if msg.event == EpisodeEvent.START:
                self.episode_started.set()

        self.node.create_subscription(SafetyStatus, "/vla_mbpo/safety_status", on_status, LATCHED_QOS)
        self.node.create_subscription(EpisodeEvent, "/vla_mbpo/episode_event", on_event, RELIABLE_QOS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.2)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join()
        self.node.destroy_node()
        rclpy.try_shutdown()


def node_processes(runner: subprocess.Popen) -> dict[str, psutil.Process]:
    found = {}
    for child in psutil.Process(runner.pid).children(recursive=True):
        try:
            name = next((a.split(":=", 1)[1] for a in child.cmdline() if a.startswith("__node:=")), None)
        except psutil.Error:
            continue
        if name:
            found[name] = child
    return found


def cpu_windows(runner: subprocess.Popen, stop: threading.Event) -> tuple[dict[str, list[float]], list[float]]:
    """Per-node and machine CPU (% of one core / % of the machine) in 1 s windows until ``stop``."""
    procs = node_processes(runner)
    per_node: dict[str, list[float]] = {name: [] for name in procs}
    machine: list[float] = []

    def busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq

    def times() -> dict[str, float]:
        out = {}
        for name, proc in procs.items():
            try:
                out[name] = sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
        return out

    last, last_busy, last_wall = times(), busy(), time.monotonic()
    while not stop.wait(1.0) and runner.poll() is None:
        now, now_busy, wall = times(), busy(), time.monotonic()
        dt = wall - last_wall
        for name in now:
            if name in last:
                per_node[name].append(100.0 * (now[name] - last[name]) / dt)
        machine.append(100.0 * (now_busy - last_busy) / (dt * psutil.cpu_count()))
        last, last_busy, last_wall = now, now_busy, wall
    return per_node, machine


def dataset_gaps(root: Path, fps: int) -> list[int]:
    """Missing frames per episode: obs_stamp steps of more than 1.5 periods."""
    import pyarrow.parquet as pq

    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        return []
    table = pq.read_table(files, columns=["episode_index", "obs_stamp"]) if len(files) == 1 else None
    if table is None:
        import pyarrow as pa

        table = pa.concat_tables([pq.read_table(f, columns=["episode_index", "obs_stamp"]) for f in files])
    episodes = np.asarray(table["episode_index"]).reshape(-1)
    stamps = np.asarray(table["obs_stamp"].to_pylist(), dtype=np.float64).reshape(-1)
    gaps = []
    for ep in dict.fromkeys(episodes.tolist()):
        dt = np.diff(stamps[episodes == ep])
        gaps.append(int(np.sum(np.maximum(0, np.round(dt * fps) - 1))))
    return gaps


def expert_offline(seeds: list[int], max_episode_s: float) -> float:
    """The same expert as the sim node's (within the gate's limits), straight into the sim: no ROS."""
    from vla_mbpo_ros.core.control.limits import load_safety_config
    from vla_mbpo_ros.core.sim import ExpertConfig, SimConfig, So101Sim
    from vla_mbpo_ros.core.sim.expert import within_safety_limits
    from vla_mbpo_ros.core.sim.rollouts import EpisodeConfig, expert_episodes

    config = SimConfig.from_yaml(REPO / "config" / "sim_robot.yaml")
    sim = So101Sim(config)
    steps = int(max_episode_s * config.control_fps)
    expert = within_safety_limits(ExpertConfig(), load_safety_config(REPO / "config" / "robots" / "so101.yaml"),
                                  sim.control_period)
    episodes = expert_episodes(sim, seeds, EpisodeConfig(max_steps=steps, record=False), expert)
    sim.close()
    return float(np.mean([e.success for e in episodes]))


def bc_checkpoint(directory: Path, seed: int) -> Path:
    """A compact VLA behaviour-cloned on 10 offline expert demos at the graph's 10 Hz (~2 min)."""
    import torch

    from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, train_bc
    from vla_mbpo_ros.core.policy.compact import CompactFlowVLA
    from vla_mbpo_ros.core.sim import SimConfig, So101Sim
    from vla_mbpo_ros.core.sim.rollouts import EpisodeConfig, expert_episodes

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    sim = So101Sim(SimConfig.from_yaml(REPO / "config" / "sim_robot.yaml"))
    demos = expert_episodes(sim, range(10_000 + seed, 10_010 + seed), EpisodeConfig(max_steps=450, control_steps_per_action=3),
                            successful_only=True)
    sim.close()
    policy = CompactFlowVLA(sim_policy_config(), version="graph_bench")
    train_bc(policy, BCArrays.from_episodes(demos, policy.chunk_size), BCConfig(steps=400, batch_size=32, learning_rate=1e-3))
    policy.save(directory)
    return directory


def run_profile(profile: str, episodes: int, seed: int, workdir: Path, domain: int, checkpoint: Path | None) -> dict:
    out = workdir / profile
    out.mkdir(parents=True)
    site = site_config(workdir / f"{profile}.yaml", profile, episodes, seed, checkpoint)
    launched = "teleop" if profile == "teleop" else "finetune"
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    probe = Probe()
    log = open(workdir / f"{profile}.log", "w")
    runner = subprocess.Popen(
        [sys.executable, "-m", "vla_mbpo_ros.bringup", launched, "robot:=sim", f"output_dir:={out}", f"config:={site}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )
    stop = threading.Event()
    result: dict = {}
    try:
        if not probe.episode_started.wait(300):
            raise RuntimeError(f"{profile}: no episode started within 300 s; see {log.name}")
        time.sleep(2.0)  # the first episode's own start-up (resets, first chunk)
        sampler = threading.Thread(target=lambda: result.update(zip(("nodes", "machine"), cpu_windows(runner, stop))))
        sampler.start()
        code = runner.wait(timeout=episodes * 40 + 300)
        stop.set()
        sampler.join()
    finally:
        stop.set()
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            runner.wait(timeout=60)
        log.close()
        probe.close()
    if code != 0:
        raise RuntimeError(f"{profile}: the graph exited with {code}; see {workdir / f'{profile}.log'}")
    text = (workdir / f"{profile}.log").read_text()
    seeds = [int(s) for s in re.findall(r"robot reset: reset with seed (\d+)", text)]
    with (out / "episodes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    result.update(
        latches=dict(probe.latches),
        gaps=dataset_gaps(out / "dataset", fps=10),
        success_ros=float(np.mean([r["success"] == "True" for r in rows])),
        seeds=seeds,
        episodes=len(rows),
    )
    return result


def report(profile: str, result: dict) -> str:
    lines = [f"== {profile}: {result['episodes']} episodes, seeds {result['seeds'][0]}..{result['seeds'][-1]}"]
    lines.append(f"{'node':18s} {'cpu mean %':>10s} {'cpu p95 %':>10s}   (% of one core, 1 s windows while episodes run)")
    for name, values in sorted(result["nodes"].items(), key=lambda kv: -np.mean(kv[1] or [0])):
        if values:
            lines.append(f"{name:18s} {np.mean(values):10.1f} {np.percentile(values, 95):10.1f}")
    machine = result["machine"]
    lines.append(f"{'machine':18s} {np.mean(machine):10.1f} {np.percentile(machine, 95):10.1f}   (% of all {psutil.cpu_count()} cores)")
    lines.append(f"e-stop latches by reason: {result['latches'] or 'none'}")
    lines.append(f"recording gaps per episode: {result['gaps']} (mean {np.mean(result['gaps']):.2f})")
    lines.append(f"success through ROS: {100 * result['success_ros']:.0f} %")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default="teleop,deploy")
    parser.add_argument("--episodes", type=int, default=20, help="teleop episodes (deploy runs half as many)")
    parser.add_argument("--seed", type=int, default=100, help="sim seeds are seed+1 ... seed+episodes")
    parser.add_argument("--workdir", type=Path, help="keep logs and datasets here (default: a temporary folder)")
    parser.add_argument("--domain", type=int, default=1 + os.getpid() % 90)
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="graph_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    profiles = [p for p in args.profiles.split(",") if p]
    summaries = {}
    for offset, profile in enumerate(profiles):
        episodes = args.episodes if profile == "teleop" else max(1, args.episodes // 2)
        checkpoint = bc_checkpoint(workdir / "bc_policy", args.seed) if profile == "deploy" else None
        result = run_profile(profile, episodes, args.seed, workdir, args.domain + offset, checkpoint)
        print(report(profile, result), flush=True)
        summaries[profile] = result
    print(f"logs and datasets: {workdir}")
    lines = []
    for profile, result in summaries.items():
        offline = expert_offline(result["seeds"], 15.0) if profile == "teleop" else float("nan")
        busiest = max(result["nodes"].items(), key=lambda kv: np.mean(kv[1] or [0]))
        lines.append(
            f"graph_bench{'' if profile == 'teleop' else '[' + profile + ']'}: cpu_machine={np.mean(result['machine']):.1f} "
            f"latches={sum(result['latches'].values())} gaps_per_episode={np.mean(result['gaps']):.2f} "
            + (f"expert_ros={100 * result['success_ros']:.0f} expert_offline={100 * offline:.0f}" if profile == "teleop"
               else f"policy_success={100 * result['success_ros']:.0f} busiest={busiest[0]}:{np.mean(busiest[1]):.1f}")
        )
    print("\n".join(sorted(lines, key=lambda line: line.startswith("graph_bench:"))))


if __name__ == "__main__":
    main()
