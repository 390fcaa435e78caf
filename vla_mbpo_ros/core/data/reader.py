"""Read a LeRobotDataset back as whole ``Episode``s: the one reader behind the BC demonstrations, the
world model's training data and the RL start states.

Videos are decoded once per episode and view, all of its frames in one call to LeRobot's decoder
(PyAV: it brings its own FFmpeg, so no system library is needed and no other decoder is tried),
not frame by frame through ``dataset[i]``; frames are resized to the model resolution on the way.

The episode's label: the recorder writes its outcome on every frame (``success``: 1 / 0 / -1
unlabelled), and the last frame's value is the episode's. Datasets labelled per frame with
LeRobot's ``next.success`` (true at the success frames) count as successful when any frame is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.data.recording import ACTION_KEY, EPISODE_SOURCE_KEY, IMAGE_KEY_PREFIX, STATE_KEY, SUCCESS_KEY
from vla_mbpo_ros.core.util.images import resize_uint8

VIDEO_BACKEND = "pyav"
LEROBOT_SUCCESS_KEY = "next.success"


def open_dataset(root: str | Path, repo_id: str = "local/vla_mbpo", episodes: Sequence[int] | None = None) -> Any:
    """The LeRobotDataset at ``root`` (offline; never downloads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    selected = list(episodes) if episodes is not None else None
    return LeRobotDataset(repo_id, root=root, episodes=selected, video_backend=VIDEO_BACKEND)


def load_episodes(
    root: str | Path,
    view_names: Sequence[str],
    image_size: int | tuple[int, int] | None = None,
    repo_id: str = "local/vla_mbpo",
    episodes: Sequence[int] | None = None,
    view_keys: Mapping[str, str] | None = None,
) -> list[Episode]:
    """All (or the listed) episodes of the dataset at ``root``, in episode order.

    ``view_keys`` maps view names to camera features for datasets not recorded by this package
    (default ``observation.images.<view>``).
    """
    return read_episodes(open_dataset(root, repo_id, episodes), view_names, image_size, view_keys)


def read_episodes(
    dataset: Any,
    view_names: Sequence[str],
    image_size: int | tuple[int, int] | None = None,
    view_keys: Mapping[str, str] | None = None,
) -> list[Episode]:
    """The episodes of an open LeRobotDataset, in episode order."""
    from lerobot.datasets.video_utils import decode_video_frames

    keys = {view: (view_keys or {}).get(view, IMAGE_KEY_PREFIX + view) for view in view_names}
    missing = [key for key in (*keys.values(), ACTION_KEY) if key not in dataset.features]
    if missing:
        raise ValueError(f"dataset at {dataset.root} lacks features {missing}")
    columns = dataset.hf_dataset.with_format("numpy")
    episode_index = np.asarray(columns["episode_index"]).reshape(-1)
    timestamps = np.asarray(columns["timestamp"], dtype=np.float64).reshape(-1)
    actions = np.asarray(columns[ACTION_KEY], dtype=np.float32)
    states = np.asarray(columns[STATE_KEY], dtype=np.float32) if STATE_KEY in dataset.features else np.zeros((len(actions), 0), np.float32)
    labels = _labels(dataset, columns, len(episode_index))
    sources = columns[EPISODE_SOURCE_KEY] if EPISODE_SOURCE_KEY in dataset.features else None
    tasks = np.asarray(columns["task_index"]).reshape(-1) if "task_index" in dataset.features else None
    task_names = {} if dataset.meta.tasks is None else {
        int(index): str(task) for task, index in zip(dataset.meta.tasks.index, dataset.meta.tasks["task_index"])}
    # The recorder may save an episode while this reads (the data files first, then the metadata): an
    # episode whose metadata is not there yet is still being saved, and is left for the next read.
    committed = len(dataset.meta.episodes)
    result = []
    for ep in (e for e in dict.fromkeys(episode_index.tolist()) if e < committed):
        rows = np.flatnonzero(episode_index == ep)
        views = {}
        for view, key in keys.items():
            if key in dataset.meta.video_keys:
                info = dataset.meta.episodes[int(ep)]
                start = float(info[f"videos/{key}/from_timestamp"])
                path = dataset.root / dataset.meta.get_video_file_path(int(ep), key)
                frames = decode_video_frames(path, (start + timestamps[rows]).tolist(), dataset.tolerance_s,
                                             VIDEO_BACKEND, return_uint8=True)
            else:  # images stored in the parquet files, decoded by the dataset's transform
                frames = (torch.stack(dataset.hf_dataset[rows.tolist()][key]) * 255).round().to(torch.uint8)
            views[view] = frames.permute(0, 2, 3, 1).contiguous().numpy()
            if image_size is not None:
                views[view] = resize_uint8(views[view], image_size)
        result.append(Episode(
            views=views,
            states=states[rows],
            actions=actions[rows],
            instruction=task_names.get(int(tasks[rows[0]]), "") if tasks is not None else "",
            success=labels(rows),
            source=str(sources[rows[0]]) if sources is not None else "",
            index=int(ep),
        ))
    return result


def _labels(dataset: Any, columns: Any, count: int):
    """rows -> the episode's success label (None: unlabelled)."""
    if SUCCESS_KEY in dataset.features:
        success = np.asarray(columns[SUCCESS_KEY]).reshape(count, -1)[:, 0]
        return lambda rows: None if success[rows[-1]] < 0 else bool(success[rows[-1]] > 0)
    if LEROBOT_SUCCESS_KEY in dataset.features:
        flags = np.asarray(columns[LEROBOT_SUCCESS_KEY]).reshape(count, -1)[:, 0] > 0
        return lambda rows: bool(flags[rows].any())
    return lambda rows: None
