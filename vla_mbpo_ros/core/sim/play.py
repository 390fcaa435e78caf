"""A "play" corpus for pretraining the world model: varied sim episodes written like real ones.

The paper finetunes a *pretrained* UMM on a few hundred robot episodes. With no pretrained weights to
download here, the tiny UMM is pretrained by the project on this corpus instead: several hundred
episodes of the simulated SO-101 at the ROS graph's rates (30 Hz control, one frame per 10 Hz
action) and view size, written with the recorder's own store (``EpisodeStore``: the same
LeRobotDataset features as real episodes). Each episode draws one behaviour:

* ``expert``: the scripted expert with a little target noise (mostly successes);
* ``noisy``: heavy target noise (clumsy grasps, some failures);
* ``misgrasp``: the jaws close above or beside the cube (failures, near-misses);
* ``drop``: the jaws open during the lift, below the success height (the cube in the gripper, yet a
  failure: the reward must not say Yes before the cube is high enough);
* ``reach``: long random joint walks around the workspace (coverage of arm poses).

and its lighting (every light's diffuse and ambient scaled by a random factor). Cube poses vary with
the reset seed. Seeds start at ``seed_base`` (default 5 000 000): the learning bench's demonstration,
real and evaluation seeds (0..., 10 000..., 1 000 000...) never occur in the corpus.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_mbpo_ros.core.data.episode_store import EpisodeStore
from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig
from vla_mbpo_ros.core.sim.config import SimConfig
from vla_mbpo_ros.core.sim.env import So101Sim
from vla_mbpo_ros.core.sim.expert import ExpertConfig, ScriptedExpert

BEHAVIOURS = ("expert", "noisy", "misgrasp", "drop", "reach")
PLAY_SOURCE = "play"


@dataclass
class PlayConfig:
    episodes: int = 400
    seed_base: int = 5_000_000  # reset seeds seed_base + i: disjoint from every bench's seeds
    # Fraction of episodes per behaviour, in BEHAVIOURS order.
    mix: tuple[float, ...] = (0.35, 0.2, 0.15, 0.15, 0.15)
    control_steps_per_action: int = 3  # the ROS graph: 30 Hz control, one frame per 10 Hz action
    max_frames: int = 60  # 6 s at 10 fps
    frames_after_success: int = 5  # keep recording (as the episode manager settles 0.5 s): "Yes" frames
    light_range: tuple[float, float] = (0.7, 1.3)  # lighting scale per episode
    instruction: str = "pick up the cube"

    def __post_init__(self) -> None:
        self.mix = tuple(float(m) for m in self.mix)
        if len(self.mix) != len(BEHAVIOURS) or min(self.mix) < 0 or not math.isclose(sum(self.mix), 1.0):
            raise ValueError(f"mix: expected {len(BEHAVIOURS)} fractions ({', '.join(BEHAVIOURS)}) summing to 1, got {self.mix}")
        for name in ("episodes", "control_steps_per_action", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def behaviour(self, index: int) -> str:
        """Behaviours interleaved in proportion to ``mix`` (deterministic, so a resumed corpus matches)."""
        edges = np.cumsum(self.mix)
        position = (index * 0.6180339887) % 1.0  # golden-ratio sequence: evenly spread over the corpus
        return BEHAVIOURS[int(np.searchsorted(edges, position, side="right").clip(0, len(BEHAVIOURS) - 1))]


def _expert_for(behaviour: str, rng: np.random.Generator, episode_steps: int) -> ExpertConfig:
    if behaviour == "expert":
        return ExpertConfig(target_noise_std=0.01)
    if behaviour == "noisy":
        return ExpertConfig(target_noise_std=float(rng.uniform(0.05, 0.15)))
    if behaviour == "misgrasp":
        return ExpertConfig(grasp_height=float(rng.uniform(0.025, 0.05)), target_noise_std=0.02,
                            close_duration=float(rng.uniform(0.2, 0.6)))
    if behaviour == "reach":
        return ExpertConfig(random_fraction=0.7, random_step_std=0.06, episode_steps=episode_steps)
    return ExpertConfig(target_noise_std=0.01)  # drop: the expert, then the gripper opens


class CorpusPlayer:
    """A simulator that plays corpus episodes by index. Everything an episode draws is seeded by its index
    (lighting included), so any player, in any process, plays the same episode."""

    def __init__(self, sim_config: SimConfig) -> None:
        self.sim = So101Sim(sim_config)
        self._lights = (self.sim.model.light_diffuse.copy(), self.sim.model.light_ambient.copy())

    def close(self) -> None:
        self.sim.close()

    def play(self, config: PlayConfig, index: int) -> tuple[list[RecordedFrame], str, bool]:
        """Episode ``index``: (frames, behaviour, success)."""
        sim = self.sim
        light = np.random.default_rng([config.seed_base, index]).uniform(*config.light_range)
        sim.model.light_diffuse[:] = np.clip(self._lights[0] * light, 0.0, 1.0)
        sim.model.light_ambient[:] = np.clip(self._lights[1] * light, 0.0, 1.0)
        seed = config.seed_base + index
        rng = np.random.default_rng(seed)
        behaviour = config.behaviour(index)
        steps = config.max_frames * config.control_steps_per_action
        expert = ScriptedExpert(sim, _expert_for(behaviour, rng, steps), seed=seed)
        sim.reset(seed)
        expert.reset(seed)
        # drop: open the jaws once the cube is this high, below the success height (metres above rest)
        drop_height = float(rng.uniform(0.015, 0.7 * sim.config.success_lift_height)) if behaviour == "drop" else math.inf
        rest_z = sim.cube_pose()[0][2]
        frames: list[RecordedFrame] = []
        succeeded_at, dropped_at = -1, -1
        while len(frames) < config.max_frames and not (dropped_at >= 0 and len(frames) - dropped_at >= 15):
            for _ in range(config.control_steps_per_action):
                action = expert.act(sim)
            if dropped_at < 0 and sim.cube_pose()[0][2] - rest_z > drop_height:
                dropped_at = len(frames)
            if dropped_at >= 0:
                action = action.copy()
                action[-1] = 1.2  # jaws open: the cube falls
            views = sim.render(fresh=True)
            frames.append(RecordedFrame(views, sim.joint_positions(), action, sim.time, sim.time, command_source="play"))
            sim.set_joint_targets(action)
            for _ in range(config.control_steps_per_action):
                sim.step()
            if succeeded_at < 0 and sim.is_success():
                succeeded_at = len(frames)
            if succeeded_at >= 0 and len(frames) - succeeded_at >= config.frames_after_success:
                break
        return frames, behaviour, sim.is_success()


# The player of a corpus worker process (made by the pool's initializer).
_worker_player: CorpusPlayer | None = None


def _start_worker(sim_config: SimConfig, writer_pid: int) -> None:
    global _worker_player
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the writer's to handle: it stops the pool
    _end_with_parent(writer_pid)
    _worker_player = CorpusPlayer(sim_config)


def _end_with_parent(writer_pid: int) -> None:
    """Have Linux end this worker when the writer dies: a killed (SIGKILL, out of memory) pretraining would
    otherwise leave its workers waiting for work forever."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed writer leaves its idle workers behind
        return
    if os.getppid() != writer_pid:  # the writer died before prctl took effect
        os._exit(1)


