"""PPO for flow-matching chunk policies (Flow-SDE log-probs) with a clipped Huber value loss.

With several processes (torchrun / accelerate launch) the policy's PPO forward runs through
DistributedDataParallel: each process computes the loss on its own minibatch and the gradients are
averaged before the (identical) optimizer step, so every process holds the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from vla_mbpo_ros.core.policy.base import ObsBatch
from vla_mbpo_ros.core.util import distributed


@dataclass
class PPOConfig:
    clip_low: float = 0.1  # ratio clip for negative advantages (1 - eps)
    clip_high: float = 0.1  # ratio clip for positive advantages (1 + eps)
    value_clip: float = 0.5  # PPO-style clip of the value change around the stored value
    huber_delta: float = 10.0
    value_loss_coef: float = 1.0
    actor_lr: float = 5e-6
    critic_lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    weight_decay: float = 1e-10
    grad_clip: float = 1.0  # global grad-norm clip over actor + critic parameters
    # The chunk log-prob sums k x d Gaussian terms; the ratio is exp of their per-dimension MEAN log-ratio
    # (as RLinf's flow-policy PPO), so one clip range means the same for any chunk size. False: the sum.
    mean_log_ratio: bool = True
    # Stop the actor's updates on a refill once a minibatch's approx KL (per dimension) exceeds this
    # (0: never): the trust region PPO's clip alone does not keep when every dimension moves a little.
    target_kl: float = 0.05

    def __post_init__(self) -> None:
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        for name in ("clip_low", "clip_high", "value_clip", "huber_delta", "actor_lr", "critic_lr", "grad_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.clip_low >= 1.0:
            raise ValueError(f"clip_low must be < 1, got {self.clip_low}")
        if self.target_kl < 0:
            raise ValueError(f"target_kl must be >= 0, got {self.target_kl}")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


# A summed chunk log-prob (mean_log_ratio False) gives log-ratios of hundreds after a large step;
# exp() of that overflows to inf and inf * 0 advantages is NaN. Beyond +-20 the clip decides anyway.
MAX_LOG_RATIO = 20.0


def actor_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
               clip_low: float, clip_high: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate, masked mean; no KL and no entropy term."""
    # fp32 whatever the forward ran in: a bf16 difference of two log-densities of ~100 has an ulp of 0.5.
    log_ratio = (log_probs.float() - old_log_probs.float()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = _masked_mean(-torch.minimum(ratio * advantages, clipped * advantages), mask)
    with torch.no_grad():
        selected = ratio[mask.bool()] if bool(mask.any()) else ratio.new_ones(1)
        stats = {
            "ratio_mean": float(_masked_mean(ratio, mask)),
            "ratio_min": float(selected.min()), "ratio_max": float(selected.max()),
            "clip_fraction": float(_masked_mean(((ratio - clipped).abs() > 0).float(), mask)),
            "approx_kl": float(_masked_mean((ratio - 1.0) - log_ratio, mask)),  # CleanRL's k3 estimator
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               value_clip: float, huber_delta: float) -> torch.Tensor:
    """max(Huber(V - R), Huber(V_clipped - R)) with V_clipped = V_old + clip(V - V_old, +-value_clip)."""
    clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
    unclipped_loss = F.huber_loss(values, returns, reduction="none", delta=huber_delta)
    clipped_loss = F.huber_loss(clipped, returns, reduction="none", delta=huber_delta)
    return _masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)


class ActorCriticForward(nn.Module):
    """The policy's PPO forward as one module, the unit DDP wraps: log-probs and values of stored chains,
    or values only (critic steps; the actor's parameters are then unused, and DDP leaves their
    gradients None everywhere, as in one process, because every process skips the actor together)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observations: ObsBatch, chains: torch.Tensor, denoise_index: torch.Tensor,
                critic_only: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        if critic_only:
            return None, self.policy.value(observations)
        return self.policy.evaluate_chains(observations, chains, denoise_index)


class PPOUpdater:
    """One AdamW with two parameter groups (actor lr, critic lr) over what the policy exposes as trainable.

    ``data_parallel``: average gradients over the processes of torch.distributed when there are several.
    """

    def __init__(self, policy: Any, config: PPOConfig, data_parallel: bool = True) -> None:
        self.policy = policy
        self.config = config
        # Divides the stored and the new chunk log-probs alike (the per-dimension mean log-ratio).
        self.log_prob_dims = policy.chunk_size * policy.action_dim if config.mean_log_ratio else 1
        self.actor_params = [p for p in policy.actor_parameters() if p.requires_grad]
        self.critic_params = [p for p in policy.critic_parameters() if p.requires_grad]
        self.forward = ActorCriticForward(policy)
        # What PPO does not train gets no gradient, and DDP (which registers requires_grad parameters) no buckets.
        distributed.train_only(self.forward, self.actor_params + self.critic_params)
        if data_parallel:
            self.forward = distributed.data_parallel(self.forward, find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.actor_params, "lr": config.actor_lr},
             {"params": self.critic_params, "lr": config.critic_lr}],
            betas=config.adam_betas, eps=config.adam_eps, weight_decay=config.weight_decay)

    def update(self, observations: ObsBatch, chains: torch.Tensor, denoise_index: torch.Tensor,
               old_log_probs: torch.Tensor, old_values: torch.Tensor, advantages: torch.Tensor,
               returns: torch.Tensor, mask: torch.Tensor, critic_only: bool,
               anchor_loss: Callable[[], torch.Tensor] | None = None, anchor_coef: float = 0.0) -> dict[str, float]:
        """One gradient step on a minibatch (all tensors (B,)); actor term skipped when ``critic_only``.
        ``anchor_loss`` (e.g. the flow-matching loss on demonstrations) is added to the actor's loss with
        weight ``anchor_coef``."""
        cfg = self.config
        self.policy.train()
        stats: dict[str, float] = {}
        device = self.critic_params[0].device  # the minibatch is stored on the CPU
        old_log_probs, old_values, advantages, returns, mask = (
            t.to(device) for t in (old_log_probs, old_values, advantages, returns, mask))
        log_probs, values = self.forward(observations, chains, denoise_index, critic_only)
        if critic_only:
            loss = cfg.value_loss_coef * value_loss(values, old_values, returns, mask, cfg.value_clip,
                                                    cfg.huber_delta)
        else:
            policy_loss, stats = actor_loss(log_probs / self.log_prob_dims, old_log_probs / self.log_prob_dims,
                                            advantages, mask, cfg.clip_low, cfg.clip_high)
            critic = value_loss(values, old_values, returns, mask, cfg.value_clip, cfg.huber_delta)
            loss = policy_loss + cfg.value_loss_coef * critic
            stats["actor_loss"] = policy_loss.item()
            if anchor_loss is not None and anchor_coef > 0:
                anchor = anchor_loss()
                loss = loss + anchor_coef * anchor
                stats["anchor_loss"] = anchor.item()
        stats["value_loss"] = float(value_loss(values.detach(), old_values, returns, mask, cfg.value_clip,
                                               cfg.huber_delta))
        # The whole policy, not only the optimizer's parameters: an anchor loss also reaches parameters the
        # optimizer leaves be, whose gradients must not pile up over steps (this step's stay readable).
        self.policy.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.actor_params + self.critic_params,
                                                                  cfg.grad_clip))
        self.optimizer.step()
        self.policy.eval()
        return stats
