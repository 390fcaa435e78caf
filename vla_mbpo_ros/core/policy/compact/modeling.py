"""Built-in compact flow-matching VLA: the CPU default and the policy the tests train.

Architecture (pi0-like, scaled down):
- prefix: every view is resized to ``image_size`` and encoded by one small conv net (shared weights) into a
  ``token_grid`` x ``token_grid`` token map, plus a learned view embedding and spatial position embedding;
  the instruction becomes hashed word tokens (crc32 of lower-case words, no tokenizer download) behind a
  [CLS] token; ``prefix_layers`` self-attention blocks fuse them. Mean-pooled prefix tokens feed the value head.
- action expert: a state token followed by k action tokens (+ position and flow-time embeddings), transformer
  blocks with self-attention and cross-attention to the prefix, predicting the flow velocity.
- normalization stats (state and action, mean/std or min/max) are buffers, so they live in the safetensors.
Attention is written out explicitly (no fused kernels) so that the same inputs give bitwise-identical
outputs in every mode, which keeps the PPO ratio exactly 1 before the first update.
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import ChunkSample, ObsBatch, register_policy_type
from vla_mbpo_ros.core.policy.checkpoint import load_tensors, read_config, save_checkpoint
from vla_mbpo_ros.core.policy.compact.configuration import POLICY_TYPE, CompactFlowVLAConfig
from vla_mbpo_ros.core.policy.flow_sde import FlowSDEConfig, chain_log_prob, sample_chain
from vla_mbpo_ros.core.policy.value_head import ValueHead, masked_mean_pool
from vla_mbpo_ros.core.util.images import resize_float

_PAD_ID = 0
_CLS_ID = 1


def hash_instruction(text: str, vocab_size: int, max_tokens: int) -> list[int]:
    """[CLS] + crc32-hashed lower-case words, truncated to ``max_tokens``; ids 0/1 are PAD/CLS."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    ids = [_CLS_ID] + [2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in words]
    return ids[:max_tokens]


class _Attention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape
        head_dim = width // self.num_heads
        q = self.query(x).view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.key_value(context).view(batch, context.shape[1], 2, self.num_heads, head_dim).unbind(dim=2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
        if context_valid is not None:
            scores = scores.masked_fill(~context_valid[:, None, None, :], float("-inf"))
        attended = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))


class _Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP. No dropout."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int, cross: bool) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(width)
        self.self_attn = _Attention(width, num_heads)
        self.cross_norm = nn.LayerNorm(width) if cross else None
        self.cross_attn = _Attention(width, num_heads) if cross else None
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None, context: torch.Tensor | None = None,
                context_valid: torch.Tensor | None = None) -> torch.Tensor:
        h = self.self_norm(x)
        x = x + self.self_attn(h, h, valid)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), context, context_valid)
        return x + self.mlp(self.mlp_norm(x))


