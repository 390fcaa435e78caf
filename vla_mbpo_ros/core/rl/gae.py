"""Chunk-level GAE over branched rollouts.

One step = one action chunk. A branch terminates at its first reward (success); steps after that are
invalid (masked out of every loss), the terminating step itself is valid and carries the reward. After
the last imagined chunk the branch bootstraps from V at the final imagined state.

    delta_t = r_t + g * (1 - done_t) * V_{t+1} - V_t,   A_t = delta_t + g * lambda * (1 - done_t) * A_{t+1}

with g = gamma per chunk (the released code) or gamma ** k (the paper's chunk MDP), chosen by a switch.
"""

from __future__ import annotations

import torch


def chunk_discount(gamma: float, chunk_size: int, discount_per_step: bool) -> float:
    """gamma ** k when ``discount_per_step`` (paper), else gamma per chunk (released code)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    return gamma ** chunk_size if discount_per_step else gamma


def valid_steps(dones: torch.Tensor) -> torch.Tensor:
    """(M,n) bool: True until and including the first terminal step of each branch."""
    dones = dones.to(torch.float32)
    terminated_before = torch.cumsum(dones, dim=1) - dones
    return terminated_before == 0


def chunk_gae(rewards: torch.Tensor, values: torch.Tensor, bootstrap_values: torch.Tensor, dones: torch.Tensor,
              discount: float, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rewards, values, dones (M,n); bootstrap_values (M,) = V(s_n). Returns advantages, returns, valid (M,n);
    advantages and returns are zero on invalid steps."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    rewards, values = rewards.to(torch.float32), values.to(torch.float32)
    nonterminal = 1.0 - dones.to(torch.float32)
    valid = valid_steps(dones)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(bootstrap_values, dtype=torch.float32)
    next_value = bootstrap_values.to(torch.float32)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + discount * nonterminal[:, t] * next_value - values[:, t]
        running = delta + discount * lam * nonterminal[:, t] * running
        advantages[:, t] = running
        next_value = values[:, t]
    mask = valid.to(torch.float32)
    return advantages * mask, (advantages + values) * mask, valid


def normalize_advantages(advantages: torch.Tensor, valid: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit std over the valid steps only; invalid steps stay 0."""
    selected = advantages[valid]
    if selected.numel() < 2:
        return advantages * valid
    mean, std = selected.mean(), selected.std(unbiased=False)
    return torch.where(valid, (advantages - mean) / (std + eps), torch.zeros_like(advantages))
