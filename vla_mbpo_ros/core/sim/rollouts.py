"""Episodes in the simulated SO-101, in-process: scripted-expert demonstrations, policy rollouts, evaluation.

Episodes come back as ``core.data.episode.Episode`` (frame t the observation before action t) with the
physics state of every frame (``sim_states``), the seed, ``steps_to_success`` and ``control_steps``.
With ``control_steps_per_action`` N > 1 every action is held for N control steps and one frame is recorded
per action (the ROS graph's policy rate: 30 Hz control, 10 fps dataset, N = 3).

Policy episodes run in lockstep: one simulator is multiplexed over a batch of episodes through exact
state save/restore, so the policy sees one batched call per chunk instead of one call per episode.
The policy is queried at chunk boundaries and its whole chunk is executed open-loop (the chunk-level
MDP the world model and VLA-MBPO work in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Episode, Observation
from vla_mbpo_ros.core.policy.base import ObsBatch
from vla_mbpo_ros.core.sim.env import So101Sim
from vla_mbpo_ros.core.sim.expert import ExpertConfig, ScriptedExpert

# Episode sources, named as the ROS recorder names them.
EXPERT_SOURCE = "scripted_expert"
POLICY_SOURCE = "policy"


@dataclass
class EpisodeConfig:
    max_steps: int = 150  # control steps per episode (the scripted expert needs ~95 on average)
    instruction: str = "pick up the cube"
    stop_on_success: bool = True  # end the episode at the first successful control step
    record: bool = True  # keep every frame (views, states, actions, sim states); False: outcomes only
    batch_size: int = 64  # policy episodes run in lockstep groups of at most this many
    control_steps_per_action: int = 1  # control steps each action is held for; frames are recorded per action
    # Recorded frames after the first success, the last action held: the ROS episode manager keeps
    # recording 0.5 s (5 frames at 10 fps) after success, so the success state is in the data a reward
    # model learns from. Outcomes, lengths and steps_to_success do not change.
    settle_frames: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "control_steps_per_action"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.settle_frames < 0:
            raise ValueError(f"settle_frames must be >= 0, got {self.settle_frames}")


@dataclass
class EvalResult:
    """Outcome of seeded evaluation episodes."""

    seeds: list[int]
    successes: np.ndarray  # (E,) bool
    steps_to_success: np.ndarray  # (E,) int, -1 where the episode failed
    episodes: list[Episode] = field(default_factory=list)  # recorded episodes (when record=True)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if len(self.successes) else float("nan")

    def mean_steps_to_success(self) -> float:
        """Mean control steps to success over successful episodes (nan without any)."""
        done = self.steps_to_success[self.successes]
        return float(done.mean()) if len(done) else float("nan")


class _Recorder:
    """Per-episode frame lists, stacked into the episode dict at the end."""

    def __init__(self, record: bool) -> None:
        self.record = record
        self.views: dict[str, list[np.ndarray]] = {}
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.sim_states: list[np.ndarray] = []

    def add(self, views: dict[str, np.ndarray], state: np.ndarray, action: np.ndarray,
            sim_state: np.ndarray) -> None:
        if not self.record:
            return
        for name, image in views.items():
            self.views.setdefault(name, []).append(image)
        self.states.append(np.asarray(state, dtype=np.float32))
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.sim_states.append(np.asarray(sim_state, dtype=np.float64))

    def episode(self, instruction: str, seed: int, source: str, steps_to_success: int, length: int) -> Episode:
        outcome = dict(instruction=instruction, seed=int(seed), source=source, control_steps=int(length),
                       success=steps_to_success >= 0, steps_to_success=int(steps_to_success))
        if not (self.record and self.states):
            return Episode(views={}, states=np.zeros((0, 0)), actions=np.zeros((0, 0)), **outcome)
        return Episode(views={n: np.stack(v) for n, v in self.views.items()}, states=np.stack(self.states),
                       actions=np.stack(self.actions), sim_states=np.stack(self.sim_states), **outcome)


def expert_episodes(sim: So101Sim, seeds: Sequence[int], config: EpisodeConfig | None = None,
                    expert_config: ExpertConfig | None = None, successful_only: bool = False) -> list[Episode]:
    """Scripted-expert demonstrations, one per seed (sim and expert noise seeded alike).

    ``successful_only`` drops the episodes in which the expert failed (with noise options it can).
    Every recorded frame is rendered, so this costs one render per action.
    """
    config = config or EpisodeConfig()
    expert = ScriptedExpert(sim, expert_config)
    episodes = []
    for seed in seeds:
        sim.reset(seed=int(seed))
        expert.reset(seed=int(seed))
        recorder = _Recorder(config.record)
        steps_to_success, length = -1, 0
        while length < config.max_steps and not (config.stop_on_success and steps_to_success >= 0):
            # The expert plans at the control rate; held for N steps, its target N calls ahead is the one due
            # at the end of the hold.
            for _ in range(config.control_steps_per_action):
                action = expert.act(sim)
            if config.record:
                recorder.add(sim.render(fresh=True), sim.joint_positions(), action, sim.get_state())
            steps_to_success, length = _hold(sim, action, config, steps_to_success, length)
        if steps_to_success >= 0:
            _settle(sim, recorder, action, config)
        if steps_to_success >= 0 or not successful_only:
            episodes.append(recorder.episode(config.instruction, seed, EXPERT_SOURCE, steps_to_success, length))
    return episodes


def _hold(sim: So101Sim, action: np.ndarray, config: EpisodeConfig, steps_to_success: int,
          length: int) -> tuple[int, int]:
    """Hold ``action`` for ``control_steps_per_action`` control steps (fewer at the episode's end or at the
    first success when stopping there). Returns the updated (steps_to_success, length)."""
    sim.set_joint_targets(action)
    for _ in range(config.control_steps_per_action):
        sim.step()
        length += 1
        if steps_to_success < 0 and sim.is_success():
            steps_to_success = length
            if config.stop_on_success:
                break
        if length >= config.max_steps:
            break
    return steps_to_success, length


def _settle(sim: So101Sim, recorder: "_Recorder", action: np.ndarray, config: EpisodeConfig) -> None:
    """Record ``settle_frames`` frames after a success while ``action`` is held (see EpisodeConfig)."""
    if not config.record:
        return
    sim.set_joint_targets(action)
    for _ in range(config.settle_frames):
        recorder.add(sim.render(fresh=True), sim.joint_positions(), action, sim.get_state())
        for _ in range(config.control_steps_per_action):
            sim.step()


def _chunks(policy: Any, batch: ObsBatch, generator: torch.Generator | None) -> np.ndarray:
    """(B,k,d) chunks: Flow-SDE samples with a generator, the deterministic chunk without one."""
    if generator is not None:
        return np.asarray(policy.sample_chunks(batch, generator).actions, dtype=np.float64)
    if hasattr(policy, "predict_chunks"):
        return np.asarray(policy.predict_chunks(batch), dtype=np.float64)
    return np.stack([np.asarray(policy.predict_chunk(Observation(
        views={n: v[i] for n, v in batch.views.items()}, state=batch.states[i], instruction=batch.instructions[i])),
        dtype=np.float64) for i in range(len(batch))])


def policy_episodes(policy: Any, sim: So101Sim, seeds: Sequence[int], config: EpisodeConfig | None = None,
                    generator: torch.Generator | None = None, source: str = POLICY_SOURCE) -> list[Episode]:
    """Episodes of ``policy`` from the simulator's reset with each seed, in lockstep batches.

    ``policy`` is a ChunkPolicy (``predict_chunks`` batched if it has it, else ``predict_chunk``); with a
    ``generator`` it must be an RLChunkPolicy and chunks are Flow-SDE samples (exploration). Views are
    rendered at the simulator's configured size; the policy resizes them to its own input size.
    """
    config = config or EpisodeConfig()
    episodes: list[Episode] = []
    for start in range(0, len(seeds), config.batch_size):
        episodes += _lockstep(policy, sim, list(seeds[start: start + config.batch_size]), config, generator, source)
    return episodes


def _lockstep(policy: Any, sim: So101Sim, seeds: list[int], config: EpisodeConfig,
              generator: torch.Generator | None, source: str) -> list[Episode]:
    count = len(seeds)
    physics, views, joints = [], [], []
    for seed in seeds:
        sim.reset(seed=int(seed))
        physics.append(sim.get_state())
        views.append(sim.render(fresh=True))
        joints.append(sim.joint_positions())
    recorders = [_Recorder(config.record) for _ in seeds]
    steps_to_success = np.full(count, -1, dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    alive = np.ones(count, dtype=bool)
    if hasattr(policy, "reset"):
        policy.reset()
    while alive.any():
        rows = np.flatnonzero(alive)
        batch = ObsBatch(views={n: np.stack([views[r][n] for r in rows]) for n in views[rows[0]]},
                         states=np.stack([joints[r] for r in rows]),
                         instructions=[config.instruction] * len(rows))
        chunks = _chunks(policy, batch, generator)
        for row, chunk in zip(rows, chunks):
            sim.set_state(physics[row])
            frame_views = views[row]
            for action in chunk:
                if config.record:
                    if frame_views is None:
                        frame_views = sim.render(fresh=True)
                    recorders[row].add(frame_views, sim.joint_positions(), action, sim.get_state())
                frame_views = None
                steps_to_success[row], lengths[row] = _hold(sim, action, config, int(steps_to_success[row]),
                                                            int(lengths[row]))
                if config.stop_on_success and steps_to_success[row] >= 0:
                    _settle(sim, recorders[row], action, config)
                    alive[row] = False
                    break
                if lengths[row] >= config.max_steps:
                    alive[row] = False
                    break
            physics[row] = sim.get_state()
            joints[row] = sim.joint_positions()
            views[row] = sim.render(fresh=True) if alive[row] else {}
    return [recorders[i].episode(config.instruction, seeds[i], source, int(steps_to_success[i]), int(lengths[i]))
            for i in range(count)]


def evaluate_policy(policy: Any, sim: So101Sim, seeds: Sequence[int], config: EpisodeConfig | None = None,
                    generator: torch.Generator | None = None) -> EvalResult:
    """Success over seeded episodes: deterministic chunks unless a ``generator`` asks for Flow-SDE samples.

    Frames are kept only when ``config.record`` is set (e.g. for videos); ``EpisodeConfig(record=False)``
    is the cheap setting for success rates.
    """
    config = config or EpisodeConfig(record=False)
    episodes = policy_episodes(policy, sim, seeds, config, generator)
    return EvalResult(
        seeds=[int(s) for s in seeds],
        successes=np.array([e.success for e in episodes], dtype=bool),
        steps_to_success=np.array([e.steps_to_success for e in episodes], dtype=np.int64),
        episodes=episodes if config.record else [])
