"""One outer iteration of VLA-MBPO between real episodes, resumable phase by phase.

    python -m vla_mbpo_ros.core.loop.pipeline --run-dir RUN --dataset DATA --config config/finetune_sim.yaml

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.loop.report import write_report
from vla_mbpo_ros.core.loop.run_dir import IterationDir, publish_candidate, read_state, write_state
from vla_mbpo_ros.core.util.images import resize_uint8
from vla_mbpo_ros.core.util.process import exit_with_launcher


@dataclass
class PipelineConfig:
    view_names: tuple[str, ...] = ("head", "wrist")
    min_episodes: int = 2  # an iteration needs at least this many recorded episodes
    seed: int = 0
    torch_threads: int = 1
    policy: dict[str, Any] = field(default_factory=dict)  # CompactFlowVLAConfig fields (first policy only)
    bc: dict[str, Any] = field(default_factory=dict)  # BCConfig fields
    world_model: dict[str, Any] = field(default_factory=dict)  # sections of config/world_model.yaml
    mbpo: dict[str, Any] = field(default_factory=dict)  # MBPOConfig fields

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
        if "view_names" in data:
            data["view_names"] = tuple(data["view_names"])
        config = cls(**data)
        if config.min_episodes < 1:
            raise ValueError(f"{path}: min_episodes must be >= 1, got {config.min_episodes}")
        return config


Progress = Callable[..., None]


def _emit(event: str, **values: Any) -> None:
    print(json.dumps({"event": event, "time": time.time(), **values}, default=float), flush=True)


# ------------------------------------------------------------------------------------------ phases
def _phase_bc(config: PipelineConfig, episodes, it: IterationDir) -> dict[str, Any]:
    from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, train_bc
    from vla_mbpo_ros.core.policy.compact import CompactFlowVLA, CompactFlowVLAConfig

    policy_config = CompactFlowVLAConfig.from_dict({**config.policy, "view_names": list(config.view_names)})
    torch.manual_seed(config.seed)
    policy = CompactFlowVLA(policy_config, version="bc")
    arrays = BCArrays.from_episodes(episodes, policy.chunk_size)
    losses = train_bc(policy, arrays, BCConfig(**config.bc))
    policy.save(it.staging("candidate"))
    it.commit("candidate")
    return {"bc_loss_first": float(np.mean(losses[:20])), "bc_loss_last": float(np.mean(losses[-20:])), "episodes": len(episodes)}


def _world_model_sections(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    known = {"world_model", "tiny", "data", "train", "source"}
    unknown = set(config.world_model) - known
    if unknown:
        raise ValueError(f"world_model: unknown sections {sorted(unknown)}")
    return {k: dict(config.world_model.get(k) or {}) for k in known}


def _at_size(episodes: list[Episode], size: int) -> list[Episode]:
    """The episodes with every view resized to size x size (the model's input resolution)."""
    return [dataclasses.replace(e, views={v: resize_uint8(f, size) for v, f in e.views.items()}) for e in episodes]


def _phase_world_model(config: PipelineConfig, episodes, it: IterationDir, previous: Path | None) -> dict[str, Any]:
    from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig, WorldModelConfig
    from vla_mbpo_ros.core.world_model.data import DataConfig, action_stats, build_samples
    from vla_mbpo_ros.core.world_model.evaluate import render_examples
    from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    sections = _world_model_sections(config)
    arch = TinyArchConfig(**sections["tiny"])
    train_config = TrainConfig(**sections["train"])
    data_config = DataConfig(**sections["data"])
    wm_episodes = _at_size(episodes, arch.image_size)
    stats = action_stats(wm_episodes)
    if previous is not None:
        model = UMMWorldModel.from_pretrained(previous, view_names=config.view_names, action_stats=stats)
        train_config = dataclasses.replace(train_config, vq_fit_steps=0)
    else:
        wm_config = WorldModelConfig(**{**sections["world_model"], "view_names": tuple(config.view_names)})
        instructions = sorted({e.instruction for e in episodes})
        model = UMMWorldModel.tiny(
            config.view_names, stats, arch.image_size, config.seed, arch=arch, config=wm_config, instructions=instructions
        )
    dynamics, reward = build_samples(wm_episodes, config.view_names, data_config)
    history = train_world_model(model, dynamics, reward, train_config, progress=False)
    model.save_pretrained(it.staging("world_model"))
    it.commit("world_model")
    render_examples(model, dynamics, it.output("real_vs_imagined.png"), rows=min(6, len(dynamics)))

    def ends(values: list[float]) -> list[float]:
        w = max(1, min(20, len(values) // 4))
        return [float(np.mean(values[:w])), float(np.mean(values[-w:]))] if values else []

    return {
        "image_loss": ends(history.image_loss),
        "answer_loss": ends(history.answer_loss),
        "dynamics_samples": len(dynamics),
        "reward_samples": len(reward),
        "parameters": model.num_parameters(),
    }


def _phase_rl(config: PipelineConfig, episodes, it: IterationDir, policy_dir: Path) -> dict[str, Any]:
    from vla_mbpo_ros.core.policy.base import load_policy
    from vla_mbpo_ros.core.rl.start_states import StartStateSampler
    from vla_mbpo_ros.core.rl.trainer import MBPOConfig, MBPOTrainer
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    policy = load_policy(policy_dir)
    world_model = UMMWorldModel.from_pretrained(it.output("world_model"))
    sampler = StartStateSampler(stride=policy.chunk_size)
    sampler.add_episodes(_at_size(episodes, policy.config.image_size))
    mbpo = MBPOConfig.from_dict({"seed": config.seed, **config.mbpo})
    trainer = MBPOTrainer(policy, world_model, sampler, mbpo)

    def on_iteration(index: int, stats: dict[str, float]) -> None:
        _emit("progress", phase="rl", step=index + 1, total=mbpo.num_iterations, **stats)

    result = trainer.train(on_iteration=on_iteration)
    policy.save(it.staging("candidate"))
    it.commit("candidate")
    history = result.pop("history")
    return {**result, "start_states": len(sampler), "imagined_success": [h.get("imagined_success") for h in history]}


# -------------------------------------------------------------------------------------- iteration
def run_iteration(run_dir: Path, dataset: Path, config: PipelineConfig, real_episodes_csv: Path | None = None) -> dict[str, Any]:
    """Run (or resume) the next iteration; returns its result.json content."""
    from vla_mbpo_ros.core.data.reader import load_episodes

    torch.set_num_threads(config.torch_threads)
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
            it.mark_done("bc", _phase_bc(config, [e for e in episodes if e.success], it))
    else:
        previous_wm = _previous_world_model(run_dir, iteration)
        if not it.done("world_model"):
            _emit("phase", phase="world_model", iteration=iteration)
            it.mark_done("world_model", _phase_world_model(config, episodes, it, previous_wm))
        if not it.done("rl"):
            _emit("phase", phase="rl", iteration=iteration)
            it.mark_done("rl", _phase_rl(config, episodes, it, Path(current["path"])))
        rl = json.loads(it.output("rl.metrics.json").read_text())
        accepted = bool(rl["accepted"])
        reason = f"imagined success {rl['success_before']:.2f} -> {rl['success_after']:.2f}"
    if not it.done("publish"):
        _emit("phase", phase="publish", iteration=iteration)
        it.mark_done("publish", publish_candidate(run_dir, it, accepted, reason))
    published = json.loads(it.output("publish.metrics.json").read_text())
    if published["published"]:
        state["current_policy"] = {k: published[k] for k in ("version", "path", "sha256")}
    result = {"iteration": iteration, **published, "metrics": it.metrics()}
    it.write_json("result.json", result)
    state["iterations_done"] = iteration + 1
    write_state(run_dir, state)
    write_report(run_dir, real_episodes_csv)
    _emit("done", **result)
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
        run_iteration(args.run_dir, args.dataset, PipelineConfig.from_yaml(args.config), args.real_episodes)
    except Exception as err:  # noqa: BLE001  (reported to the node as one JSON line, then non-zero)
        _emit("error", message=f"{type(err).__name__}: {err}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
