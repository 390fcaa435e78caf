"""Chunk-level branched rollouts in a world model (and their full-horizon / deterministic variants)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from vla_mbpo_ros.core.policy.base import ObsBatch
from vla_mbpo_ros.core.rl.gae import valid_steps
from vla_mbpo_ros.core.rl.start_states import StartState, start_states_to_batch
from vla_mbpo_ros.core.rl.world_model import StatefulWorldModel


@dataclass
class RolloutBuffer:
    """M branches x n chunks. Observations are stored step-major: row ``c * M + m`` of ``observations`` is
    branch m before chunk c. Tensors are (M, n, ...)."""

    observations: ObsBatch  # n*M observations
    final_observations: ObsBatch  # M observations after the last chunk (bootstrap states)
    actions: np.ndarray  # (M, n, k, d) unnormalized
    chains: torch.Tensor  # (M, n, K+1, k, d)
    denoise_index: torch.Tensor  # (M, n)
    log_probs: torch.Tensor  # (M, n) behaviour log-probs
    values: torch.Tensor  # (M, n)
    bootstrap_values: torch.Tensor  # (M,)
    rewards: torch.Tensor  # (M, n)
    dones: torch.Tensor  # (M, n) bool: the branch terminated (success) at this chunk

    @property
    def num_branches(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_chunks(self) -> int:
        return self.rewards.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        return valid_steps(self.dones)

    def observation_rows(self, branch: torch.Tensor, chunk: torch.Tensor) -> np.ndarray:
        return (chunk * self.num_branches + branch).numpy()

    def success_rate(self) -> float:
        """Fraction of branches whose world model reported success within the n chunks."""
        return float(self.dones.any(dim=1).float().mean())

    @staticmethod
    def concatenate(buffers: Sequence["RolloutBuffer"]) -> "RolloutBuffer":
        """Join buffers along the branch axis (all must have the same n)."""
        n = buffers[0].num_chunks
        steps = [ObsBatch.concatenate(b.observations.select(np.arange(c * b.num_branches, (c + 1) * b.num_branches))
                                      for b in buffers) for c in range(n)]
        return RolloutBuffer(
            observations=ObsBatch.concatenate(steps),
            final_observations=ObsBatch.concatenate(b.final_observations for b in buffers),
            actions=np.concatenate([b.actions for b in buffers]),
            **{name: torch.cat([getattr(b, name) for b in buffers]) for name in (
                "chains", "denoise_index", "log_probs", "values", "bootstrap_values", "rewards", "dones")})


def _step_world(world_model: Any, batch: ObsBatch, chunks: np.ndarray, rows: np.ndarray,
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    result = world_model.step({n: v[rows] for n, v in batch.views.items()}, chunks[rows],
                              [batch.instructions[i] for i in rows])
    if len(result) not in (2, 3):
        raise ValueError("world_model.step must return (views, rewards) or (views, rewards, joint_states)")
    return result[0], np.asarray(result[1], dtype=np.float32).reshape(-1), (result[2] if len(result) == 3 else None)


def _next_batch(batch: ObsBatch, rows: np.ndarray, views: dict[str, np.ndarray],
                joint_states: np.ndarray | None) -> ObsBatch:
    """Write the world model's results into rows ``rows``; joint state stays frozen unless returned."""
    next_views = {}
    for name, current in batch.views.items():
        if name not in views:
            raise ValueError(f"world model returned no {name!r} view (got {sorted(views)})")
        if views[name].shape[1:] != current.shape[1:]:
            raise ValueError(f"world model returned {name!r} at {views[name].shape[1:]}, expected {current.shape[1:]}")
        updated = current.copy()
        updated[rows] = views[name]
        next_views[name] = updated
    states = batch.states.copy()
    if joint_states is not None:
        states[rows] = joint_states
    return ObsBatch(next_views, states, list(batch.instructions))


