"""The chunk-policy interface shared by the policy node (deployment) and the RL trainer.

Deployment needs only :class:`ChunkPolicy` (deterministic chunk, reset, save). RL additionally needs
:class:`RLChunkPolicy`: a stochastic chunk together with its Flow-SDE denoising chain and log-prob,
the log-prob of a stored chain under the current parameters, and a value from pooled prefix features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.checkpoint import read_config


@dataclass
class ObsBatch:
    """B observations stacked: views name -> (B,H,W,3) uint8, states (B,d) float32, one instruction each."""

    views: dict[str, np.ndarray]
    states: np.ndarray
    instructions: list[str]

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float32)
        if self.states.ndim != 2:
            raise ValueError(f"ObsBatch.states must be (B, d), got {self.states.shape}")
        size = self.states.shape[0]
        if len(self.instructions) != size:
            raise ValueError(f"ObsBatch.instructions has {len(self.instructions)} entries for batch {size}")
        for name, images in self.views.items():
            if images.ndim != 4 or images.shape[0] != size or images.shape[-1] != 3:
                raise ValueError(f"ObsBatch.views[{name!r}] must be (B,H,W,3), got {images.shape}")

    def __len__(self) -> int:
        return self.states.shape[0]

    @classmethod
    def from_observations(cls, observations: Sequence[Observation]) -> "ObsBatch":
        if not observations:
            raise ValueError("ObsBatch needs at least one observation")
        names = observations[0].view_order
        return cls(
            views={n: np.stack([np.asarray(o.views[n], dtype=np.uint8) for o in observations]) for n in names},
            states=np.stack([o.state for o in observations]),
            instructions=[o.instruction for o in observations],
        )

    def select(self, index: np.ndarray | Sequence[int]) -> "ObsBatch":
        index = np.asarray(index, dtype=np.int64)
        return ObsBatch(
            views={n: v[index] for n, v in self.views.items()},
            states=self.states[index],
            instructions=[self.instructions[i] for i in index],
        )

    @classmethod
    def concatenate(cls, batches: Iterable["ObsBatch"]) -> "ObsBatch":
        batches = list(batches)
        names = list(batches[0].views)
        return cls(
            views={n: np.concatenate([b.views[n] for b in batches]) for n in names},
            states=np.concatenate([b.states for b in batches]),
            instructions=[s for b in batches for s in b.instructions],
        )


@dataclass
class ChunkSample:
    """Result of stochastic (Flow-SDE) chunk sampling for a batch.

    ``actions`` are unnormalized joint targets; ``chain`` holds every denoising iterate in the policy's
    normalized action space (index 0 = pure noise, index K = the chunk); ``denoise_index`` is the one
    step that was stochastic; ``log_prob`` is that Gaussian transition's log-density (summed over k*d).
    """

    actions: np.ndarray  # (B, k, d) float32
    chain: torch.Tensor  # (B, K+1, k, d)
    denoise_index: torch.Tensor  # (B,) int64
    log_prob: torch.Tensor  # (B,)
    value: torch.Tensor  # (B,)


@runtime_checkable
class ChunkPolicy(Protocol):
    """What the policy node needs: a deterministic chunk per observation."""

    chunk_size: int
    action_dim: int
    view_names: tuple[str, ...]
    version: str

    def predict_chunk(self, obs: Observation) -> np.ndarray: ...  # (k, d) float32, unnormalized

    def reset(self) -> None: ...

    def save(self, directory: Path) -> None: ...


@runtime_checkable
class RLChunkPolicy(ChunkPolicy, Protocol):
    """What VLA-MBPO needs on top of deployment."""

    def predict_chunks(self, batch: ObsBatch) -> np.ndarray: ...  # (B, k, d) deterministic

    def sample_chunks(self, batch: ObsBatch, generator: torch.Generator) -> ChunkSample: ...

    def evaluate_chains(
        self, batch: ObsBatch, chain: torch.Tensor, denoise_index: torch.Tensor, with_value: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...  # log-prob (B,) with grad to actor params, value (B,)

    def value(self, batch: ObsBatch) -> torch.Tensor: ...  # (B,)

    def actor_parameters(self) -> list[torch.nn.Parameter]: ...

    def critic_parameters(self) -> list[torch.nn.Parameter]: ...

    def train(self, mode: bool = True) -> object: ...

    def eval(self) -> object: ...


PolicyLoader = Callable[[Path, str], ChunkPolicy]  # (checkpoint directory, torch device)
_LOADERS: dict[str, PolicyLoader] = {}


def register_policy_type(type_name: str, loader: PolicyLoader) -> None:
    """Register how to load checkpoints whose config.json "type" is ``type_name``."""
    _LOADERS[type_name] = loader


def load_policy(directory: str | Path, device: str = "cpu") -> ChunkPolicy:
    """Load a policy checkpoint directory onto ``device``, dispatching on config.json "type". Never unpickles."""
    config = read_config(Path(directory))
    _register_builtin_types()
    loader = _LOADERS.get(config["type"])
    if loader is None:
        raise ValueError(f"unknown policy type {config['type']!r} in {directory}; known: {sorted(_LOADERS)}")
    return loader(Path(directory), device)


def _register_builtin_types() -> None:
    # Imported lazily: the adapters import torch models, and lerobot only when a LeRobot checkpoint is loaded.
    from vla_mbpo_ros.core.policy import (
        lerobot_adapter,  # noqa: F401  (registers "lerobot_flow"; lerobot loads lazily)
        replay,  # noqa: F401  (registers "replay")
    )
    from vla_mbpo_ros.core.policy.compact import modeling  # noqa: F401  (registers "compact_flow_vla")
