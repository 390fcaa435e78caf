"""Value head V(s, l): an MLP on mean-pooled prefix (vision + language) features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ValueHeadConfig:
    hidden_sizes: tuple[int, ...] = (1024, 512, 256, 128)  # the paper's 1024-512-256-128-1

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if any(h <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")


class ValueHead(nn.Module):
    """ReLU MLP feature_dim -> hidden... -> 1."""

    def __init__(self, feature_dim: int, config: ValueHeadConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = feature_dim
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, pooled_features: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled_features).squeeze(-1)


def masked_mean_pool(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: tokens (B,N,D), valid (B,N) bool -> (B,D)."""
    weights = valid.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
