"""The MuJoCo SO-101 sim as a ground-truth world model for branched rollouts (``core.rl.world_model``).

The learning bench's upper bound: it isolates the RL machinery from the learned world model's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vla_mbpo_ros.core.rl.start_states import StartState


@dataclass
class SimWorldModelConfig:
    control_steps_per_action: int = 1  # sim.step() calls (control periods) per action of the chunk

    def __post_init__(self) -> None:
        if self.control_steps_per_action <= 0:
            raise ValueError(f"control_steps_per_action must be positive, got {self.control_steps_per_action}")


class SimWorldModel:
    """The MuJoCo SO-101 sim as ground-truth world model: restores each branch's ``sim_state`` and executes
    the chunk. Returns joint states too, so imagined observations carry the true state.

    ``sim`` is a ``vla_mbpo_ros.core.sim.So101Sim`` (or anything with its API: set_state, get_state,
    set_joint_targets, step, joint_positions, render(fresh=True) -> {view: image}, is_success). The reward
    is 1 when the task succeeded at any step of the chunk.
    """

    def __init__(self, sim: Any, config: SimWorldModelConfig | None = None) -> None:
        self.sim = sim
        self.config = config or SimWorldModelConfig()
        self._states: list[np.ndarray] = []

    def begin_branches(self, start_states: Sequence[StartState]) -> None:
        missing = [i for i, s in enumerate(start_states) if s.sim_state is None]
        if missing:
            raise ValueError(f"SimWorldModel needs StartState.sim_state; missing for branches {missing[:5]}")
        self._states = [np.asarray(s.sim_state, dtype=np.float64).copy() for s in start_states]

    def step(self, views: dict[str, np.ndarray], chunks: np.ndarray,
             instructions: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        if len(chunks) != len(self._states):
            raise ValueError(f"step got {len(chunks)} chunks for {len(self._states)} branches; call begin_branches")
        next_views: dict[str, list[np.ndarray]] = {}
        rewards, joint_states = [], []
        for row, chunk in enumerate(np.asarray(chunks, dtype=np.float64)):
            self.sim.set_state(self._states[row])
            success = False
            for action in chunk:
                self.sim.set_joint_targets(action)
                for _ in range(self.config.control_steps_per_action):
                    self.sim.step()
                success = success or bool(self.sim.is_success())
            self._states[row] = np.asarray(self.sim.get_state(), dtype=np.float64).copy()
            for name, image in self.sim.render(fresh=True).items():
                next_views.setdefault(name, []).append(np.asarray(image, dtype=np.uint8))
            rewards.append(float(success))
            joint_states.append(np.asarray(self.sim.joint_positions(), dtype=np.float32))
        return ({n: np.stack(v) for n, v in next_views.items()}, np.asarray(rewards, dtype=np.float32),
                np.stack(joint_states))


def sim_start_states(sim: Any, seeds: Sequence[int], instruction: str) -> list[StartState]:
    """Episode-start states of the simulator (reset with each seed), carrying the physics state: the start
    states of model-free PPO in the simulator and of ground-truth evaluation."""
    states = []
    for episode, seed in enumerate(seeds):
        sim.reset(seed=int(seed))
        states.append(StartState(
            views={n: np.asarray(v, dtype=np.uint8) for n, v in sim.render(fresh=True).items()},
            state=np.asarray(sim.joint_positions(), dtype=np.float32), instruction=instruction,
            sim_state=np.asarray(sim.get_state(), dtype=np.float64).copy(), episode_index=episode, frame_index=0,
            source="rollout"))
    return states