def branched_rollout(policy: Any, world_model: Any, start_states: Sequence[StartState], num_chunks: int,
                     generator: torch.Generator) -> RolloutBuffer:
    """Roll out ``num_chunks`` Flow-SDE chunks from every start state at once.

    A branch terminates at its first reward; later chunks are still stored (masked by ``valid``). A
    stateless world model is stepped on live branches only; a ``StatefulWorldModel`` on all of them.
    """
    if num_chunks <= 0:
        raise ValueError(f"num_chunks must be positive, got {num_chunks}")
    policy.eval()
    batch = start_states_to_batch(start_states)
    size = len(batch)
    stateful = isinstance(world_model, StatefulWorldModel)
    if stateful:
        world_model.begin_branches(start_states)
    alive = np.ones(size, dtype=bool)
    steps, samples, rewards, dones = [], [], [], []
    for _ in range(num_chunks):
        sample = policy.sample_chunks(batch, generator)
        steps.append(batch)
        samples.append(sample)
        rows = np.arange(size) if stateful else np.flatnonzero(alive)
        reward = np.zeros(size, dtype=np.float32)
        if len(rows):
            views, step_reward, joint_states = _step_world(world_model, batch, sample.actions, rows)
            reward[rows] = step_reward
            batch = _next_batch(batch, rows, views, joint_states)
        reward *= alive
        done = alive & (reward > 0)
        rewards.append(reward)
        dones.append(done)
        alive &= ~done
    with torch.no_grad():
        bootstrap = policy.value(batch)
    return RolloutBuffer(
        observations=ObsBatch.concatenate(steps),
        final_observations=batch,
        actions=np.stack([s.actions for s in samples], axis=1),
        chains=torch.stack([s.chain for s in samples], dim=1),
        denoise_index=torch.stack([s.denoise_index for s in samples], dim=1),
        log_probs=torch.stack([s.log_prob for s in samples], dim=1),
        values=torch.stack([s.value for s in samples], dim=1),
        bootstrap_values=bootstrap,
        rewards=torch.from_numpy(np.stack(rewards, axis=1)),
        dones=torch.from_numpy(np.stack(dones, axis=1)),
    )


def deterministic_success_rate(policy: Any, world_model: Any, start_states: Sequence[StartState],
                               num_chunks: int) -> float:
    """Fraction of start states from which the deterministic policy reaches a reward within ``num_chunks``."""
    policy.eval()
    batch = start_states_to_batch(start_states)
    if isinstance(world_model, StatefulWorldModel):
        world_model.begin_branches(start_states)
        stateful = True
    else:
        stateful = False
    alive = np.ones(len(batch), dtype=bool)
    for _ in range(num_chunks):
        chunks = policy.predict_chunks(batch)
        rows = np.arange(len(batch)) if stateful else np.flatnonzero(alive)
        if not len(rows):
            break
        views, reward, joint_states = _step_world(world_model, batch, chunks, rows)
        full = np.zeros(len(batch), dtype=np.float32)
        full[rows] = reward
        batch = _next_batch(batch, rows, views, joint_states)
        alive &= ~(full > 0)
    return float(1.0 - alive.mean())


def replay_chunks(world_model: Any, start_states: Sequence[StartState], actions: np.ndarray) -> np.ndarray:
    """Step ``world_model`` through given chunks (M, n, k, d) from ``start_states``: the (M, n) rewards,
    zero after a branch's first one, as in ``branched_rollout``. With the simulator as ``world_model`` this
    is the ground truth of imagined branches (same start physics, same chunks)."""
    actions = np.asarray(actions)
    if actions.ndim != 4 or len(actions) != len(start_states):
        raise ValueError(f"actions must be (M, n, k, d) for {len(start_states)} start states, got {actions.shape}")
    batch = start_states_to_batch(start_states)
    stateful = isinstance(world_model, StatefulWorldModel)
    if stateful:
        world_model.begin_branches(start_states)
    alive = np.ones(len(batch), dtype=bool)
    rewards = np.zeros(actions.shape[:2], dtype=np.float32)
    for chunk in range(actions.shape[1]):
        rows = np.arange(len(batch)) if stateful else np.flatnonzero(alive)
        if not len(rows):
            break
        views, reward, joint_states = _step_world(world_model, batch, actions[:, chunk], rows)
        full = np.zeros(len(batch), dtype=np.float32)
        full[rows] = reward
        rewards[:, chunk] = full * alive
        batch = _next_batch(batch, rows, views, joint_states)
        alive &= ~(full > 0)
    return rewards


def success_agreement(imagined: np.ndarray, replayed: np.ndarray) -> dict[str, float]:
    """Per-branch success (any reward) in imagination vs the ground-truth replay of the same chunks.

    ``agreement``: of the branches that succeeded in imagination or in the replay, the fraction that
    succeeded in both (a model that never imagines a success scores 0, however rare successes are);
    ``false_success_rate``: of the branches imagined successful, the fraction that did not succeed (what
    RL would be rewarded for); ``missed_success_rate``: of the truly successful ones, the fraction
    imagination missed. nan where there is nothing to divide by.
    """
    imagined_success = np.asarray(imagined).reshape(len(imagined), -1).max(axis=1) > 0
    true_success = np.asarray(replayed).reshape(len(replayed), -1).max(axis=1) > 0
    either = imagined_success | true_success
    return {
        "branches": float(len(imagined_success)),
        "imagined_success": float(imagined_success.mean()) if len(imagined_success) else float("nan"),
        "true_success": float(true_success.mean()) if len(true_success) else float("nan"),
        "agreement": float((imagined_success & true_success).sum() / either.sum()) if either.any() else float("nan"),
        "false_success_rate": float((~true_success[imagined_success]).mean()) if imagined_success.any() else float("nan"),
        "missed_success_rate": float((~imagined_success[true_success]).mean()) if true_success.any() else float("nan"),
    }
