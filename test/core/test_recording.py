"""Recording logic without ROS: feature spec, pairing, sampling, the crash-safe LeRobotDataset store."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vla_mbpo_ros.core.data.episode_store import EpisodeStore, InsufficientDiskSpace
from vla_mbpo_ros.core.data.recording import FramePairer, FrameSampler, Outcome, RecordedFrame, RecordingConfig, build_features
from vla_mbpo_ros.core.data.teleop import JointTargetIntegrator, JoyMapping

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL = {"image_size": (16, 32), "fps": 10, "min_free_disk_mb": 0.0}


def _frame(i: int, config: RecordingConfig, episode: int = 0) -> RecordedFrame:
    h, w = config.image_size
    images = {view: np.full((h, w, 3), (40 * k + 10 * i + 50 * episode) % 256, np.uint8) for k, view in enumerate(config.views)}
    d = len(config.joint_names)
    return RecordedFrame(
        images=images,
        state=np.linspace(0, 1, d) + i,
        action=np.linspace(0, 1, d) - i - 100 * episode,
        obs_stamp=100.0 + i * 0.1,
        command_stamp=100.01 + i * 0.1,
        intervention=i % 3 == 0,
        policy_version=f"v{episode}",
        command_source="teleop",
    )


def _record(store: EpisodeStore, frames: int, outcome: Outcome, episode: int, source: str = "teleop"):
    store.begin("pick the cube", source)
    for i in range(frames):
        store.add(_frame(i, store.config, episode))
    return store.save(outcome)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/vla_mbpo", root=root, video_backend="pyav")


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fps", 7.5),
        ("views", ["head", "head"]),
        ("views", ["head", "bad view"]),
        ("image_size", (4, 96)),
        ("joint_names", []),
        ("repo_id", "no_owner"),
        ("video_codec", "mpeg1"),
        ("max_command_delay", -0.1),
        ("frame_slack", 1.5),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RecordingConfig(**{field: value})


def test_frames_too_narrow_for_libsvtav1_are_refused_at_config_time():
    # PyAV's SVT-AV1 kills the process (SIGFPE) on such frames; h264 encodes them.
    with pytest.raises(ValueError, match="image_size"):
        RecordingConfig(image_size=(96, 24), video_codec="libsvtav1")
    RecordingConfig(image_size=(96, 24), video_codec="h264")


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="camera_views"):
        RecordingConfig.from_dict({"camera_views": ["head"]})


def test_features_have_one_video_per_view_and_metadata_outside_policy_namespaces():
    features = build_features(RecordingConfig(views=("head", "wrist", "side"), image_size=(48, 64)))
    assert [k for k in features if k.startswith("observation.images.")] == [
        "observation.images.head", "observation.images.wrist", "observation.images.side"]
    assert features["observation.images.side"]["shape"] == (48, 64, 3)
    assert features["action"]["names"] == list(RecordingConfig().joint_names)
    extra = set(features) - {"observation.state", "action"} - {k for k in features if k.startswith("observation.images.")}
    assert extra == {"intervention", "success", "policy_version", "episode_source", "command_source", "obs_stamp", "command_stamp"}
    assert not any(k.startswith(("observation", "action")) for k in extra)  # LeRobot would treat them as inputs


def test_frame_with_a_wrong_image_shape_names_the_view():
    config = RecordingConfig(**SMALL)
    frame = _frame(0, config)
    frame.images["wrist"] = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="observation.images.wrist"):
        frame.to_lerobot(config, "task", "teleop")


# --------------------------------------------------------------------------------------- pairing
def test_pairs_each_observation_with_the_first_command_at_or_after_it():
    pairer: FramePairer[str, str] = FramePairer(max_command_delay=0.05, history=1.0, max_pending=10)
    assert pairer.add_observation(1.000, "o1") == []
    assert pairer.add_command(0.990, "c0") == []  # before the observation
    paired = pairer.add_command(1.010, "c1")
    assert [(p.observation, p.command, p.command_stamp) for p in paired] == [("o1", "c1", 1.010)]
    # An observation delivered after the command that follows it pairs from the history.
    pairer.add_command(1.043, "c2")
    pairer.add_command(1.076, "c3")
    late_delivery = pairer.add_observation(1.040, "o2")
    assert [(p.observation, p.command) for p in late_delivery] == [("o2", "c2")]
    assert pairer.stats.paired == 2


def test_drops_observations_whose_next_command_is_too_late_or_that_overflow():
    pairer: FramePairer[str, str] = FramePairer(max_command_delay=0.05, history=1.0, max_pending=2)
    pairer.add_observation(1.0, "o1")
    assert pairer.add_command(1.2, "c") == []  # 0.2 s later: not the command of that frame
    assert pairer.stats.late == 1
    for i in range(4):
        pairer.add_observation(2.0 + i * 0.01, f"p{i}")
    assert pairer.pending == 2 and pairer.stats.overflow == 2
    assert [p.observation for p in pairer.add_command(2.031, "c")] == ["p2", "p3"]
    assert pairer.add_command(2.0, "old") == [] and pairer.stats.stale_commands == 1


def test_sampler_keeps_the_dataset_rate_and_counts_gaps():
    sampler = FrameSampler(fps=10, slack=0.25)
    stamps = np.arange(0, 1.0, 1 / 30)  # a 30 Hz stream into a 10 Hz dataset
    kept = [s for s in stamps if sampler.accept(float(s))]
    np.testing.assert_allclose(np.diff(kept), 0.1, atol=1e-9)
    sampler.reset()
    for stamp in (5.0, 5.1, 5.4):  # two frames missing
        sampler.accept(stamp)
    assert sampler.gaps == 2


# ----------------------------------------------------------------------------------------- store
# ------------------------------------------------------------------------ the running episode's frames
@dataclass
class _Command:  # the fields of vla_mbpo_ros/ExecutedCommand the recorder reads
    joint_names: list
    positions: list
    intervention: bool = False
    policy_version: str = "v1"
    source: str = "policy"


def _observation(value: float, views=("head", "wrist")):
    from vla_mbpo_ros.core.data.episode import Observation

    return Observation({v: np.full((16, 32, 3), value, np.uint8) for v in views}, np.full(6, value))


def test_episode_frames_pair_observations_only_inside_the_episode_and_reorder_the_command():
    from vla_mbpo_ros.core.data.episode import RunningEpisode
    from vla_mbpo_ros.core.data.episode_frames import EpisodeFrames

    config = RecordingConfig(**SMALL)
    frames = EpisodeFrames(config)
    joints = list(config.joint_names)
    assert frames.add_observation(10.0, 0.0, lambda: _observation(1)) == []  # no episode open
    assert frames.add_command(10.05, _Command(joints, [0.0] * 6)) == []  # kept for pairing, no frame
    frames.begin(RunningEpisode(0, "pick", "policy", 0.0), stamp=10.0)
    (frame,) = frames.add_observation(10.0, 0.01, lambda: _observation(2))  # pairs with the command at 10.05
    assert (frame.obs_stamp, frame.command_stamp) == (10.0, 10.05)
    assert frames.add_observation(10.1, 0.01, lambda: _observation(3)) == []  # waits for its command
    (frame,) = frames.add_command(10.12, _Command(joints[::-1], list(range(6)), intervention=True, source="teleop"))
    np.testing.assert_array_equal(frame.action, np.arange(6)[::-1])  # in the dataset's joint order
    assert frame.images["head"][0, 0, 0] == 3 and frame.intervention and frame.command_source == "teleop"
    assert frames.end().index == 0 and frames.end() is None
    assert frames.add_observation(10.2, 0.01, lambda: _observation(4)) == []


def test_episode_frames_count_what_they_drop_and_report_it():
    from vla_mbpo_ros.core.data.episode import RunningEpisode
    from vla_mbpo_ros.core.data.episode_frames import EpisodeFrames

    warnings, errors = [], []
    config = RecordingConfig(**SMALL, max_queued_frames=2)
    frames = EpisodeFrames(config, warn=warnings.append, error=errors.append)
    frames.begin(RunningEpisode(3, "pick", "policy", 0.0), stamp=10.0)
    decoded = []
    assert frames.add_observation(9.9, 0.0, lambda: decoded.append(1)) == []  # stamped before the episode
    assert frames.add_observation(10.0, 0.5, lambda: decoded.append(1)) == []  # 0.5 s old > max_observation_age
    assert not decoded, "a dropped observation is never decoded"
    assert frames.add_observation(10.1, 0.0, lambda: _observation(1, views=("head",))) == []
    assert frames.add_observation(10.15, 0.0, lambda: _observation(1)) == []  # closer than a period: skipped
    assert frames.add_observation(10.2, 0.0, lambda: _observation(1)) == []
    assert frames.add_command(10.21, _Command(["a", "b"], [0.0, 1.0])) == []  # joints that do not fit
    assert [frames.admit(queued) for queued in (0, 1, 2)] == [True, True, False]
    frames.written(0.5)
    c = frames.counters
    assert (c.stale, c.invalid, c.backlog_drops, c.frames_queued, c.frames_written) == (1, 2, 1, 2, 1)
    assert frames.dropping and frames.values()["write_capacity_fps"] == 2.0
    assert warnings[0].startswith("observation received 0.50 s after its stamp") and warnings[1].startswith("writer backlog full")
    assert errors[0].startswith("observation not recorded: observation has no view(s) ['wrist']")
    assert errors[1].startswith("command not recorded:")
    assert frames.summary() == ("1 frames, 0 gap(s), 1 stale observation(s), 0 late command(s), 1 backlog drop(s), "
                                "2 invalid message(s)")
    frames.begin(RunningEpisode(4, "pick", "policy", 0.0), stamp=11.0)
    assert frames.counters == type(c)() and not frames.dropping


def test_saved_episodes_load_with_lerobot_with_actions_labels_and_frames(tmp_path):
    config = RecordingConfig(**SMALL)
    store = EpisodeStore(tmp_path / "ds", config)
    saved = [_record(store, 12, Outcome.SUCCESS, 0), _record(store, 7, Outcome.FAILURE, 1, "policy"),
             _record(store, 5, Outcome.UNLABELLED, 2)]
    assert [(s.index, s.frames) for s in saved] == [(0, 12), (1, 7), (2, 5)]
    assert (store.num_episodes, store.num_frames) == (3, 24)

    dataset = _load(tmp_path / "ds")
    assert dataset.num_episodes == 3 and len(dataset) == 24
    columns = dataset.hf_dataset.with_format("numpy")[:]
    np.testing.assert_array_equal(columns["episode_index"], [0] * 12 + [1] * 7 + [2] * 5)
    np.testing.assert_allclose(columns["timestamp"][:12], np.arange(12) / 10, atol=1e-6)
    np.testing.assert_array_equal(columns["success"], [1] * 12 + [0] * 7 + [-1] * 5)
    expected_actions = np.concatenate([np.stack([_frame(i, config, e).action for i in range(n)]) for e, n in ((0, 12), (1, 7), (2, 5))])
    np.testing.assert_allclose(np.stack(columns["action"]), expected_actions, rtol=1e-6)
    assert list(columns["episode_source"][12:14]) == ["policy", "policy"]
    assert list(columns["intervention"][:4]) == [True, False, False, True]
    item = dataset[12 + 3]  # episode 1, frame 3
    assert item["observation.images.head"].shape == (3, 16, 32)
    assert float(item["observation.images.head"].mean() * 255) == pytest.approx((30 + 50) % 256, abs=3)
    assert item["policy_version"] == "v1" and item["task"] == "pick the cube"
    # A nominal end leaves nothing to recover: the next start has nothing to report.
    store.close()
    assert EpisodeStore(tmp_path / "ds", config).recovered == ""


def test_later_episodes_reuse_the_metadata_and_still_start_new_files(tmp_path, monkeypatch):
    """Only the first episode of a store reads the dataset's metadata (LeRobot's resume reads every
    episode's file: begin grew with the dataset); each episode still gets files of its own."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    resumes = []
    resume = LeRobotDataset.resume.__func__
    monkeypatch.setattr(LeRobotDataset, "resume", classmethod(lambda cls, *a, **k: resumes.append(1) or resume(cls, *a, **k)))
    root = tmp_path / "ds"
    _record(EpisodeStore(root, RecordingConfig(**SMALL)), 4, Outcome.SUCCESS, 0)  # an earlier run
    store = EpisodeStore(root, RecordingConfig(**SMALL))
    _record(store, 5, Outcome.FAILURE, 1)
    store.begin("pick the cube", "teleop")
    store.add(_frame(0, store.config, 9))
    store.discard()
    _record(store, 6, Outcome.SUCCESS, 2, "policy")
    _record(store, 3, Outcome.UNLABELLED, 3)
    assert len(resumes) == 2  # one per store

    dataset = _load(root)
    assert dataset.num_episodes == 4 and len(dataset) == 18
    columns = dataset.hf_dataset.with_format("numpy")[:]
    np.testing.assert_array_equal(columns["episode_index"], [0] * 4 + [1] * 5 + [2] * 6 + [3] * 3)
    np.testing.assert_array_equal(columns["index"], np.arange(18))
    np.testing.assert_array_equal(columns["success"], [1] * 4 + [0] * 5 + [1] * 6 + [-1] * 3)
    episodes = dataset.meta.episodes
    for key in ("data/file_index", "meta/episodes/file_index", "videos/observation.images.head/file_index"):
        assert list(episodes[key]) == [0, 1, 2, 3], key
    assert dataset[15]["observation.images.wrist"].shape == (3, 16, 32)
    assert float(dataset[9 + 2]["observation.images.head"].mean() * 255) == pytest.approx(10 * 2 + 50 * 2, abs=3)
    np.testing.assert_allclose(columns["action"][9], np.linspace(0, 1, 6) - 200, rtol=1e-6)  # not the discarded one


