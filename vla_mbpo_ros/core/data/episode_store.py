"""Crash-safe episode recording into a LeRobotDataset (v3), through LeRobot's own writer.

What LeRobot 0.6.1 does on its own (``DatasetWriter`` / ``LeRobotDatasetMetadata``), and why it
is not crash-safe as used by its record loop:

* data rows go to an open ``pyarrow.ParquetWriter`` that is shared by consecutive episodes and
  gets its footer only at ``finalize()``: a kill leaves the whole file unreadable, taking every
  episode already in it;
* episode metadata rows are buffered in memory (10 episodes) and written to an open
  ParquetWriter, while ``meta/info.json`` (episode/frame totals) and ``stats.json`` are rewritten
  after every episode: after a kill, info.json counts episodes that meta/episodes lacks;
* videos of later episodes are concatenated into the previous episode's mp4 in place;
* ``info.json``, ``stats.json`` and ``tasks.parquet`` are rewritten in place (not atomically).

How this store uses it instead:

* One writer session per episode: a resumed dataset at ``begin``, ``save_episode()`` + ``finalize()``
  at ``save``. Resuming always starts new data/video/episode-metadata files, so an episode's save only
  *creates* files, except the three small meta files above. Cost: one parquet file, one meta parquet
  file and one mp4 per view per episode (LeRobot reads that fine; ``lerobot``'s dataset tools can
  merge files later). Only the first session is ``LeRobotDataset.resume()``: it reads every episode's
  metadata file through HF datasets, which made each ``begin`` grow with the dataset (3.5 s at 90
  episodes) and left an arrow cache of them behind each time; later sessions keep that metadata,
  which LeRobot's own ``save_episode`` keeps current, and open only a new writer (``_next_session``).
* A journal around each save: before it, the three meta files are copied and the listing of
  data/, videos/ and meta/episodes/ is recorded (``.recorder_journal``, made visible by an atomic
  rename); after ``finalize()`` every new or rewritten file and its directory is fsync'ed, then
  the journal is removed (atomic rename first). On open, a journal left by a crash is rolled back:
  files not in the listing are deleted and the meta files restored, which is exactly the dataset
  as it was before that save. An episode is durable once ``save`` returns.
* Frames of the episode in progress live only in LeRobot's staging directory ``images/`` (PNG per
  frame) and in memory: a crash mid-episode loses that episode only; the staging directory and
  LeRobot's encoder temp directories are deleted on open.
* The empty dataset is created in a sibling directory and renamed into place, so ``root`` is
  either absent or a complete LeRobotDataset.

Power loss: everything a completed ``save`` wrote is fsync'ed before it returns; what LeRobot
writes during a save is not needed until the journal is gone. Free disk space is checked at open
and at every ``begin``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_mbpo_ros.core.data.recording import (
    SUCCESS_KEY,
    SUCCESS_LABELS,
    Outcome,
    RecordedFrame,
    RecordingConfig,
    build_features,
)
from vla_mbpo_ros.core.util.durable import fsync_path

_JOURNAL = ".recorder_journal"
_JOURNAL_TMP = ".recorder_journal.tmp"
_JOURNAL_DONE = ".recorder_journal.done"
_REWRITTEN_META = ("meta/info.json", "meta/stats.json", "meta/tasks.parquet")
_APPEND_ONLY_DIRS = ("data", "videos", "meta/episodes")
_STAGING_DIR = "images"  # LeRobot's per-frame PNG staging (DEFAULT_IMAGE_PATH)
_ENCODER_TMP_PREFIX = "tmp"  # tempfile.mkdtemp(dir=root) of LeRobot's video encoding


def _quiet_encoders() -> None:
    """No per-episode wall of text: the encoder's statistics (libx264 logs through FFmpeg at info level;
    LeRobot restores FFmpeg's own printer after encoding) are not what a recording node should print.
    (The datasets library's progress bars are off by the package's environment, core/data/__init__.py.)"""
    import av.logging

    av.logging.set_level(av.logging.ERROR)
    av.logging.set_libav_level(av.logging.ERROR)


@contextmanager
def _scheduling_policy_kept():
    """Restore this thread's scheduling policy after video encoding: SVT-AV1 (LeRobot's default
    codec) raises the encoding thread to SCHED_FIFO 99 when it may (root), after which the recorder
    and every process it starts would preempt the control loop."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)


