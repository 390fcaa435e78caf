"""World-model training data from ``Episode``s (read from a LeRobotDataset by ``core.data.reader``).

Dynamics samples (frame skipping): (views_t, a_{t:t+k}) -> views_{t+k} for every t with t + k inside the
episode. Reward samples: "Yes" = the last ``yes_window`` frames of successful episodes, "No" = frames more
than ``no_margin`` steps before the end of any episode; frames in between are left out (method notes 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.world_model.codec import ActionStats


@dataclass
class DataConfig:
    """Sample construction; the defaults are the paper's."""

    chunk_size: int = 10  # k: actions per chunk = frames skipped
    stride: int = 1  # dynamics samples every `stride` frames (1 = every t)
    # "Yes": the last frames of a successful episode, which show the success state (the episode manager
    # records 0.5 s = 5 frames after success). "No": frames more than reward_no_margin before the first
    # "Yes" frame (successes) or the end (failures); the ones in between are near-successes, left out.
    reward_yes_window: int = 5
    reward_no_margin: int = 2
    yes_oversample: int = 1  # each "Yes" sample appears this many times (class balance)
    # Also train the reward on what the model itself generates from the episodes' real transitions, labelled
    # with the real outcome: in imagination it judges generated frames (next_frame: the generated head view;
    # transition: generated current views from the second chunk on), and trained on camera frames only the
    # next_frame reward never said Yes to one (learning bench, issue 20).
    generated_reward: bool = False

    def __post_init__(self) -> None:
        for name in ("chunk_size", "stride", "reward_yes_window", "yes_oversample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reward_no_margin < 0:
            raise ValueError(f"reward_no_margin must be >= 0, got {self.reward_no_margin}")


class DynamicsSamples(Dataset):
    """(views_t, a_{t:t+k}) -> views_{t+k}; items are dicts of tensors (images stay uint8)."""

    def __init__(self, episodes: Sequence[Episode], view_names: Sequence[str], chunk_size: int, stride: int = 1):
        self.episodes = list(episodes)
        self.view_names = tuple(view_names)
        self.chunk_size = chunk_size
        self.index = [
            (e, t) for e, ep in enumerate(self.episodes) for t in range(0, len(ep) - chunk_size, stride)
        ]
        self.tokens: list[dict[str, np.ndarray]] | None = None

    def set_tokens(self, tokens: list[dict[str, np.ndarray]] | None) -> None:
        """VQ ids of every frame (per episode: view -> (T, n)), from a frozen tokenizer; items then carry
        them so training does not re-encode the same frames every epoch."""
        if tokens is not None and len(tokens) != len(self.episodes):
            raise ValueError(f"tokens for {len(tokens)} episodes, dataset has {len(self.episodes)}")
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        ep, k = self.episodes[e], self.chunk_size
        item = {
            "current": {v: torch.from_numpy(ep.views[v][t]) for v in self.view_names},
            "next": {v: torch.from_numpy(ep.views[v][t + k]) for v in self.view_names},
            "actions": torch.from_numpy(ep.actions[t : t + k]),
            "instruction": ep.instruction,
        }
        if self.tokens is not None:
            ids = self.tokens[e]
            item["current_tokens"] = {v: torch.from_numpy(ids[v][t]) for v in self.view_names}
            item["next_tokens"] = {v: torch.from_numpy(ids[v][t + k]) for v in self.view_names}
        return item


def reward_labels(length: int, success: bool, yes_window: int, no_margin: int) -> list[tuple[int, bool]]:
    """(frame, is_yes) pairs of one episode (see DataConfig): Yes for the last ``yes_window`` frames of a
    success, No up to ``no_margin`` frames before those (or before the end of a failure)."""
    first_yes = max(0, length - yes_window) if success else length
    labels = [(t, False) for t in range(max(0, first_yes - no_margin))]
    if success:
        labels += [(t, True) for t in range(first_yes, length)]
    return labels


class LabelledSamples(Dataset):
    """Reward samples: ``index`` entries end with the sample's Yes/No label (Yes entries repeated
    ``yes_oversample`` times)."""

    index: list[tuple]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return np.array([entry[-1] for entry in self.index], dtype=bool)


class RewardSamples(LabelledSamples):
    """Head frames labelled "task done" (Yes) or not (No)."""

    def __init__(self, episodes: Sequence[Episode], head_view: str, config: DataConfig):
        self.episodes = list(episodes)
        self.head_view = head_view
        self.index = []
        for e, ep in enumerate(self.episodes):
            for t, yes in reward_labels(len(ep), ep.success, config.reward_yes_window, config.reward_no_margin):
                self.index += [(e, t, yes)] * (config.yes_oversample if yes else 1)

    def __getitem__(self, i: int) -> dict:
        e, t, yes = self.index[i]
        ep = self.episodes[e]
        return {"image": torch.from_numpy(ep.views[self.head_view][t]), "success": yes, "instruction": ep.instruction}


class TransitionRewardSamples(LabelledSamples):
    """(views_t, a_{t:t+k}) labelled with the reward label of frame t + k, for every t whose target frame has
    one: the reward question "will the task be done after these actions?" (``reward_from: transition``)."""

    def __init__(self, episodes: Sequence[Episode], view_names: Sequence[str], config: DataConfig):
        self.episodes = list(episodes)
        self.view_names = tuple(view_names)
        self.chunk_size = config.chunk_size
        self.index = [(e, t, yes) for e, t, yes in labelled_transitions(self.episodes, config, every_no=True)
                      for _ in range(config.yes_oversample if yes else 1)]

    def __getitem__(self, i: int) -> dict:
        e, t, yes = self.index[i]
        ep = self.episodes[e]
        return {"current": {v: torch.from_numpy(ep.views[v][t]) for v in self.view_names},
                "actions": torch.from_numpy(ep.actions[t : t + self.chunk_size]),
                "success": yes, "instruction": ep.instruction}


class GeneratedRewardSamples(LabelledSamples):
    """Head frames generated by the world model, each labelled with the real label of the frame it stands for."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, instructions: Sequence[str], yes_oversample: int = 1):
        if not len(images) == len(labels) == len(instructions):
            raise ValueError(f"{len(images)} images, {len(labels)} labels, {len(instructions)} instructions")
        self.images, self.instructions = images, list(instructions)
        self.index = [(i, bool(yes)) for i, yes in enumerate(labels) for _ in range(yes_oversample if yes else 1)]

    def __getitem__(self, i: int) -> dict:
        j, yes = self.index[i]
        return {"image": torch.from_numpy(self.images[j]), "success": yes, "instruction": self.instructions[j]}


class GeneratedTransitionSamples(LabelledSamples):
    """Transitions whose current views the world model generated (from the real views and chunk k steps
    before), with the real chunk and the real label of the target frame: the inputs the transition reward
    reads from the second imagined chunk on."""

    def __init__(self, views: dict[str, np.ndarray], actions: np.ndarray, labels: np.ndarray,
                 instructions: Sequence[str], yes_oversample: int = 1):
        if not all(len(v) == len(actions) for v in views.values()) or not len(actions) == len(labels) == len(instructions):
            raise ValueError(f"views, {len(actions)} chunks, {len(labels)} labels and {len(instructions)} instructions "
                             "must be as many")
        self.views, self.actions, self.instructions = views, actions, list(instructions)
        self.index = [(i, bool(yes)) for i, yes in enumerate(labels) for _ in range(yes_oversample if yes else 1)]

    def __getitem__(self, i: int) -> dict:
        j, yes = self.index[i]
        return {"current": {v: torch.from_numpy(x[j]) for v, x in self.views.items()},
                "actions": torch.from_numpy(self.actions[j]), "success": yes, "instruction": self.instructions[j]}


def labelled_transitions(episodes: Sequence[Episode], config: DataConfig,
                         every_no: bool = False) -> list[tuple[int, int, bool]]:
    """(episode, t, label of frame t + k) for the transitions whose target frame has a reward label: every
    one with a Yes target, and one per chunk of the No targets (they are many and alike), or every one with
    ``every_no``."""
    k, transitions = config.chunk_size, []
    for e, ep in enumerate(episodes):
        labels = dict(reward_labels(len(ep), ep.success, config.reward_yes_window, config.reward_no_margin))
        for t in range(len(ep) - k):
            yes = labels.get(t + k)
            if yes or (yes is not None and (every_no or t % k == 0)):
                transitions.append((e, t, yes))
    return transitions


def build_samples(
    episodes: Sequence[Episode], view_names: Sequence[str], config: DataConfig, reward_from: str = "next_frame"
) -> tuple[DynamicsSamples, RewardSamples | TransitionRewardSamples]:
    """Dynamics samples and the reward samples of the world model's ``reward_from``."""
    reward = (TransitionRewardSamples(episodes, view_names, config) if reward_from == "transition"
              else RewardSamples(episodes, view_names[0], config))
    return DynamicsSamples(episodes, view_names, config.chunk_size, config.stride), reward


def action_stats(episodes: Sequence[Episode], quantiles: tuple[float, float] = (0.0, 1.0)) -> ActionStats:
    """Clip range of the actions of these episodes (use the training split only)."""
    return ActionStats.from_actions(np.concatenate([ep.actions for ep in episodes]), quantiles)


def split_episodes(episodes: Sequence[Episode], holdout: int, seed: int = 0) -> tuple[list[Episode], list[Episode]]:
    """Random (train, held-out) split by whole episodes."""
    if not 0 <= holdout < len(episodes):
        raise ValueError(f"holdout must be in [0, {len(episodes)}), got {holdout}")
    order = np.random.default_rng(seed).permutation(len(episodes))
    held = set(order[:holdout].tolist())
    return [e for i, e in enumerate(episodes) if i not in held], [e for i, e in enumerate(episodes) if i in held]