def _sinusoidal(t: torch.Tensor, width: int) -> torch.Tensor:
    half = width // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * 1000.0 * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class CompactFlowVLA(nn.Module):
    """Compact flow-matching VLA implementing ``ChunkPolicy`` and ``RLChunkPolicy``."""

    def __init__(self, config: CompactFlowVLAConfig, version: str = "0") -> None:
        super().__init__()
        self.config = config
        self.version = version
        self.chunk_size = config.chunk_size
        self.action_dim = config.action_dim
        self.view_names = config.view_names
        width = config.width

        stages: list[nn.Module] = []
        channels_in = 3
        for channels in (*config.conv_channels, width):
            stages += [nn.Conv2d(channels_in, channels, 4, stride=2, padding=1), nn.GroupNorm(1, channels), nn.GELU()]
            channels_in = channels
        stages.append(nn.AdaptiveAvgPool2d(config.token_grid))
        self.image_encoder = nn.Sequential(*stages)
        self.view_embedding = nn.Parameter(0.02 * torch.randn(len(config.view_names), width))
        self.image_position = nn.Parameter(0.02 * torch.randn(config.token_grid ** 2, width))
        self.word_embedding = nn.Embedding(config.vocab_size, width)
        self.word_position = nn.Parameter(0.02 * torch.randn(config.max_instruction_tokens, width))
        self.prefix_blocks = nn.ModuleList(
            _Block(width, config.num_heads, config.mlp_ratio, cross=False) for _ in range(config.prefix_layers))
        self.prefix_norm = nn.LayerNorm(width)

        self.state_in = nn.Linear(config.state_dim, width)
        self.action_in = nn.Linear(config.action_dim, width)
        self.action_position = nn.Parameter(0.02 * torch.randn(config.chunk_size + 1, width))
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.expert_blocks = nn.ModuleList(
            _Block(width, config.num_heads, config.mlp_ratio, cross=True) for _ in range(config.expert_layers))
        self.expert_norm = nn.LayerNorm(width)
        self.action_out = nn.Linear(width, config.action_dim)

        self.value_head = ValueHead(width, config.value_head)

        for name, dim in (("state", config.state_dim), ("action", config.action_dim)):
            self.register_buffer(f"{name}_center", torch.zeros(dim))
            self.register_buffer(f"{name}_scale", torch.ones(dim))
        self.register_buffer("normalization_fitted", torch.zeros((), dtype=torch.bool))

    @property
    def device(self) -> torch.device:
        return self.action_center.device

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def train_chunk_size(self) -> int:
        return self.chunk_size

    # ----------------------------------------------------------------- normalization
    def fit_normalization(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Set state/action normalization from data: states (N, sd), actions (N, d)."""
        for name, data in (("state", states), ("action", actions)):
            data = torch.as_tensor(np.asarray(data, dtype=np.float32)).reshape(-1, getattr(self.config, f"{name}_dim"))
            if self.config.normalization == "mean_std":
                center, scale = data.mean(0), data.std(0, unbiased=False)
            else:
                low, high = data.min(0).values, data.max(0).values
                center, scale = (high + low) / 2, (high - low) / 2
            getattr(self, f"{name}_center").copy_(center)
            getattr(self, f"{name}_scale").copy_(scale.clamp_min(1e-3))
        self.normalization_fitted.fill_(True)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_center) / self.action_scale

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.action_scale + self.action_center

    # ----------------------------------------------------------------- encoding
    def _images(self, batch: ObsBatch) -> torch.Tensor:
        """(B*V,3,S,S) float in [-1,1] in view_names order."""
        missing = [n for n in self.view_names if n not in batch.views]
        if missing:
            raise ValueError(f"observation lacks views {missing}; policy expects {list(self.view_names)}")
        size = self.config.image_size
        per_view = []
        for name in self.view_names:
            images = torch.from_numpy(np.ascontiguousarray(batch.views[name])).to(self.device)
            per_view.append(resize_float(images.permute(0, 3, 1, 2).float() / 255.0, size))
        return torch.stack(per_view, dim=1).flatten(0, 1) * 2.0 - 1.0

    def _instruction_tokens(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        ids = torch.full((len(instructions), cfg.max_instruction_tokens), _PAD_ID, dtype=torch.long)
        for row, text in enumerate(instructions):
            tokens = hash_instruction(text, cfg.vocab_size, cfg.max_instruction_tokens)
            ids[row, : len(tokens)] = torch.tensor(tokens)
        ids = ids.to(self.device)
        return ids, ids != _PAD_ID

    def encode_prefix(self, batch: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix tokens (B,N,D) and their validity mask (B,N)."""
        batch_size, num_views = len(batch), len(self.view_names)
        features = self.image_encoder(self._images(batch))  # (B*V, D, G, G)
        image_tokens = features.flatten(2).transpose(1, 2).reshape(batch_size, num_views, -1, self.config.width)
        image_tokens = image_tokens + self.view_embedding[None, :, None, :] + self.image_position[None, None]
        image_tokens = image_tokens.flatten(1, 2)
        ids, word_valid = self._instruction_tokens(batch.instructions)
        words = self.word_embedding(ids) + self.word_position[None]
        tokens = torch.cat([image_tokens, words], dim=1)
        valid = torch.cat([torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=self.device), word_valid], dim=1)
        for block in self.prefix_blocks:
            tokens = block(tokens, valid)
        return self.prefix_norm(tokens), valid

    def pooled_prefix(self, prefix: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return masked_mean_pool(prefix, valid)

    def _states(self, batch: ObsBatch) -> torch.Tensor:
        states = torch.from_numpy(batch.states).to(self.device)
        if states.shape[1] != self.config.state_dim:
            raise ValueError(f"state has {states.shape[1]} dims, policy expects {self.config.state_dim}")
        return (states - self.state_center) / self.state_scale

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, prefix: torch.Tensor, prefix_valid: torch.Tensor,
                 states_normalized: torch.Tensor) -> torch.Tensor:
        """Flow velocity (B,k,d) for normalized noisy actions x_t (B,k,d) at times t (B,)."""
        time = self.time_mlp(_sinusoidal(t, self.config.width))[:, None, :]
        tokens = torch.cat([self.state_in(states_normalized)[:, None, :], self.action_in(x_t)], dim=1)
        tokens = tokens + self.action_position[None] + time
        for block in self.expert_blocks:
            tokens = block(tokens, None, prefix, prefix_valid)
        return self.action_out(self.expert_norm(tokens[:, 1:]))

    def _velocity_fn(self, batch: ObsBatch, detach_prefix: bool):
        prefix, valid = self.encode_prefix(batch)
        if detach_prefix:
            prefix = prefix.detach()
        states = self._states(batch)
        return (lambda x, t: self.velocity(x, t, prefix, valid, states)), prefix, valid

    # ----------------------------------------------------------------- deployment
    @torch.no_grad()
    def predict_chunks(self, batch: ObsBatch) -> np.ndarray:
        """Deterministic chunks (B,k,d), unnormalized: Euler integration from zero noise with the RL chain's
        K steps (or ``inference_steps``)."""
        velocity_fn, _, _ = self._velocity_fn(batch, detach_prefix=True)
        shape = (len(batch), self.chunk_size, self.action_dim)
        noise = torch.zeros(shape) if self.config.deploy_noise == "zero" else torch.randn(shape)
        steps = self.config.inference_steps or self.config.sde.num_steps
        sde = FlowSDEConfig(num_steps=steps, noise_level=self.config.sde.noise_level)
        chain = sample_chain(velocity_fn, noise.to(self.device), sde, denoise_index=None)
        return self.unnormalize_actions(chain[:, -1]).cpu().numpy().astype(np.float32)

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        return self.predict_chunks(ObsBatch.from_observations([obs]))[0]

    def reset(self) -> None:
        """The compact VLA keeps no state between chunks."""

    # ----------------------------------------------------------------- RL
    @torch.no_grad()
    def sample_chunks(self, batch: ObsBatch, generator: torch.Generator) -> ChunkSample:
        """Flow-SDE chunks with K = sde.num_steps and one random stochastic step per sample."""
        velocity_fn, _, _ = self._velocity_fn(batch, detach_prefix=True)
        sde = self.config.sde
        noise = torch.randn((len(batch), self.chunk_size, self.action_dim), generator=generator)
        denoise_index = torch.randint(0, sde.num_steps, (len(batch),), generator=generator)
        chain = sample_chain(velocity_fn, noise.to(self.device), sde, denoise_index, generator)
        # Same function PPO uses later, so the first ratio is exactly 1.
        log_prob, value = self.evaluate_chains(batch, chain, denoise_index)
        actions = self.unnormalize_actions(chain[:, -1]).cpu().numpy().astype(np.float32)
        return ChunkSample(actions=actions, chain=chain.cpu(), denoise_index=denoise_index, log_prob=log_prob.cpu(),
                           value=value.cpu())

    def evaluate_chains(self, batch: ObsBatch, chain: torch.Tensor, denoise_index: torch.Tensor,
                        with_value: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-prob of stored chains under current parameters, and V(s) from the detached pooled prefix."""
        velocity_fn, prefix, valid = self._velocity_fn(batch, detach_prefix=not self.config.train_prefix_in_rl)
        log_prob = chain_log_prob(velocity_fn, chain.to(self.device), denoise_index, self.config.sde)
        value = self.value_head(self.pooled_prefix(prefix, valid).detach()) if with_value else None
        return log_prob, value

    def value(self, batch: ObsBatch) -> torch.Tensor:
        prefix, valid = self.encode_prefix(batch)
        return self.value_head(self.pooled_prefix(prefix, valid).detach())

    def actor_parameters(self) -> list[nn.Parameter]:
        expert = [self.state_in, self.action_in, self.time_mlp, self.expert_blocks, self.expert_norm, self.action_out]
        params = [p for m in expert for p in m.parameters()] + [self.action_position]
        if self.config.train_prefix_in_rl:
            params += self.prefix_parameters()
        return params

    def prefix_parameters(self) -> list[nn.Parameter]:
        modules = [self.image_encoder, self.word_embedding, self.prefix_blocks, self.prefix_norm]
        return [p for m in modules for p in m.parameters()] + [
            self.view_embedding, self.image_position, self.word_position]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.value_head.parameters())

    # ----------------------------------------------------------------- behaviour cloning
    def bc_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("value_head.")]

    def flow_matching_loss(self, batch: ObsBatch, actions: torch.Tensor, action_valid: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """BC loss: MSE between predicted and target velocity (noise - actions), masked past episode ends."""
        velocity_fn, _, _ = self._velocity_fn(batch, detach_prefix=False)
        target_actions = self.normalize_actions(actions.to(self.device))
        noise = torch.randn(target_actions.shape, generator=generator).to(self.device)
        # Beta(alpha, 1) by inverse CDF u^(1/alpha), so the generator controls it.
        u = torch.rand(len(batch), generator=generator).to(self.device)
        t = u.pow(1.0 / self.config.time_beta_alpha) * 0.999 + 0.001
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * target_actions
        error = (velocity_fn(x_t, t) - (noise - target_actions)).square().mean(-1)
        weights = action_valid.to(self.device).float()
        return (error * weights).sum() / weights.sum().clamp_min(1.0)

    # ----------------------------------------------------------------- checkpoints
    def save(self, directory: Path) -> None:
        config = {"type": POLICY_TYPE, "version": self.version, "policy": self.config.to_dict()}
        save_checkpoint(Path(directory), dict(self.state_dict()), config)

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> "CompactFlowVLA":
        config = read_config(Path(directory))
        if config["type"] != POLICY_TYPE:
            raise ValueError(f"{directory} holds a {config['type']!r} checkpoint, not {POLICY_TYPE!r}")
        policy = cls(CompactFlowVLAConfig.from_dict(config["policy"]), version=str(config.get("version", "0")))
        policy.load_state_dict(load_tensors(Path(directory)), strict=True)
        return policy.to(device).eval()


register_policy_type(POLICY_TYPE, CompactFlowVLA.load)
