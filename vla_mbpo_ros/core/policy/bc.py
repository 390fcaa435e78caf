"""Behaviour cloning (flow-matching loss) from a LeRobotDataset or from in-memory arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.policy.base import ObsBatch


@dataclass
class BCArrays:
    """Frames with the action chunk that starts at each frame.

    ``action_chunks[i]`` = actions[t : t+k] of frame i's episode, padded with the episode's last action
    past its end; ``action_valid`` marks the real (unpadded) entries.
    """

    views: dict[str, np.ndarray]  # name -> (N,H,W,3) uint8
    states: np.ndarray  # (N, sd) float32
    action_chunks: np.ndarray  # (N, k, d) float32
    action_valid: np.ndarray  # (N, k) bool
    instructions: list[str]
    actions: np.ndarray  # (N, d) the per-frame actions (for normalization stats)

    def __len__(self) -> int:
        return self.states.shape[0]

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode], chunk_size: int) -> "BCArrays":
        if not episodes:
            raise ValueError("from_episodes needs at least one episode")
        names = list(episodes[0].views)
        views: dict[str, list[np.ndarray]] = {n: [] for n in names}
        states, chunks, valid, instructions, actions = [], [], [], [], []
        for episode in episodes:
            length = len(episode)
            offsets = np.arange(length)[:, None] + np.arange(chunk_size)[None, :]
            valid.append(offsets < length)
            chunks.append(episode.actions[np.minimum(offsets, length - 1)])
            states.append(episode.states)
            actions.append(episode.actions)
            instructions += [episode.instruction] * length
            for n in names:
                views[n].append(episode.views[n])
        return cls(
            views={n: np.concatenate(v) for n, v in views.items()},
            states=np.concatenate(states),
            action_chunks=np.concatenate(chunks),
            action_valid=np.concatenate(valid),
            instructions=instructions,
            actions=np.concatenate(actions),
        )


def bc_arrays_from_lerobot(dataset: Any, view_names: Sequence[str], chunk_size: int,
                           image_size: int | None = None) -> BCArrays:
    """BC arrays of an open LeRobotDataset (images resized to ``image_size`` when given)."""
    from vla_mbpo_ros.core.data.reader import read_episodes

    return BCArrays.from_episodes(read_episodes(dataset, view_names, image_size), chunk_size)


@dataclass
class BCConfig:
    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    fit_normalization: bool = True  # recompute state/action stats from the data before training
    # "cosine": linear warm-up over warmup_steps (at most a tenth of the steps), then cosine decay to 0 (small steps at the end, where
    # the flow's precision near the grasp is decided); "constant": learning_rate throughout.
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    # Random-shift augmentation (DrQ): each training view is edge-padded by this many pixels (at its stored
    # resolution) and cropped back at a random offset; 0 = off. A few dozen demonstrations are a few
    # thousand nearly identical frames: without it the image encoder memorises them.
    shift_px: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.shift_px < 0:
            raise ValueError(f"shift_px must be >= 0, got {self.shift_px}")


def learning_rate_factor(config: BCConfig, step: int) -> float:
    """Multiplier of ``learning_rate`` at ``step`` (0-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "constant":
        return 1.0
    warmup = min(config.warmup_steps, config.steps // 10)  # short runs (tests) keep most steps at full size
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """(N,H,W,C) images, each shifted by up to ``pad`` pixels in x and y (edges replicated)."""
    if pad == 0:
        return images
    n, height, width = images.shape[:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    return np.stack([padded[i, dy[i]:dy[i] + height, dx[i]:dx[i] + width] for i in range(n)])


def train_bc(policy: Any, data: Any, config: BCConfig | None = None) -> list[float]:
    """Behaviour-clone ``policy`` on ``data`` (BCArrays or a LeRobotDataset): the compact VLA from
    scratch, or supervised finetuning of a LeRobot VLA with its own flow-matching loss.

    Returns the per-step loss. Leaves the policy in eval mode.
    """
    config = config or BCConfig()
    if not isinstance(data, BCArrays):
        data = bc_arrays_from_lerobot(data, policy.view_names, policy.train_chunk_size, policy.image_size)
    if data.action_chunks.shape[1] != policy.train_chunk_size:
        raise ValueError(f"data chunks have k={data.action_chunks.shape[1]}, policy learns {policy.train_chunk_size}")
    if config.fit_normalization or not bool(policy.normalization_fitted):
        policy.fit_normalization(data.states, data.actions)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    trainable = policy.bc_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(config, step))
    policy.train()
    losses = []
    for _ in range(config.steps):
        index = rng.integers(0, len(data), size=min(config.batch_size, len(data)))
        batch = ObsBatch(views={n: random_shift(v[index], config.shift_px, rng) for n, v in data.views.items()},
                         states=data.states[index],
                         instructions=[data.instructions[i] for i in index])
        loss = policy.flow_matching_loss(batch, torch.from_numpy(data.action_chunks[index]),
                                         torch.from_numpy(data.action_valid[index]), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    policy.eval()
    return losses