def test_discard_leaves_no_trace(tmp_path):
    store = EpisodeStore(tmp_path / "ds", RecordingConfig(**SMALL))
    _record(store, 5, Outcome.SUCCESS, 0)
    before = _tree(tmp_path / "ds")
    store.begin("pick the cube", "teleop")
    for i in range(6):
        store.add(_frame(i, store.config))
    store.discard()
    assert _tree(tmp_path / "ds") == before
    assert store.num_episodes == 1


_CRASHING_CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {test_dir!r})
    from test_recording import _frame, _record, SMALL
    from vla_mbpo_ros.core.data.episode_store import EpisodeStore
    from vla_mbpo_ros.core.data.recording import Outcome, RecordingConfig
    store = EpisodeStore({root!r}, RecordingConfig(**SMALL))
    if {first!r}:
        _record(store, 6, Outcome.SUCCESS, 0)
    store.begin("pick the cube", "teleop")
    for i in range(9):
        store.add(_frame(i, store.config, 1))
    if {mid_save!r}:  # stop dead inside save(): journal written, LeRobot's files half there
        dataset = store._dataset
        store._journal_begin()
        dataset.save_episode(parallel_encoding=False)
    os._exit(9)  # like kill -9: no finalizers, no flush
    """
)


@pytest.mark.parametrize("mid_save", [False, True], ids=["mid_episode", "mid_save"])
def test_a_crash_never_damages_saved_episodes_and_recording_resumes(tmp_path, mid_save):
    root = tmp_path / "ds"
    script = _CRASHING_CHILD.format(test_dir=str(Path(__file__).parent), root=str(root), first=True, mid_save=mid_save)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr[-2000:]
    saved_files = {k: v for k, v in _tree(root).items() if k.startswith(("data/", "videos/", "meta/episodes/"))}

    store = EpisodeStore(root, RecordingConfig(**SMALL))
    assert ("rolled back" in store.recovered) == mid_save
    assert store.num_episodes == 1 and not (root / "images").exists()
    after_recovery = _tree(root)
    for path, digest in saved_files.items():
        if path in after_recovery:
            assert after_recovery[path] == digest, f"{path} of a saved episode changed"
    assert len(_load(root)) == 6

    _record(store, 4, Outcome.FAILURE, 2)
    dataset = _load(root)
    assert dataset.num_episodes == 2 and len(dataset) == 10
    columns = dataset.hf_dataset.with_format("numpy")[:]
    np.testing.assert_array_equal(columns["success"], [1] * 6 + [0] * 4)
    assert dataset[9]["observation.images.wrist"].shape == (3, 16, 32)


def test_crash_before_the_first_episode_leaves_an_empty_dataset_to_resume(tmp_path):
    root = tmp_path / "ds"
    script = _CRASHING_CHILD.format(test_dir=str(Path(__file__).parent), root=str(root), first=False, mid_save=True)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120).returncode == 9
    store = EpisodeStore(root, RecordingConfig(**SMALL))
    assert store.num_episodes == 0
    _record(store, 3, Outcome.SUCCESS, 0)
    assert len(_load(root)) == 3


def test_reopening_with_other_features_names_the_feature(tmp_path):
    EpisodeStore(tmp_path / "ds", RecordingConfig(**SMALL))
    with pytest.raises(ValueError, match="observation.images.head"):
        EpisodeStore(tmp_path / "ds", RecordingConfig(**{**SMALL, "image_size": (32, 32)}))
    with pytest.raises(ValueError, match="fps"):
        EpisodeStore(tmp_path / "ds", RecordingConfig(**{**SMALL, "fps": 30}))


def test_refuses_when_free_disk_space_is_below_the_threshold(tmp_path):
    with pytest.raises(InsufficientDiskSpace, match="min_free_disk_mb"):
        EpisodeStore(tmp_path / "ds", RecordingConfig(**{**SMALL, "min_free_disk_mb": 1e12}))
    assert not (tmp_path / "ds").exists()


def test_refuses_a_non_empty_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="root"):
        EpisodeStore(tmp_path / "ds", RecordingConfig(**SMALL))


# ---------------------------------------------------------------------------------------- teleop
def test_joy_moves_only_with_the_deadman_and_integrates_within_limits():
    mapping = JoyMapping(joints=2, axes=(0, -1), axis_speeds=(2.0, 0.0), increase_buttons=(-1, 1),
                         decrease_buttons=(-1, 2), button_speeds=(0.0, 1.0), deadman_button=0, intervention_button=3)
    axes, released, held = [0.5], [0, 1, 0, 0], [1, 1, 0, 0]
    np.testing.assert_array_equal(mapping.velocities(axes, released), [0.0, 0.0])
    np.testing.assert_allclose(mapping.velocities(axes, held), [1.0, 1.0])
    np.testing.assert_allclose(mapping.velocities([0.05], [1, 0, 1, 0]), [0.0, -1.0])  # deadzone, decrease
    integrator = JointTargetIntegrator([-1.0, -1.0], [1.0, 1.0])
    integrator.engage([0.2, 0.9])
    for _ in range(10):
        target = integrator.step(np.array([1.0, 1.0]), 0.1)
    np.testing.assert_allclose(target, [1.0, 1.0])


def test_bad_joy_mapping_names_the_field():
    with pytest.raises(ValueError, match="axes"):
        JoyMapping(joints=6, axes=(0, 1))
    with pytest.raises(ValueError, match="deadman_button"):
        JoyMapping(deadman_button=-1)

