"""One outer iteration of VLA-MBPO between real episodes, resumable phase by phase.

    python -m vla_mbpo_ros.core.loop.pipeline --run-dir RUN --dataset DATA --config config/finetune_sim.yaml

Everything an iteration builds comes from one setup file (``PipelineConfig``: config/finetune_sim.yaml
on a CPU, config/finetune_gpu.yaml for pi0.5 + Janus-Pro on a GPU): the policy backend and where its
first weights come from, the world model (tiny, or a pretrained local snapshot), the RL settings, and
the device and dtype of every phase.

Phases of iteration i (``RUN/iterations/<i>``); each writes its outputs into a temporary folder that
is renamed when complete, then a ``<phase>.done`` marker, so a run killed at any point restarts at
the first unfinished phase and never reads half-written files:

  bc           only while there is no policy yet: behaviour cloning on the recorded demonstrations
  world_model  finetune the UMM world model (dynamics + reward) on every recorded episode,
               continuing from the previous iteration's world model
  rl           branched imagined rollouts from chunk-aligned real frames + Flow-SDE PPO, validated:
               the candidate's imagined success must not drop below the current policy's
  publish      an accepted candidate (or the BC policy) is copied to RUN/checkpoints/<version>
               with its sha256 into result.json, which the world-model node announces

Progress goes to stdout as JSON lines (``{"event": ..., "phase": ..., ...}``), read by the node.

Several GPUs: the same module under torchrun (``torchrun --nproc_per_node N -m
vla_mbpo_ros.core.loop.pipeline ...``; the world-model node's ``worker_processes`` does this). Every
process trains the world model (accelerate, batches sharded) and runs PPO (DDP); behaviour cloning,
files, the report and the progress lines are rank 0's, and the others wait for them at a barrier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vla_mbpo_ros.core.data.reader import load_episodes
from vla_mbpo_ros.core.loop.phases import phase_bc, phase_rl, phase_world_model
from vla_mbpo_ros.core.loop.report import write_report
from vla_mbpo_ros.core.loop.run_dir import IterationDir, publish_candidate, read_state, write_state
from vla_mbpo_ros.core.loop.setup import PipelineConfig
from vla_mbpo_ros.core.rl.acceptance import trust_reward
from vla_mbpo_ros.core.util import distributed
from vla_mbpo_ros.core.util.memory_plan import check_fits
from vla_mbpo_ros.core.util.process import exit_with_launcher

__all__ = ["PipelineConfig", "read_state", "run_iteration"]


def _emit(event: str, **values: Any) -> None:
    if distributed.is_main():  # one report, whatever the number of processes
        print(json.dumps({"event": event, "time": time.time(), **values}, default=float), flush=True)


def _on_main(phase: str, it: IterationDir, run: Any) -> None:
    """``run()`` (a phase's files and marker) on rank 0 only; every process continues once it is done."""
    if distributed.is_main():
        it.mark_done(phase, run())
    distributed.barrier()


# -------------------------------------------------------------------------------------- iteration
def run_iteration(run_dir: Path, dataset: Path, config: PipelineConfig, real_episodes_csv: Path | None = None) -> dict[str, Any]:
    """Run (or resume) the next iteration; returns its result.json content."""
    torch.set_num_threads(config.torch_threads)
    check_fits(config)  # before anything loads: one line naming the phase that cannot fit
    run_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(run_dir)
    iteration = state["iterations_done"]
    it = IterationDir(run_dir, iteration)
    _emit("start", iteration=iteration)
    episodes = [e for e in load_episodes(dataset, config.view_names) if e.success is not None]
    if len(episodes) < config.min_episodes:
        raise RuntimeError(f"only {len(episodes)} labelled episodes in {dataset}; need {config.min_episodes}")
    current = state["current_policy"]
    bootstrap = current is None
    accepted, reason = True, ""

    if bootstrap:
        if not it.done("bc"):
            _emit("phase", phase="bc", iteration=iteration)
            _on_main("bc", it, lambda: phase_bc(config, [e for e in episodes if e.success], it))  # few demos: one process
    else:
        previous_wm = _previous_world_model(run_dir, iteration)
        unseen = len(episodes) - state.get("world_model_episodes", 0)
        if not it.done("world_model"):
            _emit("phase", phase="world_model", iteration=iteration)
            metrics = phase_world_model(config, episodes, it, previous_wm, unseen)
            _on_main("world_model", it, lambda: metrics)
        state["world_model_episodes"] = len(episodes)
        trusted, why = trust_reward(json.loads(it.output("world_model.metrics.json").read_text()),
                                   config.world_model.min_reward_precision)
        if not trusted:
            accepted, reason = False, f"held: {why}"
        else:
            if not it.done("rl"):
                _emit("phase", phase="rl", iteration=iteration)
                metrics = phase_rl(config, episodes, it, Path(current["path"]), lambda **v: _emit("progress", **v),
                                   recent=episodes[len(episodes) - unseen:])
                _on_main("rl", it, lambda: metrics)
            rl = json.loads(it.output("rl.metrics.json").read_text())
            accepted = bool(rl["accepted"])
            reason = rl["reason"] if rl.get("calibrated") is False else \
                f"imagined success {rl['success_before']:.2f} -> {rl['success_after']:.2f}"
    if not it.done("publish"):
        _emit("phase", phase="publish", iteration=iteration)
        _on_main("publish", it, lambda: publish_candidate(run_dir, it, accepted, reason))
    published = json.loads(it.output("publish.metrics.json").read_text())
    if published["published"]:
        state["current_policy"] = {k: published[k] for k in ("version", "path", "sha256")}
    result = {"iteration": iteration, **published, "metrics": it.metrics()}
    if distributed.is_main():
        it.write_json("result.json", result)
        state["iterations_done"] = iteration + 1
        write_state(run_dir, state)
        write_report(run_dir, real_episodes_csv)
    _emit("done", **result)
    distributed.barrier()
    return result


def _previous_world_model(run_dir: Path, iteration: int) -> Path | None:
    for earlier in range(iteration - 1, -1, -1):
        path = run_dir / "iterations" / f"{earlier:04d}" / "world_model"
        if path.is_dir():
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--real-episodes", type=Path, help="episodes.csv of the episode manager, for the report")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone (orphaned worker)")
    parser.add_argument("--niceness", type=int, default=0, help="lower this worker's CPU priority (os.nice)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.niceness:
        # Training shares the workstation with the control loop: it must never starve it.
        os.nice(args.niceness)
    if args.parent_pid:
        # A worker whose node was killed must not train on. The node starts it from an executor thread,
        # so follow the node's pid by polling rather than the forking thread's lifetime.
        exit_with_launcher(args.parent_pid, poll=True)
    try:
        config = PipelineConfig.from_yaml(args.config)
        distributed.init_from_environment(torch.device(config.devices.policy).type)  # under torchrun
        run_iteration(args.run_dir, args.dataset, config, args.real_episodes)
    except Exception as err:  # noqa: BLE001  (reported to the node as one JSON line, then non-zero)
        _emit("error", message=f"{type(err).__name__}: {err}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
