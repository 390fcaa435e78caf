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
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.data.reader import load_episodes
from vla_mbpo_ros.core.loop.report import write_report
from vla_mbpo_ros.core.loop.run_dir import IterationDir, publish_candidate, read_state, write_state
from vla_mbpo_ros.core.policy.base import load_policy
from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, train_bc
from vla_mbpo_ros.core.policy.compact import CompactFlowVLA, CompactFlowVLAConfig
from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig
from vla_mbpo_ros.core.policy.lerobot_robot import RobotInterface, check_frame_skip
from vla_mbpo_ros.core.rl.start_states import StartStateSampler
from vla_mbpo_ros.core.rl.trainer import MBPOConfig, MBPOTrainer
from vla_mbpo_ros.core.util import distributed
from vla_mbpo_ros.core.util.config import load_config_file
from vla_mbpo_ros.core.util.images import resize_uint8
from vla_mbpo_ros.core.util.memory_plan import MemorySetup, check_fits
from vla_mbpo_ros.core.util.process import exit_with_launcher
from vla_mbpo_ros.core.world_model.codec import ACTION_STATS_FILE
from vla_mbpo_ros.core.world_model.configuration import WORLD_MODEL_CONFIG_FILE, TinyArchConfig, WorldModelConfig
from vla_mbpo_ros.core.world_model.data import DataConfig, action_stats, build_samples
from vla_mbpo_ros.core.world_model.evaluate import render_examples
from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model
from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

POLICY_BACKENDS = ("compact", "smolvla", "pi0", "pi05")


@dataclass
class PolicySetup:
    """The policy the loop trains: its backend, where it starts, how it is behaviour-cloned."""

    backend: str = "compact"  # compact (built-in, CPU), smolvla, pi0, pi05 (LeRobot, through the adapter)
    # A local directory to start from: a LeRobot policy (save_pretrained + its processors) for the
    # LeRobot backends, a checkpoint of ours for compact; "" (compact only): random init.
    pretrained: str = ""
    # Local directories replacing what a LeRobot checkpoint would fetch from the Hub (offline servers):
    tokenizer: str = ""  # the tokenizer its preprocessor names (pi0/pi0.5: PaliGemma's)
    vlm: str = ""  # SmolVLA: the backbone config + processor its vlm_model_name names
    compact: CompactFlowVLAConfig = field(default_factory=CompactFlowVLAConfig)
    lerobot: LeRobotFlowConfig = field(default_factory=LeRobotFlowConfig)
    bc: BCConfig = field(default_factory=BCConfig)  # BC (compact) or SFT (LeRobot) on the demos; steps 0: none

    def __post_init__(self) -> None:
        if self.backend not in POLICY_BACKENDS:
            raise ValueError(f"backend: expected one of {list(POLICY_BACKENDS)}, got {self.backend!r}")
        if self.backend != "compact" and not self.pretrained:
            raise ValueError(f"pretrained: the {self.backend} backend starts from a local LeRobot policy directory")


