"""Replay policy: plays back stored action chunks, cycling, whatever the observation says.

Checkpoint (config.json ``"type": "replay"``, like every other policy):

* ``model.safetensors``: one tensor ``actions`` of shape (n, k, d): n chunks of k joint targets;
* ``config.json``: ``{"type": "replay", "version": ..., "view_names": [...]}``.

Uses: replaying recorded actions on hardware (a dry run of the gate and the arm interface without
a model), and controllable policies for tests. ``view_names`` are checked against every
observation like a real VLA does, so a checkpoint expecting views the robot does not publish
fails on its first chunk instead of silently driving the arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import register_policy_type
from vla_mbpo_ros.core.policy.checkpoint import load_tensors, read_config, save_checkpoint

POLICY_TYPE = "replay"
ACTIONS_TENSOR = "actions"
_CONFIG_KEYS = {"type", "version", "view_names"}


class ReplayPolicy:
    """``ChunkPolicy`` returning chunk ``i mod n`` on the i-th call since the last ``reset()``."""

    def __init__(self, chunks: np.ndarray, view_names: Sequence[str] = (), version: str = "0") -> None:
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 3 or 0 in chunks.shape:
            raise ValueError(f"replay actions: expected a non-empty (n, k, d) array, got shape {chunks.shape}")
        # NaN/inf are kept on purpose: replaying a bad recording must reach the safety gate as is.
        self.chunks = chunks
        self.view_names = tuple(str(v) for v in view_names)
        self.version = str(version)
        self.chunk_size = int(chunks.shape[1])
        self.action_dim = int(chunks.shape[2])
        self._calls = 0

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        missing = [v for v in self.view_names if v not in obs.views]
        if missing:
            raise ValueError(f"observation lacks views {missing}; policy expects {list(self.view_names)}")
        chunk = self.chunks[self._calls % len(self.chunks)].copy()
        self._calls += 1
        return chunk

    def reset(self) -> None:
        """Start again from the first chunk (called at every episode start)."""
        self._calls = 0

    def save(self, directory: Path) -> None:
        config = {"type": POLICY_TYPE, "version": self.version, "view_names": list(self.view_names)}
        save_checkpoint(Path(directory), {ACTIONS_TENSOR: torch.from_numpy(self.chunks)}, config)

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> ReplayPolicy:
        config = read_config(Path(directory))
        if config["type"] != POLICY_TYPE:
            raise ValueError(f"{directory} holds a {config['type']!r} checkpoint, not {POLICY_TYPE!r}")
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ValueError(f"{directory}/config.json: unknown replay policy fields {unknown}")
        tensors = load_tensors(Path(directory))
        if set(tensors) != {ACTIONS_TENSOR}:
            raise ValueError(f"{directory}: a replay checkpoint holds exactly one tensor {ACTIONS_TENSOR!r}, got {sorted(tensors)}")
        view_names = config.get("view_names", [])
        if not isinstance(view_names, list) or not all(isinstance(v, str) for v in view_names):
            raise ValueError(f"{directory}/config.json: view_names must be a list of strings, got {view_names!r}")
        return cls(tensors[ACTIONS_TENSOR].numpy(), view_names, str(config.get("version", "0")))


register_policy_type(POLICY_TYPE, ReplayPolicy.load)
