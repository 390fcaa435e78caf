"""The setup of one VLA-MBPO loop (``PipelineConfig``): which policy and world model, how they are trained,
where each phase runs. One YAML file describes it (config/finetune_sim.yaml, config/finetune_gpu.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vla_mbpo_ros.core.policy.bc import BCConfig
from vla_mbpo_ros.core.policy.compact import CompactFlowVLAConfig
from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig
from vla_mbpo_ros.core.rl.trainer import MBPOConfig
from vla_mbpo_ros.core.util.config import load_config_file
from vla_mbpo_ros.core.util.memory_plan import MemorySetup
from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig, WorldModelConfig
from vla_mbpo_ros.core.world_model.data import DataConfig
from vla_mbpo_ros.core.world_model.train import TrainConfig

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
    # > 0: once the reward is scored on those unseen frames, its threshold moves to the highest recall at
    # this precision on them (kept where a class is missing or none reaches it): the pretraining's threshold
    # was set on its own corpus, not on the current policy's frames. 0 = the threshold stays.
    reward_calibration_precision: float = 0.0
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    tiny: TinyArchConfig = field(default_factory=TinyArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name in ("min_reward_precision", "reward_calibration_precision"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a precision in [0, 1], got {getattr(self, name)}")


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
