"""Read a recorded LeRobotDataset back as whole episodes (the world model's training data, the BC
demonstrations and the RL start states all come from here).

Videos are decoded once, frame by frame through LeRobot's own reader (PyAV backend: no system
FFmpeg needed), and optionally resized to the model resolution on the way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vla_mbpo_ros.core.data.recording import ACTION_KEY, EPISODE_SOURCE_KEY, IMAGE_KEY_PREFIX, STATE_KEY, SUCCESS_KEY


@dataclass
class RecordedEpisode:
    index: int
    views: dict[str, np.ndarray]  # view -> (T, H, W, 3) uint8
    states: np.ndarray  # (T, d) float32
    actions: np.ndarray  # (T, d) float32: the gated commands sent
    success: bool | None  # None = unlabelled
    instruction: str
    source: str  # "scripted_expert", "teleop", "policy", ...

    def __len__(self) -> int:
        return len(self.actions)

    def as_dict(self) -> dict[str, Any]:
        """The episode-dict form taken by BCArrays.from_episodes and StartStateSampler.add_episodes."""
        return {
            "views": self.views,
            "states": self.states,
            "actions": self.actions,
            "instruction": self.instruction,
            "success": self.success,
            "source": self.source,
        }


def _to_uint8_hwc(image: torch.Tensor, size: int | None) -> np.ndarray:
    """LeRobot frame (3, H, W) float in [0, 1] -> (H, W, 3) uint8, resized to size x size if given."""
    x = image.float()[None]
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def load_recorded_episodes(
    root: str | Path,
    view_names: Sequence[str],
    image_size: int | None = None,
    repo_id: str = "local/vla_mbpo",
    episodes: Sequence[int] | None = None,
) -> list[RecordedEpisode]:
    """All (or the listed) episodes of the dataset at ``root``, in episode order."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset(repo_id, root=root, episodes=list(episodes) if episodes is not None else None, video_backend="pyav")
    return episodes_from_dataset(dataset, view_names, image_size)


def episodes_from_dataset(dataset: Any, view_names: Sequence[str], image_size: int | None = None) -> list[RecordedEpisode]:
    """The episodes of an open LeRobotDataset, in episode order."""
    missing = [key for key in (*(IMAGE_KEY_PREFIX + v for v in view_names), STATE_KEY, ACTION_KEY) if key not in dataset.features]
    if missing:
        raise ValueError(f"dataset at {dataset.root} lacks features {missing}")
    columns = dataset.hf_dataset.with_format("numpy")
    episode_index = np.asarray(columns["episode_index"]).reshape(-1)
    states = np.asarray(columns[STATE_KEY], dtype=np.float32)
    actions = np.asarray(columns[ACTION_KEY], dtype=np.float32)
    success = np.asarray(columns[SUCCESS_KEY]).reshape(-1) if SUCCESS_KEY in dataset.features else None
    sources = columns[EPISODE_SOURCE_KEY] if EPISODE_SOURCE_KEY in dataset.features else None
    result = []
    for ep in dict.fromkeys(episode_index.tolist()):
        rows = np.flatnonzero(episode_index == ep)
        frames: dict[str, list[np.ndarray]] = {v: [] for v in view_names}
        instruction = ""
        for row in rows:
            item = dataset[int(row)]
            instruction = item.get("task", instruction)
            for view in view_names:
                frames[view].append(_to_uint8_hwc(item[IMAGE_KEY_PREFIX + view], image_size))
        label = None if success is None or success[rows[-1]] < 0 else bool(success[rows[-1]] > 0)
        result.append(
            RecordedEpisode(
                index=int(ep),
                views={v: np.stack(f) for v, f in frames.items()},
                states=states[rows],
                actions=actions[rows],
                success=label,
                instruction=instruction,
                source=str(sources[rows[0]]) if sources is not None else "",
            )
        )
    return result