class InsufficientDiskSpace(RuntimeError):
    """Free space at the dataset location is below the configured minimum."""


@dataclass(frozen=True)
class SavedEpisode:
    index: int
    frames: int
    outcome: Outcome
    save_seconds: float  # wall time of save_episode + finalize + fsync (video encoding included)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _fsync_tree(paths: list[Path]) -> None:
    """fsync files and every directory holding them (a new file needs its directory entry synced)."""
    dirs: set[Path] = set()
    for path in paths:
        fsync_path(path)
        dirs.update(path.parents)
    for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        if directory.exists():
            fsync_path(directory)


def _comparable_features(features: dict[str, dict]) -> dict[str, dict]:
    """Features without LeRobot's defaults and the video ``info`` block it fills in itself."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    return {
        key: {"dtype": ft["dtype"], "shape": tuple(ft["shape"]), "names": ft.get("names")}
        for key, ft in features.items()
        if key not in DEFAULT_FEATURES
    }


class EpisodeStore:
    """Appends episodes to the LeRobotDataset at ``root`` (created on first open).

    Single-threaded: call every method from one thread (the recorder's writer thread).
    """

    def __init__(self, root: str | Path, config: RecordingConfig) -> None:
        self.root = Path(root).absolute()
        self.config = config
        self.features = build_features(config)
        self._dataset: Any = None  # LeRobotDataset in write mode while an episode is open
        self._last_session: Any = None  # the finalized dataset of the previous episode (see _next_session)
        self._task = ""
        self._source = ""
        self._frames = 0
        self.check_disk_space()
        # Import LeRobot's writer now (10-20 s on a loaded small CPU), not in the first begin().
        from lerobot.configs import RGBEncoderConfig
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401

        _quiet_encoders()

        try:  # LeRobot checks the codec and its options against PyAV here: fail at start, named
            self._encoder = RGBEncoderConfig(vcodec=config.video_codec, crf=config.video_crf, g=config.video_gop)
        except ValueError as err:
            raise ValueError(f"video_codec: {err}") from err
        self.recovered = self._recover()
        if (self.root / "meta" / "info.json").is_file():
            self._check_compatible()
        else:
            self._create_empty()
        self.num_episodes, self.num_frames = self._read_totals()

    # ------------------------------------------------------------------ public
    @property
    def recording(self) -> bool:
        return self._dataset is not None

    @property
    def frames_in_episode(self) -> int:
        return self._frames

    def check_disk_space(self) -> None:
        free_mb = free_disk_bytes(self.root) / 2**20
        if free_mb < self.config.min_free_disk_mb:
            raise InsufficientDiskSpace(
                f"only {free_mb:.0f} MB free at {self.root}, below min_free_disk_mb "
                f"{self.config.min_free_disk_mb:.0f} MB: free space or lower the threshold"
            )

    def begin(self, task: str, source: str) -> int:
        """Open the next episode; returns its index. Raises InsufficientDiskSpace, RuntimeError."""
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        if self.recording:
            raise RuntimeError(f"episode {self.num_episodes} is still being recorded")
        if not task:
            raise ValueError("task: an episode needs a task (language instruction)")
        self.check_disk_space()
        self._remove_staging()
        cfg = self.config
        if self._last_session is not None:
            self._dataset, self._last_session = self._next_session(self._last_session), None
        else:
            self._dataset = LeRobotDataset.resume(
                cfg.repo_id, root=self.root, rgb_encoder=self._encoder, encoder_threads=cfg.encoder_threads or None
            )
        self._task, self._source, self._frames = task, source, 0
        return self.num_episodes

    def add(self, frame: RecordedFrame) -> None:
        """Append a frame to the open episode (writes its images to the staging directory)."""
        if not self.recording:
            raise RuntimeError("no episode is open")
        self._dataset.add_frame(frame.to_lerobot(self.config, self._task, self._source))
        self._frames += 1

    def save(self, outcome: Outcome) -> SavedEpisode:
        """Encode, write and fsync the open episode with its label; durable when this returns."""
        if outcome is Outcome.DISCARD:
            raise ValueError("use discard() to drop an episode")
        if not self.recording:
            raise RuntimeError("no episode is open")
        if self._frames == 0:
            self.discard()
            raise RuntimeError("the episode has no frames: nothing saved")
        started = time.monotonic()
        index = self.num_episodes
        buffer = self._dataset.writer.episode_buffer
        buffer[SUCCESS_KEY] = [np.array([SUCCESS_LABELS[outcome]], dtype=np.int8)] * self._frames
        dataset, self._dataset = self._dataset, None
        try:
            self._journal_begin()
            # parallel_encoding=False: LeRobot would fork a process pool per episode from this
            # (multi-threaded, DDS-holding) process; the recorder already encodes off its callbacks.
            with _scheduling_policy_kept():
                dataset.save_episode(parallel_encoding=False)
            dataset.finalize()
            self._journal_commit()
        except BaseException:
            self._frames = 0
            self._recover()  # the dataset as it was before this save; the next begin reads it again
            raise
        self._last_session = dataset
        # LeRobot removes the episode's frame folders but leaves the empty staging tree: remove it, so a
        # nominal end leaves nothing for the next start to mistake for an unfinished episode.
        self._remove_staging()
        frames, self._frames = self._frames, 0
        self.num_episodes += 1
        self.num_frames += frames
        return SavedEpisode(index, frames, outcome, time.monotonic() - started)

    def discard(self) -> None:
        """Drop the open episode; the dataset on disk is left exactly as before ``begin``."""
        if not self.recording:
            return
        self._dataset.clear_episode_buffer(delete_images=True)
        self._dataset.finalize()  # nothing saved in this session: closes nothing, writes nothing
        self._dataset, self._last_session = None, self._dataset
        self._frames = 0
        self._remove_staging()

    def close(self) -> None:
        """Discard an episode still open (an unfinished episode is never saved implicitly)."""
        self.discard()

    def _next_session(self, finished: Any) -> Any:
        """Write mode again on a finalized dataset of this store, as ``resume`` would open it, from the
        metadata in memory (LeRobot 0.6.1). What ``resume`` reads from disk that the writer uses:
        info/tasks/stats (kept current by ``save_episode``) and the last row of meta/episodes, which
        places the next episode's files after it; ``latest_episode`` None makes it start new files."""
        from lerobot.datasets.dataset_writer import DatasetWriter

        meta = finished.meta
        if meta.latest_episode is not None:  # the episode saved last (values as one-element lists)
            meta.episodes = [{key: value[0] for key, value in meta.latest_episode.items()}]
            meta.latest_episode = None
        meta._finalized = False  # or finalize() would never write this session's metadata
        finished.writer = DatasetWriter(
            meta=meta, root=finished.root, rgb_encoder=self._encoder, depth_encoder=None,
            encoder_threads=self.config.encoder_threads or None, batch_encoding_size=1,
            initial_frames=meta.total_frames,
        )
        finished._is_finalized = False
        return finished

    # ------------------------------------------------------------------ layout
    def _create_empty(self) -> None:
        from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

        if self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"root: {self.root} exists, is not empty and holds no LeRobotDataset (meta/info.json)")
        staging = self.root.with_name(f".{self.root.name}.creating")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        LeRobotDatasetMetadata.create(
            repo_id=cfg.repo_id, fps=cfg.fps, features=self.features, robot_type=cfg.robot_type,
            root=staging, use_videos=cfg.use_videos,
        )
        _fsync_tree([p for p in staging.rglob("*") if p.is_file()])
        if self.root.exists():
            self.root.rmdir()  # empty (checked above)
        os.replace(staging, self.root)
        fsync_path(self.root.parent)

    def _check_compatible(self) -> None:
        """The existing dataset must have exactly the configured features and fps."""
        info = json.loads((self.root / "meta" / "info.json").read_text())
        if info.get("fps") != self.config.fps:
            raise ValueError(f"fps: the dataset at {self.root} is recorded at {info.get('fps')} fps, config says {self.config.fps}")
        existing = _comparable_features(info["features"])
        wanted = _comparable_features(self.features)
        for key in sorted(set(existing) | set(wanted)):
            if existing.get(key) != wanted.get(key):
                raise ValueError(
                    f"features: {key!r} is {existing.get(key)} in the dataset at {self.root} but {wanted.get(key)} "
                    "from the config: use another dataset directory or the dataset's settings"
                )

    def _read_totals(self) -> tuple[int, int]:
        info = json.loads((self.root / "meta" / "info.json").read_text())
        return int(info["total_episodes"]), int(info["total_frames"])

    def _remove_staging(self) -> None:
        shutil.rmtree(self.root / _STAGING_DIR, ignore_errors=True)

    # ------------------------------------------------------------------ journal
    def _listing(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root)) for d in _APPEND_ONLY_DIRS if (self.root / d).is_dir()
            for p in (self.root / d).rglob("*") if p.is_file()
        )

    def _journal_begin(self) -> None:
        tmp = self.root / _JOURNAL_TMP
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "meta").mkdir(parents=True)
        saved = []
        for relative in _REWRITTEN_META:
            source = self.root / relative
            if source.is_file():
                shutil.copy2(source, tmp / relative)
                saved.append(relative)
        (tmp / "listing.json").write_text(json.dumps({"files": self._listing(), "meta": saved}))
        _fsync_tree([p for p in tmp.rglob("*") if p.is_file()])
        os.replace(tmp, self.root / _JOURNAL)
        fsync_path(self.root)

    def _journal_commit(self) -> None:
        journal = self.root / _JOURNAL
        before = set(json.loads((journal / "listing.json").read_text())["files"])
        changed = [self.root / f for f in self._listing() if f not in before]
        changed += [self.root / f for f in _REWRITTEN_META if (self.root / f).is_file()]
        _fsync_tree(changed)
        done = self.root / _JOURNAL_DONE
        os.replace(journal, done)
        fsync_path(self.root)
        shutil.rmtree(done)

    def _recover(self) -> str:
        """Undo a save interrupted by a crash and remove leftovers; returns what was done."""
        if not self.root.is_dir():
            return ""
        actions = []
        journal = self.root / _JOURNAL
        if journal.is_dir():
            record = json.loads((journal / "listing.json").read_text())
            keep = set(record["files"])
            removed = [f for f in self._listing() if f not in keep]
            for relative in removed:
                (self.root / relative).unlink()
            for relative in _REWRITTEN_META:
                target = self.root / relative
                if relative in record["meta"]:
                    partial = target.with_name(target.name + ".restore")
                    shutil.copy2(journal / relative, partial)
                    os.replace(partial, target)
                elif target.exists():
                    target.unlink()
            _fsync_tree([self.root / f for f in _REWRITTEN_META if (self.root / f).is_file()])
            shutil.rmtree(journal)
            actions.append(f"rolled back an interrupted save ({len(removed)} partial file(s) removed)")
        for leftover in (_JOURNAL_TMP, _JOURNAL_DONE):
            shutil.rmtree(self.root / leftover, ignore_errors=True)
        staging = self.root / _STAGING_DIR
        if staging.exists():
            unfinished = any(p.is_file() for p in staging.rglob("*"))
            self._remove_staging()
            if unfinished:
                actions.append("removed the frames of an unfinished episode")
        for tmp in self.root.glob(f"{_ENCODER_TMP_PREFIX}*"):
            if tmp.is_dir():
                shutil.rmtree(tmp)
        return "; ".join(actions)

