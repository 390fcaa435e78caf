"""Configuration of the built-in compact flow-matching VLA (config-as-data: every field is a YAML key)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_mbpo_ros.core.policy.flow_sde import FlowSDEConfig
from vla_mbpo_ros.core.policy.value_head import ValueHeadConfig
from vla_mbpo_ros.core.util.config import build_nested_configs, load_config, read_params

POLICY_TYPE = "compact_flow_vla"


@dataclass
class CompactFlowVLAConfig:
    view_names: tuple[str, ...] = ("head", "wrist")
    image_size: int = 64  # square input resolution per view (px)
    state_dim: int = 6
    action_dim: int = 6
    chunk_size: int = 10  # k
    width: int = 128  # token width of prefix and action expert
    num_heads: int = 4
    conv_channels: tuple[int, ...] = (32, 64)  # stride-2 conv stages before the final stage to `width`
    token_grid: int = 4  # image tokens per view = token_grid ** 2
    prefix_layers: int = 1
    expert_layers: int = 2
    mlp_ratio: int = 4
    vocab_size: int = 4096  # hashed instruction vocabulary
    max_instruction_tokens: int = 16  # including [CLS]
    normalization: str = "mean_std"  # "mean_std" or "min_max" for state and actions
    # Deterministic Euler steps at deployment; 0: the K = sde.num_steps of the chain RL optimises, so the
    # executor runs the policy that was trained (a larger value is a different, untrained sampler).
    inference_steps: int = 0
    deploy_noise: str = "zero"  # "zero": start the ODE at the prior mean (deterministic); "sample": random
    time_beta_alpha: float = 1.5  # BC flow time ~ Beta(alpha, 1) (pi0 uses 1.5), biased towards noise
    train_prefix_in_rl: bool = False  # RL actor trains the action expert only unless set
    sde: FlowSDEConfig = field(default_factory=FlowSDEConfig)
    value_head: ValueHeadConfig = field(default_factory=ValueHeadConfig)

    def __post_init__(self) -> None:
        build_nested_configs(self, sde=FlowSDEConfig, value_head=ValueHeadConfig)
        self.view_names = tuple(self.view_names)
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        if self.time_beta_alpha <= 0:
            raise ValueError(f"time_beta_alpha must be > 0, got {self.time_beta_alpha}")
        if not self.view_names:
            raise ValueError("view_names must name at least one view")
        for name in ("image_size", "state_dim", "action_dim", "chunk_size", "width", "num_heads", "token_grid",
                     "expert_layers", "mlp_ratio", "vocab_size", "max_instruction_tokens"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.inference_steps < 0:
            raise ValueError(f"inference_steps must be >= 0, got {self.inference_steps}")
        if self.prefix_layers < 0:
            raise ValueError(f"prefix_layers must be >= 0, got {self.prefix_layers}")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        if self.normalization not in ("mean_std", "min_max"):
            raise ValueError(f"normalization must be 'mean_std' or 'min_max', got {self.normalization!r}")
        if self.deploy_noise not in ("zero", "sample"):
            raise ValueError(f"deploy_noise must be 'zero' or 'sample', got {self.deploy_noise!r}")
        if self.image_size < 2 ** (len(self.conv_channels) + 1):
            raise ValueError(f"image_size {self.image_size} too small for {len(self.conv_channels) + 1} conv stages")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompactFlowVLAConfig":
        return load_config(cls, data, "policy")

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str = "policy_node", prefix: str = "policy") -> "CompactFlowVLAConfig":
        """Read a plain mapping of fields, or a ROS 2 params file (``<node_name>: ros__parameters: <prefix>:``)."""
        return cls.from_dict(read_params(path, node_name, prefix))
