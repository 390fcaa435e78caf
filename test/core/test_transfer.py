"""Checkpoint transfer without a shared filesystem (core.policy.transfer) and the hot-swap path around it.

The transport here is an in-process ChunkSource reading the sender's folder through the same
``read_chunk`` the world-model node serves with; the ROS services are tested in test_offboard_transfer.py.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.control.hot_swap import HotSwapConfig, PolicySlot, prepare_candidate, resolve_checkpoint_uri
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
from vla_mbpo_ros.core.policy.replay import ReplayPolicy
from vla_mbpo_ros.core.policy.signing import generate_key_pair, load_private_key, sign_manifest
from vla_mbpo_ros.core.policy.transfer import (
    STAGING_DIR,
    CheckpointManifest,
    TransferConfig,
    TransferError,
    build_manifest,
    load_or_build_manifest,
    manifest_path,
    parse_ros_checkpoint_uri,
    read_chunk,
    receive_checkpoint,
    received_folder_name,
    ros_checkpoint_uri,
    safe_relative_path,
)
from vla_mbpo_ros.core.util.recent import RecentItems

REPO = Path(__file__).resolve().parents[2]
D = 6


class FolderSource:
    """Serves a folder like the world-model node does; ``corrupt``/``stall`` inject faults."""

    def __init__(self, directory: Path, version: str, corrupt_at: int | None = None, stall: bool = False,
                 key=None) -> None:
        self.directory, self.version = directory, version
        self.manifest_ = build_manifest(directory, version)
        if key is not None:
            self.manifest_ = sign_manifest(self.manifest_, key)
        self.corrupt_at, self.stall = corrupt_at, stall
        self.requests = 0

    def manifest(self, version: str, timeout: float) -> CheckpointManifest:
        if version != self.version:
            raise TransferError(f"version {version!r} is not served here")
        return self.manifest_

    def chunk(self, version: str, path: str, offset: int, max_bytes: int, timeout: float) -> bytes:
        self.requests += 1
        if self.stall:
            raise TimeoutError("no response")
        data = read_chunk(self.directory, self.manifest_, path, offset, max_bytes)
        if self.corrupt_at is not None and offset <= self.corrupt_at < offset + len(data):
            i = self.corrupt_at - offset
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        return data


def save_replay(directory: Path, version: str = "v0001", chunks: int = 4) -> tuple[Path, str]:
    actions = np.linspace(-0.1, 0.1, chunks * 10 * D, dtype=np.float32).reshape(chunks, 10, D)
    ReplayPolicy(actions, ("head", "wrist"), version).save(directory)
    (directory / "extra").mkdir()
    (directory / "extra" / "notes.json").write_text('{"nested": true}')  # LeRobot checkpoints nest folders
    return directory, checkpoint_sha256(directory)


def no_staging_left(root: Path) -> bool:
    staging = root / STAGING_DIR
    return not staging.exists() or not any(staging.iterdir())


def test_manifest_lists_every_file_with_size_and_sha256_and_roundtrips(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "v0001")
    manifest = build_manifest(folder, "v0001")
    assert manifest.checkpoint_sha256 == digest
    expected = {p.relative_to(folder).as_posix(): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                for p in folder.rglob("*") if p.is_file()}
    assert {e.path: (e.size, e.sha256) for e in manifest.files} == expected
    assert manifest.total_bytes == sum(size for size, _ in expected.values())
    assert CheckpointManifest.from_json(manifest.to_json()) == manifest
    # Stored next to the folder (no file of the checkpoint), reused while it describes the files.
    assert load_or_build_manifest(folder, "v0001") == manifest and manifest_path(folder).is_file()
    assert checkpoint_sha256(folder) == digest


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b"])
def test_manifest_paths_must_be_plain_relative_paths(path: str):
    with pytest.raises(TransferError, match="plain relative path"):
        safe_relative_path(path)


def test_ros_uri_names_server_and_version():
    uri = ros_checkpoint_uri("/world_model_node", "v0003")
    assert uri == "ros:///world_model_node/v0003"
    assert parse_ros_checkpoint_uri(uri) == ("/world_model_node", "v0003")
    assert parse_ros_checkpoint_uri("ros:///lab/trainer/v1") == ("/lab/trainer", "v1")
    for bad in ("ros:///v1", "ros://host/v1", "ros:///node/..", "ros:///node/.hidden", "file:///x/v1"):
        with pytest.raises(TransferError):
            parse_ros_checkpoint_uri(bad)


def test_receive_fetches_in_chunks_verifies_and_renames_into_place(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "trainer" / "v0001")
    source = FolderSource(folder, "v0001")
    root = tmp_path / "robot" / "checkpoints"
    progress: list[tuple[int, int]] = []
    received = receive_checkpoint(source, "v0001", digest, root, TransferConfig(chunk_bytes=512),
                                  on_progress=lambda done, total: progress.append((done, total)))
    assert received == root / received_folder_name("v0001", digest)
    assert checkpoint_sha256(received) == digest
    total = build_manifest(folder, "v0001").total_bytes
    assert source.requests >= total // 512 and progress[-1] == (total, total)
    assert no_staging_left(root)
    # Announced again (transient local after a restart): the verified folder is used, nothing fetched.
    requests = source.requests
    assert receive_checkpoint(source, "v0001", digest, root, TransferConfig()) == received
    assert source.requests == requests


def test_a_corrupted_chunk_is_refused_and_leaves_nothing_loadable(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "trainer" / "v0001")
    root = tmp_path / "robot"
    with pytest.raises(TransferError, match=r"sha256 mismatch of model.safetensors of v0001"):
        receive_checkpoint(FolderSource(folder, "v0001", corrupt_at=100), "v0001", digest, root, TransferConfig(chunk_bytes=256))
    assert no_staging_left(root) and not (root / received_folder_name("v0001", digest)).exists()


def test_an_announcement_the_manifest_does_not_match_is_refused_before_any_byte(tmp_path: Path):
    folder, _ = save_replay(tmp_path / "trainer" / "v0001")
    source = FolderSource(folder, "v0001")
    with pytest.raises(TransferError, match="sha256 mismatch: announced"):
        receive_checkpoint(source, "v0001", "0" * 64, tmp_path / "robot", TransferConfig())
    assert source.requests == 0
    with pytest.raises(TransferError, match="not a sha256"):
        receive_checkpoint(source, "v0001", "abc", tmp_path / "robot", TransferConfig())


def test_an_oversized_checkpoint_is_refused_naming_the_limit(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "trainer" / "v0001")
    source = FolderSource(folder, "v0001")
    with pytest.raises(TransferError, match=r"over checkpoint_transfer.max_bytes = 1000"):
        receive_checkpoint(source, "v0001", digest, tmp_path / "robot", TransferConfig(max_bytes=1000))
    assert source.requests == 0 and no_staging_left(tmp_path / "robot")


def test_timeouts_per_chunk_and_overall_give_clear_errors(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "trainer" / "v0001")
    stalled = FolderSource(folder, "v0001", stall=True)
    with pytest.raises(TransferError, match=r"chunk_timeout_s = 0.5 s \(3 attempts\)"):
        receive_checkpoint(stalled, "v0001", digest, tmp_path / "robot", TransferConfig(chunk_timeout_s=0.5, chunk_retries=2))
    assert stalled.requests == 3 and no_staging_left(tmp_path / "robot")

    now = [0.0]

    class SlowSource(FolderSource):
        def chunk(self, *args, **kwargs):
            now[0] += 4.0  # every request takes 4 s of the (fake) clock
            return super().chunk(*args, **kwargs)

    with pytest.raises(TransferError, match=r"longer than checkpoint_transfer.timeout_s = 10 s"):
        receive_checkpoint(SlowSource(folder, "v0001"), "v0001", digest, tmp_path / "robot",
                           TransferConfig(chunk_bytes=256, timeout_s=10.0), clock=lambda: now[0])
    assert no_staging_left(tmp_path / "robot")


def test_a_server_sending_more_than_asked_or_nothing_is_refused(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "trainer" / "v0001")

    class Greedy(FolderSource):
        def chunk(self, version, path, offset, max_bytes, timeout):
            return super().chunk(version, path, offset, max_bytes, timeout) + b"x"

    class Empty(FolderSource):
        def chunk(self, *args, **kwargs):
            return b""

    for source in (Greedy(folder, "v0001"), Empty(folder, "v0001")):
        with pytest.raises(TransferError, match="server sent"):
            receive_checkpoint(source, "v0001", digest, tmp_path / "robot", TransferConfig(chunk_bytes=256))
    assert no_staging_left(tmp_path / "robot")


def test_hidden_folders_under_a_trusted_root_are_never_loadable(tmp_path: Path):
    trusted = tmp_path / "trusted"
    for name in (f"{STAGING_DIR}/v1-0123", ".v0002.tmp", "v3"):
        (trusted / name).mkdir(parents=True)
    assert resolve_checkpoint_uri(str(trusted / "v3"), [trusted]) == (trusted / "v3").resolve()
    for name in (f"{STAGING_DIR}/v1-0123", ".v0002.tmp"):
        with pytest.raises(ValueError, match="hidden folder"):
            resolve_checkpoint_uri(str(trusted / name), [trusted])


def _observation() -> Observation:
    return Observation({v: np.zeros((8, 8, 3), np.uint8) for v in ("head", "wrist")}, np.zeros(D), "task")


def test_prepare_candidate_fetches_a_ros_version_into_the_receiving_root_then_validates(tmp_path: Path):
    folder, digest = save_replay(tmp_path / "trainer" / "v0002", "v0002")
    private, public = generate_key_pair(tmp_path / "keys")
    config = HotSwapConfig(trusted_checkpoint_roots=(str(tmp_path / "robot"),), trusted_checkpoint_keys=(str(public),))
    gate = SafetyGate(load_safety_config(REPO / "config" / "robots" / "so101.yaml"))
    servers: list[str] = []

    def source_for(server: str) -> FolderSource:
        servers.append(server)
        return FolderSource(folder, "v0002", key=load_private_key(private))

    candidate = prepare_candidate("v0002", "ros:///world_model_node/v0002", digest, config, TransferConfig(), source_for,
                                  lambda: [_observation()], gate)
    assert candidate.version == "v0002" and servers == ["/world_model_node"]
    assert (tmp_path / "robot" / received_folder_name("v0002", digest)).is_dir()
    with pytest.raises(TransferError, match="not a trusted checkpoint server"):
        prepare_candidate("v0002", "ros:///elsewhere/v0002", digest, config, TransferConfig(), source_for, list, gate)
    with pytest.raises(TransferError, match="names version 'v0002', the update 'v0009'"):
        prepare_candidate("v0009", "ros:///world_model_node/v0002", digest, config, TransferConfig(), source_for, list, gate)
    with pytest.raises(ValueError, match="no recent observation"):
        prepare_candidate("v0002", "ros:///world_model_node/v0002", digest, config, TransferConfig(), source_for, list, gate)


def test_receiving_root_must_lie_under_a_trusted_root(tmp_path: Path):
    with pytest.raises(ValueError, match="received_checkpoint_root"):
        HotSwapConfig(trusted_checkpoint_roots=(str(tmp_path / "a"),), received_checkpoint_root=str(tmp_path / "b"))
    assert HotSwapConfig(trusted_checkpoint_roots=(str(tmp_path / "a"),)).receive_root == tmp_path / "a"


def test_policy_slot_keeps_the_running_policy_until_the_boundary():
    slot = PolicySlot()
    old, new = object(), object()
    assert slot.install(old, "v1", "loaded at start")["state"] == "active"
    assert slot.offer(new, "v2")["state"] == "pending"
    assert slot.swap_at_boundary(episode_running=True) is None and slot.policy is old
    status = slot.swap_at_boundary(episode_running=False)
    assert status["state"] == "active" and status["running"] == "v2" and slot.policy is new and "was 'v1'" in status["reason"]
    rejected = slot.reject("v3", "sha256 mismatch")
    assert (rejected["accepted"], rejected["running"]) == (False, "v2") and slot.policy is new


def test_recent_items_wait_is_woken_by_adds_and_by_close():
    recent: RecentItems[int] = RecentItems(3)
    got: list[list[int]] = []
    waiter = threading.Thread(target=lambda: got.append(recent.wait_for(2, timeout=30.0)))
    waiter.start()
    recent.add(1)
    recent.add(2)
    waiter.join(timeout=10.0)
    assert got == [[1, 2]] and recent.latest() == 2
    for i in range(3, 6):
        recent.add(i)
    assert recent.wait_for(3, timeout=0.0) == [3, 4, 5]
    waiter = threading.Thread(target=lambda: got.append(recent.wait_for(10, timeout=30.0)))
    waiter.start()
    recent.close()
    waiter.join(timeout=10.0)
    assert got[-1] == [3, 4, 5]