def _play_in_worker(config: PlayConfig, index: int) -> tuple[list[RecordedFrame], str, bool]:
    return _worker_player.play(config, index)


def record_play_corpus(root: str | Path, config: PlayConfig | None = None, sim_config: SimConfig | None = None,
                       progress: Callable[[int, int, str, bool], None] | None = None,
                       workers: int = 0) -> EpisodeStore:
    """Write (or complete: episodes already saved are kept) the corpus at ``root``.

    With ``workers`` > 0 that many processes play and render episodes while this one writes them, in
    index order: the same episodes as ``workers=0`` (everything is seeded per episode), written by one
    store, while playing and rendering overlap with the store's video encoding."""
    config = config or PlayConfig()
    sim_config = sim_config or SimConfig(image_size=(96, 96), camera_fps=10.0, control_fps=30.0)
    recording = RecordingConfig(repo_id="local/play", fps=round(sim_config.control_fps / config.control_steps_per_action),
                                views=tuple(sim_config.views), image_size=tuple(sim_config.image_size),
                                min_free_disk_mb=0.0)
    store = EpisodeStore(Path(root), recording)
    indices = range(store.num_episodes, config.episodes)
    try:
        with played_episodes(config, sim_config, workers) as play:
            for index, (frames, behaviour, success) in zip(indices, play(indices)):
                store.begin(config.instruction, PLAY_SOURCE)
                for frame in frames:
                    store.add(frame)
                store.save(Outcome.SUCCESS if success else Outcome.FAILURE)
                if progress is not None:
                    progress(index + 1, config.episodes, behaviour, success)
    finally:
        store.close()
    return store


@contextmanager
def played_episodes(config: PlayConfig, sim_config: SimConfig, workers: int):
    """A function from episode indices to their played episodes, in order: here, or in ``workers``
    processes (spawned: a forked MuJoCo/torch process is not safe), a few episodes ahead of the writer."""
    if workers <= 0:
        player = CorpusPlayer(sim_config)
        try:
            yield lambda indices: (player.play(config, i) for i in indices)
        finally:
            player.close()
        return
    ahead = 2 * workers  # bounded: a fast player must not hold the whole corpus in memory
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(sim_config, os.getpid())) as pool:
        def played(indices):
            pending: deque = deque()
            for index in indices:
                pending.append(pool.submit(_play_in_worker, config, index))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        yield played


def play_config_summary(config: PlayConfig) -> dict[str, int]:
    """Episodes per behaviour."""
    counts = {b: 0 for b in BEHAVIOURS}
    for index in range(config.episodes):
        counts[config.behaviour(index)] += 1
    return counts
