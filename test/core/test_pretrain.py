"""The one-time pretraining of the tiny UMM (make world-model): a real play corpus recorded through the
recorder's store, read back by LeRobot, trained, interrupted and resumed, verified by sha256."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_mbpo_ros.core.sim.play import BEHAVIOURS, PlayConfig
from vla_mbpo_ros.core.world_model.pretrain import MANIFEST, load_pretrain_config, verify_pretrained
from vla_mbpo_ros.core.world_model.train import RESUME_DIR, TRAINER_STATE

REPO = Path(__file__).resolve().parents[2]


def _config(path: Path, steps: int) -> Path:
    path.write_text(yaml.safe_dump({
        "corpus": {"episodes": 6, "max_frames": 30},
        "holdout_episodes": 2,
        "tiny": {"image_size": 32, "tokens_per_side": 4, "hidden_size": 64, "intermediate_size": 128, "num_layers": 1},
        "train": {"steps": steps, "vq_fit_steps": 4, "save_every": 3, "batch_size": 4, "reward_batch_size": 4},
        "torch_threads": 1,
    }))
    return path


def _pretrain(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vla_mbpo_ros.core.world_model.pretrain", "--config", str(config),
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"pretraining exited ({process.returncode}) before {path} appeared:\n"
                                 f"{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)  # polling a file another process writes: there is no event to wait on


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, str]:
    """A pretraining killed after its first resumable checkpoint, then run again to the end."""
    root = tmp_path_factory.mktemp("pretrain")
    out = root / "out"
    first = _pretrain(_config(root / "long.yaml", steps=100_000), out)
    _wait_for(out / "model" / RESUME_DIR / TRAINER_STATE, first, timeout=240)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = _pretrain(_config(root / "short.yaml", steps=8), out)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output[-3000:]
    return out, output


def test_the_corpus_is_a_lerobot_dataset_of_varied_episodes(pretrained):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, _ = pretrained
    dataset = LeRobotDataset("local/play", root=out / "corpus")
    assert dataset.meta.total_episodes == 6
    assert {"observation.images.head", "observation.images.wrist", "action"} <= set(dataset.meta.features)
    config = PlayConfig(episodes=6)
    assert len({config.behaviour(i) for i in range(6)}) >= 4  # the mix is spread, not blocks of one behaviour


def test_corpus_workers_play_the_same_episodes_in_index_order():
    """The pretraining plays its corpus in worker processes (corpus_workers) while it writes: each episode must
    be the one index-seeded play here gives, frame for frame, and come back in the order asked for."""
    import numpy as np

    from vla_mbpo_ros.core.sim.config import SimConfig
    from vla_mbpo_ros.core.sim.play import played_episodes

    config = PlayConfig(episodes=8, max_frames=12)
    sim_config = SimConfig(image_size=(32, 32), camera_fps=10.0, control_fps=30.0)
    indices = [5, 2, 3, 0]  # out of order: they must come back in the order asked for
    with played_episodes(config, sim_config, workers=0) as play:
        here = list(play(indices))
    with played_episodes(config, sim_config, workers=2) as play:
        there = list(play(indices))
    assert [behaviour for _, behaviour, _ in there] == [config.behaviour(i) for i in indices]
    for (frames, _, success), (their_frames, _, their_success) in zip(here, there, strict=True):
        assert success == their_success and len(frames) == len(their_frames)
        for mine, theirs in zip(frames, their_frames):
            np.testing.assert_array_equal(mine.action, theirs.action)
            np.testing.assert_array_equal(mine.state, theirs.state)
            for view in mine.images:
                np.testing.assert_array_equal(mine.images[view], theirs.images[view])


def _spawned_children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if "spawn_main" in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's reaping is left


def test_corpus_workers_end_when_the_writer_is_killed(tmp_path):
    """A pretraining killed hard (SIGKILL, out of memory) while it records its corpus must not leave its worker
    processes behind, waiting for work forever."""
    script = ("from vla_mbpo_ros.core.sim.config import SimConfig\n"
              "from vla_mbpo_ros.core.sim.play import PlayConfig, record_play_corpus\n"
              f"record_play_corpus({str(tmp_path / 'corpus')!r}, PlayConfig(episodes=500, max_frames=12),\n"
              "                   SimConfig(image_size=(32, 32), camera_fps=10.0, control_fps=30.0), workers=2)\n")
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _spawned_children(writer.pid)) < 2:
            assert writer.poll() is None, f"the writer exited ({writer.returncode}) before starting its workers"
            assert time.monotonic() < deadline, "the writer did not start 2 workers within 120 s"
            time.sleep(0.1)  # process creation is not an event this test can wait on
    finally:
        writer.kill()
        writer.wait()
    deadline = time.monotonic() + 30
    while alive := [pid for pid in workers if _running(pid)]:
        assert time.monotonic() < deadline, f"workers {alive} outlived their killed writer by 30 s"
        time.sleep(0.1)


def test_the_interrupted_pretraining_resumed_from_its_checkpoint(pretrained):
    out, output = pretrained
    manifest = json.loads((out / "model" / MANIFEST).read_text())
    assert manifest["train"]["resumed_at"] >= 3 and manifest["train"]["resumed_at"] % 3 == 0
    assert not (out / "model" / RESUME_DIR).exists()  # finished: nothing left to resume
    assert manifest["corpus"]["seed_base"] == 5_000_000 and manifest["corpus"]["episodes"] == 6
    assert set(manifest["corpus"]["behaviours"]) == set(BEHAVIOURS)
    assert output.strip().splitlines()[-1].startswith("pretrain: psnr(model/copy/vq) head ")


def test_the_pretrained_model_loads_and_steps(pretrained):
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    out, _ = pretrained
    verify_pretrained(out / "model")
    model = UMMWorldModel.from_pretrained(out / "model")
    manifest = json.loads((out / "model" / MANIFEST).read_text())
    assert model.config.reward_threshold == pytest.approx(manifest["evaluation"]["reward"]["threshold"])
    views = {v: np.zeros((2, 32, 32, 3), np.uint8) for v in ("head", "wrist")}
    next_views, reward, states = model.step(views, np.zeros((2, 10, 6), np.float32), ["pick up the cube"] * 2)
    assert next_views["wrist"].shape == (2, 32, 32, 3) and reward.shape == (2,) and states.shape == (2, 6)


def test_a_changed_weight_file_is_refused_by_name(pretrained, tmp_path):
    import shutil

    out, _ = pretrained
    copy = tmp_path / "model"
    shutil.copytree(out / "model", copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors.*sha256"):
        verify_pretrained(copy)
    with pytest.raises(FileNotFoundError, match="make world-model"):
        verify_pretrained(tmp_path / "missing")


def test_a_model_built_from_another_config_is_rebuilt_on_the_kept_corpus(pretrained, tmp_path):
    import shutil

    out, _ = pretrained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    corpus_files = {p: p.stat().st_mtime_ns for p in (copy / "corpus").rglob("*") if p.is_file()}
    config = _config(tmp_path / "short.yaml", steps=8)
    values = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**values, "world_model": {"reward_from": "transition"}}))
    process = _pretrain(config, copy)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "was built from another config (world_model): rebuilding the model" in output
    manifest = json.loads((copy / "model" / MANIFEST).read_text())
    assert manifest["config"]["world_model"]["reward_from"] == "transition"
    assert {p: p.stat().st_mtime_ns for p in (copy / "corpus").rglob("*") if p.is_file()} == corpus_files
    again = _pretrain(config, copy)  # the same config: built and verified, nothing redone
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "is built and verified" in output
    config.write_text(yaml.safe_dump({**values, "corpus": {**values["corpus"], "episodes": 7}}))
    refused = _pretrain(config, copy)
    output, _ = refused.communicate(timeout=300)
    assert refused.returncode != 0 and "corpus section" in output
    verify_pretrained(copy / "model")  # refused before touching the model


def test_the_shipped_pretraining_config_loads():
    config = load_pretrain_config(REPO / "config" / "world_model_pretrain.yaml")
    assert config.corpus.seed_base >= 5_000_000  # no learning-bench seed (0.., 10_000.., 1_000_000..) in it
    assert config.train.save_every > 0 and config.data.reward_no_margin == 0
    with pytest.raises(ValueError, match="holdout_episodes"):
        load_pretrain_config_from({"holdout_episodes": 1})


def load_pretrain_config_from(values: dict):
    from vla_mbpo_ros.core.util.config import load_config
    from vla_mbpo_ros.core.world_model.pretrain import PretrainConfig

    return load_config(PretrainConfig, values, "pretrain")


@pytest.fixture(autouse=True, scope="module")
def _offline():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_corpus_progress_prints_each_update_once():
    """A progress line per recorded episode, not two (set_postfix displays too unless told not to)."""
    import io

    from tqdm import tqdm

    from vla_mbpo_ros.core.world_model.pretrain import corpus_progress

    stream = io.StringIO()
    with tqdm(total=4, desc="play corpus", file=stream, mininterval=0, ascii=True) as bar:
        advance = corpus_progress(bar)
        for done in range(1, 5):
            advance(done, 4, "reach", done % 2 == 0)
    states = [line.split("|")[2].split("[")[0].strip() for line in stream.getvalue().replace("\n", "\r").split("\r") if "|" in line]
    # One display per update; tqdm's close repeats the last one to end the line.
    assert states == ["0/4", "1/4", "2/4", "3/4", "4/4", "4/4"], states
    assert "behaviour=reach, success=1]" in stream.getvalue()
