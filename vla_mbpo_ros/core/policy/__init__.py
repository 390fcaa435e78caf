"""Chunk policies: the deployment/RL interface, the built-in compact flow VLA, Flow-SDE, checkpoints."""

from vla_mbpo_ros.core.policy.base import ChunkPolicy, ObsBatch, RLChunkPolicy, load_policy
from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256

__all__ = ["ChunkPolicy", "ObsBatch", "RLChunkPolicy", "checkpoint_sha256", "load_policy"]
