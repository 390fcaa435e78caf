"""The phases of one outer iteration (core.loop.pipeline runs them): behaviour cloning of the first
policy, world-model finetuning with its reward scored on unseen episodes first, and the RL phase
(branched imagined rollouts + PPO, validated by the trainer). Each returns the metrics its phase records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.loop.run_dir import IterationDir
from vla_mbpo_ros.core.loop.setup import DeviceSetup, PipelineConfig, WorldModelSetup
from vla_mbpo_ros.core.policy.base import load_policy
from vla_mbpo_ros.core.policy.bc import BCArrays, train_bc
from vla_mbpo_ros.core.policy.compact import CompactFlowVLA
from vla_mbpo_ros.core.policy.lerobot_robot import RobotInterface, check_frame_skip
from vla_mbpo_ros.core.rl.start_states import StartStateSampler
from vla_mbpo_ros.core.rl.trainer import MBPOTrainer
from vla_mbpo_ros.core.util import distributed
from vla_mbpo_ros.core.util.images import resize_uint8
from vla_mbpo_ros.core.world_model.codec import ACTION_STATS_FILE
from vla_mbpo_ros.core.world_model.configuration import WORLD_MODEL_CONFIG_FILE
from vla_mbpo_ros.core.world_model.data import action_stats, build_samples
from vla_mbpo_ros.core.world_model.evaluate import render_examples
from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model
from vla_mbpo_ros.core.world_model.umm import UMMWorldModel


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


def phase_bc(config: PipelineConfig, episodes: list[Episode], it: IterationDir) -> dict[str, Any]:
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


def phase_world_model(config: PipelineConfig, episodes: list[Episode], it: IterationDir, previous: Path | None,
                       unseen: int) -> dict[str, Any]:
    """Finetune the world model on every episode; first score its reward on the last ``unseen`` episodes,
    which it has not been trained on."""
    model, train = load_world_model(config, episodes, previous)
    wm_episodes = _at_size(episodes, model.core.und_size)
    # bf16 setups: the model holds fp32 masters beside bf16 frozen parts; it runs under autocast.
    autocast = _autocast(config.devices.world_model_training, config.devices)
    with autocast:
        held_out = held_out_reward_scores(model, wm_episodes[len(wm_episodes) - unseen:], config.world_model) \
            if unseen and (previous or config.world_model.pretrained) else {}
    dynamics, reward = model.training_samples(wm_episodes, config.world_model.data)
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


def held_out_reward_scores(model: Any, episodes: list[Episode], setup: WorldModelSetup) -> dict[str, float]:
    """Precision/recall of the model's Yes and AUROC of its P(Yes) on the labelled frames of ``episodes``
    (nan where undefined); then, with ``reward_calibration_precision``, its threshold recalibrated on them."""
    from vla_mbpo_ros.core.world_model.evaluate import score_unseen_reward

    _, reward = build_samples(episodes, model.view_names, dataclasses.replace(setup.data, yes_oversample=1),
                               model.config.reward_from)
    if not len(reward):
        return {}
    scores = score_unseen_reward(model, reward, setup.reward_calibration_precision)
    return {k: scores[k] for k in ("samples", "positives", "precision", "recall", "auroc", "recalibrated_threshold")
            if k in scores}


def demonstrations(episodes: list[Episode], policy: Any) -> BCArrays:
    """The BC anchor's data: the episodes a person or a scripted expert drove (not the policy's own), except
    those labelled failures (an unlabelled demonstration counts, as it does for BC)."""
    demos = [e for e in episodes if e.source != "policy" and e.success is not False and len(e)]
    if not demos:
        raise ValueError("mbpo.bc_anchor_coef > 0 needs demonstrations (episodes whose source is not 'policy') "
                         "in the dataset")
    return BCArrays.from_episodes(_at_size(demos, policy.image_size), policy.train_chunk_size)


def phase_rl(config: PipelineConfig, episodes: list[Episode], it: IterationDir, policy_dir: Path,
             progress: Callable[..., None], recent: list[Episode] = ()) -> dict[str, Any]:
    """Branched imagined rollouts + PPO from the running policy; ``progress(**values)`` after each refill.
    ``recent``: the episodes since the last iteration; the running policy's labelled ones are its real success
    (``mbpo.calibrated_validation``)."""
    devices = config.devices
    policy = load_policy(policy_dir, device=distributed.local_device(devices.policy))
    check_frame_skip(policy.chunk_size, config.world_model.data.chunk_size)
    # Imagination only infers: the world model in the setup's dtype (its saved fp32 masters need not be).
    world_model = UMMWorldModel.from_pretrained(it.output("world_model"), device=distributed.local_device(devices.imagination),
                                                dtype=devices.torch_dtype)
    sampler = StartStateSampler(stride=policy.chunk_size)
    sampler.add_episodes(_at_size(episodes, policy.image_size))
    mbpo = dataclasses.replace(config.mbpo, seed=config.seed)
    anchor = demonstrations(episodes, policy) if mbpo.bc_anchor_coef else None
    trainer = MBPOTrainer(policy, world_model, sampler, mbpo, anchor=anchor)

    def on_iteration(index: int, stats: dict[str, float]) -> None:
        progress(phase="rl", step=index + 1, total=mbpo.num_iterations, **stats)

    with _autocast(devices.policy, devices):
        running = [e for e in recent if e.source == "policy" and e.success is not None]
        result = trainer.train(on_iteration=on_iteration,
                               real_success=(sum(bool(e.success) for e in running), len(running)))
    if distributed.is_main():  # every process holds the same weights
        policy.save(it.staging("candidate"))
        it.commit("candidate")
    history = result.pop("history")
    diagnostics = {key: [h.get(key) for h in history] for key in ("imagined_success", "approx_kl", "clip_fraction",
                                                                    "explained_variance", "actor_loss", "value_loss",
                                                                    "anchor_loss")}
    return {**result, "start_states": len(sampler), **diagnostics}


