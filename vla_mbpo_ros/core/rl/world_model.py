"""The world-model interface used by branched rollouts (the UMM, or the simulator as ground truth).

A world model maps (views, action chunk, instruction) to (views k steps later, reward) for a batch of
branches. It predicts images only: the imagined observation keeps the start state's joint ``state``
unchanged unless the world model also returns joint states (a third tuple element, (B, d)), as the
simulator does. This matches the paper's released code, whose world model predicts images only.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from vla_mbpo_ros.core.rl.start_states import StartState


@runtime_checkable
class WorldModel(Protocol):
    def step(self, views: dict[str, np.ndarray], chunks: np.ndarray,
             instructions: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """views: name -> (B,H,W,3) uint8; chunks (B,k,d) float32 unnormalized joint targets.

        Returns the views after the k actions (frame skip) and the reward (B,) in {0, 1}.
        """
        ...


@runtime_checkable
class StatefulWorldModel(WorldModel, Protocol):
    """A world model that needs the branches' start states (e.g. the simulator needs physics states).

    The rollout calls ``begin_branches`` once per rollout, then ``step`` on the full batch every chunk
    (terminated branches included, their results are masked), so row i always means branch i.
    """

    def begin_branches(self, start_states: Sequence[StartState]) -> None: ...
