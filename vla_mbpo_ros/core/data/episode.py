"""The data types every part of the package shares: one synchronized ``Observation``, and an ``Episode``.

An ``Episode`` is the one episode type: what the recorder saves, what the dataset reader returns,
what the sim rollouts produce, and what behaviour cloning, the world model and the start-state
sampler read. Frame t is the observation before action t. numpy only (no torch, no ROS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Observation:
    """One time-synchronized observation: named camera views, joint state and the task text.

    ``views`` maps a view name ("head", "wrist", ...) to an HxWx3 uint8 RGB image. The first
    view in ``view_order`` is the head (global) view; the rest are wrist views.
    """

    views: dict[str, np.ndarray]
    state: np.ndarray  # (d,) float32 joint positions, SO101_JOINT_NAMES order by default
    instruction: str = ""
    stamp: float = 0.0  # seconds, reference time of the set
    view_order: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.view_order:
            self.view_order = tuple(self.views)
        self.state = np.asarray(self.state, dtype=np.float32)


@dataclass
class Episode:
    """One episode: ``views`` name -> (T, H, W, 3) uint8 (first view = head), ``states`` (T, d) and
    ``actions`` (T, d) float32 (the joint targets sent), the instruction and the outcome.

    Sim rollouts also carry the physics state of every frame (``sim_states``, for the simulator
    as world model), the reset ``seed``, ``steps_to_success`` (control steps, -1 without one) and
    ``control_steps``. An episode run for its outcome only has no frames (T = 0).
    """

    views: dict[str, np.ndarray]
    states: np.ndarray
    actions: np.ndarray
    instruction: str = ""
    success: bool | None = None  # None: unlabelled
    source: str = ""  # who drove the arm: "scripted_expert", "teleop", "policy", ...
    index: int = -1  # dataset episode index (-1: not from a dataset)
    sim_states: np.ndarray | None = None  # (T, S) float64, sim only
    seed: int | None = None  # sim reset seed
    steps_to_success: int = -1  # sim: control steps until the first success
    control_steps: int = 0  # sim: control steps run (actions are held for N steps each)

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        length = len(self.actions)
        if length == 0 and not self.views:  # an outcome-only episode
            self.states, self.actions = self.states.reshape(0, 0), self.actions.reshape(0, 0)
            return
        if self.actions.ndim != 2 or self.states.ndim != 2 or len(self.states) != length:
            raise ValueError(f"Episode: states {self.states.shape} and actions {self.actions.shape} must be (T, d)")
        for name, frames in self.views.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != length or frames.shape[-1] != 3:
                raise ValueError(f"Episode.views[{name!r}] must be ({length}, H, W, 3) uint8, got {frames.dtype} {frames.shape}")

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class RunningEpisode:
    """The episode in progress on the robot, as the executor and the recorder know it."""

    index: int
    task: str
    source: str
    started: float = 0.0  # monotonic seconds