@dataclass
class WorldModelSetup:
    """The UMM world model: tiny random-init, or finetuned from a pretrained local snapshot."""

    # A local directory: a Janus / Janus-Pro snapshot, or a world model saved by this package (e.g. the
    # pretrained tiny UMM of `make world-model`); "" = the tiny architecture below with random weights.
    pretrained: str = ""
    # Hold the policy update unless the world model's Yes/No reward had at least this precision on the
    # real frames it had not been trained on yet (the episodes recorded since its last training); an
    # imagined success that is not one is what RL learns to reach. 0 = no check (e.g. a random-init model
    # that has nothing to be measured before its first training).
    min_reward_precision: float = 0.0
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    tiny: TinyArchConfig = field(default_factory=TinyArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DeviceSetup:
    """Where each phase runs (torch devices) and in which dtype."""

    world_model_training: str = "cpu"
    imagination: str = "cpu"  # the world model during rollouts and validation
    policy: str = "cpu"  # BC/SFT, rollouts and PPO updates
    dtype: str = "float32"  # float32 or bfloat16 (GPU)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype: expected float32 or bfloat16, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bfloat16" else torch.float32


@dataclass
class PipelineConfig:
    view_names: tuple[str, ...] = ("head", "wrist")  # first = head (global) view
    min_episodes: int = 2  # an iteration needs at least this many recorded episodes
    seed: int = 0
    torch_threads: int = 1
    policy: PolicySetup = field(default_factory=PolicySetup)
    world_model: WorldModelSetup = field(default_factory=WorldModelSetup)
    mbpo: MBPOConfig = field(default_factory=MBPOConfig)
    devices: DeviceSetup = field(default_factory=DeviceSetup)
    memory: MemorySetup = field(default_factory=MemorySetup)

    def __post_init__(self) -> None:
        if self.min_episodes < 1:
            raise ValueError(f"min_episodes must be >= 1, got {self.min_episodes}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        return load_config_file(cls, path)


def _emit(event: str, **values: Any) -> None:
    if distributed.is_main():  # one report, whatever the number of processes
        print(json.dumps({"event": event, "time": time.time(), **values}, default=float), flush=True)


def _on_main(phase: str, it: IterationDir, run: Any) -> None:
    """``run()`` (a phase's files and marker) on rank 0 only; every process continues once it is done."""
    if distributed.is_main():
        it.mark_done(phase, run())
    distributed.barrier()


def _at_size(episodes: list[Episode], size: int | None) -> list[Episode]:
    """The episodes with every view resized to size x size (a model's input resolution; None: as is)."""
    if size is None:
        return list(episodes)
    return [dataclasses.replace(e, views={v: resize_uint8(f, size) for v, f in e.views.items()}) for e in episodes]


def _autocast(device: str, devices: DeviceSetup) -> Any:
    """bf16 autocast where the setup says bfloat16 (the trained weights stay fp32 masters)."""
    return torch.autocast(torch.device(device).type, dtype=devices.torch_dtype, enabled=devices.dtype != "float32")


def _ends(values: list[float]) -> list[float]:
    w = max(1, min(20, len(values) // 4))
    return [float(np.mean(values[:w])), float(np.mean(values[-w:]))] if values else []


# ------------------------------------------------------------------------------------------ phases
def robot_interface(config: PipelineConfig, episodes: list[Episode]) -> RobotInterface:
    """The recorded robot as a LeRobot checkpoint must be adapted to: dims of the data, the setup's views
    (under the adapter's view_keys, else observation.images.<view>), the world model's frame skip."""
    keys = config.policy.lerobot.view_keys
    return RobotInterface(state_dim=int(episodes[0].states.shape[1]), action_dim=int(episodes[0].actions.shape[1]),
                          view_keys={v: keys.get(v, f"observation.images.{v}") for v in config.view_names},
                          executed_chunk=config.world_model.data.chunk_size)


def build_first_policy(config: PipelineConfig, robot: RobotInterface | None = None) -> Any:
    """The policy behaviour cloning starts from, as the setup describes it (a LeRobot checkpoint adapted to
    ``robot`` when given)."""
    setup, device = config.policy, config.devices.policy
    if setup.backend == "compact":
        if setup.pretrained:
            return load_policy(Path(setup.pretrained), device=device)
        torch.manual_seed(config.seed)
        return CompactFlowVLA(dataclasses.replace(setup.compact, view_names=tuple(config.view_names)), version="bc").to(device)
    from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowPolicy

    policy = LeRobotFlowPolicy.from_lerobot(
        Path(setup.pretrained), dataclasses.replace(setup.lerobot, device=device, dtype=config.devices.dtype), version="bc",
        tokenizer_dir=Path(setup.tokenizer).expanduser() if setup.tokenizer else None,
        vlm_dir=Path(setup.vlm).expanduser() if setup.vlm else None, robot=robot)
    if policy.backend != setup.backend:
        raise ValueError(f"policy.pretrained: {setup.pretrained} holds a {policy.backend} policy, not {setup.backend}")
    return policy


def _phase_bc(config: PipelineConfig, episodes: list[Episode], it: IterationDir) -> dict[str, Any]:
    policy = build_first_policy(config, robot_interface(config, episodes))
    check_frame_skip(policy.chunk_size, config.world_model.data.chunk_size)
    losses: list[float] = []
    if config.policy.bc.steps:
        demos = _at_size(episodes, policy.image_size)
        with _autocast(config.devices.policy, config.devices):
            losses = train_bc(policy, BCArrays.from_episodes(demos, policy.train_chunk_size), config.policy.bc)
    policy.save(it.staging("candidate"))
    it.commit("candidate")
    return {"backend": config.policy.backend, "bc_loss": _ends(losses), "episodes": len(episodes)}


def pretrained_world_model(path: str) -> Path:
    """``world_model.pretrained`` as a directory (``~`` expanded); one `make world-model` built is checked
    against the sha256 of its manifest first."""
    from vla_mbpo_ros.core.world_model.pretrain import MANIFEST, verify_pretrained

    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"world_model.pretrained: {directory} does not exist (the pretrained tiny UMM "
                                "is built by `make world-model`; a Janus snapshot must be a local directory)")
    if (directory / MANIFEST).exists():
        verify_pretrained(directory)
    return directory


def load_world_model(config: PipelineConfig, episodes: list[Episode], previous: Path | None) -> tuple[Any, TrainConfig]:
    """The world model to finetune this iteration, and how: the previous iteration's, else the setup's
    pretrained snapshot, else a tiny random-init one (whose VQ tokenizer is fitted first)."""
    setup, devices = config.world_model, config.devices
    device, dtype = distributed.local_device(devices.world_model_training), devices.torch_dtype
    train = dataclasses.replace(setup.train, mixed_precision="bf16" if dtype == torch.bfloat16 else "no")
    source = previous or (pretrained_world_model(setup.pretrained) if setup.pretrained else None)
    if source is not None:
        # A snapshot of ours keeps its action statistics and prompts: they are the language it learnt.
        # A Janus snapshot gets the setup's world-model config and statistics of the recorded actions.
        ours = (source / WORLD_MODEL_CONFIG_FILE).exists()
        stats = None if (source / ACTION_STATS_FILE).exists() else action_stats(episodes)
        overrides = {} if ours else dataclasses.asdict(setup.model)
        overrides["view_names"] = list(config.view_names)
        model = UMMWorldModel.from_pretrained(source, action_stats=stats, config_overrides=overrides, device=device)
        return model, dataclasses.replace(train, vq_fit_steps=0)
    model_config = dataclasses.replace(setup.model, view_names=tuple(config.view_names))
    instructions = sorted({e.instruction for e in episodes})
    model = UMMWorldModel.tiny(config.view_names, action_stats(_at_size(episodes, setup.tiny.image_size)), setup.tiny.image_size,
                               config.seed, arch=setup.tiny, config=model_config, instructions=instructions)
    return model.to(device), train


def _phase_world_model(config: PipelineConfig, episodes: list[Episode], it: IterationDir, previous: Path | None,
                       unseen: int) -> dict[str, Any]:
    """Finetune the world model on every episode; first score its reward on the last ``unseen`` episodes,
    which it has not been trained on."""
    model, train = load_world_model(config, episodes, previous)
    wm_episodes = _at_size(episodes, model.core.und_size)
    # bf16 setups: the model holds fp32 masters beside bf16 frozen parts; it runs under autocast.
    autocast = _autocast(config.devices.world_model_training, config.devices)
    with autocast:
        held_out = held_out_reward_scores(model, wm_episodes[len(wm_episodes) - unseen:], config.world_model.data) \
            if unseen and (previous or config.world_model.pretrained) else {}
    dynamics, reward = build_samples(wm_episodes, config.view_names, config.world_model.data)
    history = train_world_model(model, dynamics, reward, train, progress=False)
    if distributed.is_main():
        model.save_pretrained(it.staging("world_model"))
        it.commit("world_model")
        with autocast:
            render_examples(model, dynamics, it.output("real_vs_imagined.png"), rows=min(6, len(dynamics)))
    return {
        "image_loss": _ends(history.image_loss),
        "answer_loss": _ends(history.answer_loss),
        "dynamics_samples": len(dynamics),
        "reward_samples": len(reward),
        "parameters": model.num_parameters(),
        "pretrained": str(previous or config.world_model.pretrained or "tiny"),
        **{f"held_out_reward_{k}": v for k, v in held_out.items()},
    }


def held_out_reward_scores(model: Any, episodes: list[Episode], data: DataConfig) -> dict[str, float]:
    """Precision/recall of the model's Yes on the labelled frames of ``episodes`` (nan where undefined)."""
    from vla_mbpo_ros.core.world_model.evaluate import EvalConfig, evaluate_reward

    _, reward = build_samples(episodes, model.view_names, dataclasses.replace(data, yes_oversample=1))
    if not len(reward):
        return {}
    scores = evaluate_reward(model, reward, EvalConfig(batch_size=32, max_samples=10**6))
    return {k: scores[k] for k in ("samples", "positives", "precision", "recall")}


def reward_gate(world_model_metrics: dict[str, Any], min_precision: float) -> tuple[bool, str]:
    """(trusted, why) of the imagined reward, from its precision on frames it had not been trained on. A
    model that said Yes to none of them raised no false success there; no measurement is no trust."""
    if min_precision <= 0:
        return True, ""
    if "held_out_reward_precision" not in world_model_metrics:
        return False, "reward not measured on unseen real frames"
    precision = world_model_metrics["held_out_reward_precision"]
    if precision == precision and precision < min_precision:  # nan: no Yes answered
        return False, f"reward precision {precision:.2f} < {min_precision:.2f} on unseen real frames"
    return True, ""


def _phase_rl(config: PipelineConfig, episodes: list[Episode], it: IterationDir, policy_dir: Path) -> dict[str, Any]:
    devices = config.devices
    policy = load_policy(policy_dir, device=distributed.local_device(devices.policy))
    check_frame_skip(policy.chunk_size, config.world_model.data.chunk_size)
    # Imagination only infers: the world model in the setup's dtype (its saved fp32 masters need not be).
    world_model = UMMWorldModel.from_pretrained(it.output("world_model"), device=distributed.local_device(devices.imagination),
                                                dtype=devices.torch_dtype)
    sampler = StartStateSampler(stride=policy.chunk_size)
    sampler.add_episodes(_at_size(episodes, policy.image_size))
    mbpo = dataclasses.replace(config.mbpo, seed=config.seed)
    trainer = MBPOTrainer(policy, world_model, sampler, mbpo)

    def on_iteration(index: int, stats: dict[str, float]) -> None:
        _emit("progress", phase="rl", step=index + 1, total=mbpo.num_iterations, **stats)

    with _autocast(devices.policy, devices):
        result = trainer.train(on_iteration=on_iteration)
    if distributed.is_main():  # every process holds the same weights
        policy.save(it.staging("candidate"))
        it.commit("candidate")
    history = result.pop("history")
    diagnostics = {key: [h.get(key) for h in history] for key in ("imagined_success", "approx_kl", "clip_fraction",
                                                                    "explained_variance", "actor_loss", "value_loss")}
    return {**result, "start_states": len(sampler), **diagnostics}


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
            _on_main("bc", it, lambda: _phase_bc(config, [e for e in episodes if e.success], it))  # few demos: one process
    else:
        previous_wm = _previous_world_model(run_dir, iteration)
        unseen = len(episodes) - state.get("world_model_episodes", 0)
        if not it.done("world_model"):
            _emit("phase", phase="world_model", iteration=iteration)
            metrics = _phase_world_model(config, episodes, it, previous_wm, unseen)
            _on_main("world_model", it, lambda: metrics)
        state["world_model_episodes"] = len(episodes)
        trusted, why = reward_gate(json.loads(it.output("world_model.metrics.json").read_text()),
                                   config.world_model.min_reward_precision)
        if not trusted:
            accepted, reason = False, f"held: {why}"
        else:
            if not it.done("rl"):
                _emit("phase", phase="rl", iteration=iteration)
                metrics = _phase_rl(config, episodes, it, Path(current["path"]))
                _on_main("rl", it, lambda: metrics)
            rl = json.loads(it.output("rl.metrics.json").read_text())
            accepted = bool(rl["accepted"])
            reason = f"imagined success {rl['success_before']:.2f} -> {rl['success_after']:.2f}"
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
