"""Start states for branched rollouts: chunk-aligned frames of real episodes (demos and policy rollouts,
successes and failures), sampled uniformly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.policy.base import ObsBatch


@dataclass
class StartState:
    views: dict[str, np.ndarray]  # name -> (H,W,3) uint8
    state: np.ndarray  # (d,) joint state
    instruction: str
    sim_state: np.ndarray | None = None  # physics state, only where the simulator is the world model
    episode_index: int = -1
    frame_index: int = 0
    source: str = ""  # the episode's source: "scripted_expert", "policy", ...
    success: bool | None = None  # outcome of the episode the frame comes from, when known


def start_states_to_batch(states: Sequence[StartState]) -> ObsBatch:
    names = list(states[0].views)
    return ObsBatch(views={n: np.stack([s.views[n] for s in states]) for n in names},
                    states=np.stack([np.asarray(s.state, dtype=np.float32) for s in states]),
                    instructions=[s.instruction for s in states])


class StartStateSampler:
    """Holds chunk-aligned frames (every ``stride``-th frame of each episode) and samples them uniformly."""

    def __init__(self, stride: int) -> None:
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        self.stride = stride
        self.states: list[StartState] = []

    def __len__(self) -> int:
        return len(self.states)

    def add_episode(self, episode: Episode) -> None:
        """Every ``stride``-th frame of ``episode`` (with its physics state, when it has them)."""
        index = episode.index if episode.index >= 0 else 1 + max((s.episode_index for s in self.states), default=-1)
        for frame in range(0, len(episode), self.stride):
            self.states.append(StartState(
                views={n: np.asarray(v[frame], dtype=np.uint8) for n, v in episode.views.items()},
                state=np.asarray(episode.states[frame], dtype=np.float32), instruction=episode.instruction,
                sim_state=None if episode.sim_states is None else np.asarray(episode.sim_states[frame]),
                episode_index=index, frame_index=frame, source=episode.source, success=episode.success))

    def add_episodes(self, episodes: Iterable[Episode]) -> None:
        for episode in episodes:
            self.add_episode(episode)

    def sample(self, count: int, rng: np.random.Generator) -> list[StartState]:
        """``count`` states drawn uniformly with replacement."""
        if not self.states:
            raise ValueError("StartStateSampler is empty: add episodes first")
        return [self.states[i] for i in rng.integers(0, len(self.states), size=count)]

    def initial_states(self) -> list[StartState]:
        """Frame 0 of every episode (start states of the full-horizon baseline)."""
        return [s for s in self.states if s.frame_index == 0]
