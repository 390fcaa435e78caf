"""Checkpoint hand-off between machines that share no filesystem: manifest, chunked fetch, verification.

The trainer (world-model node) serves each published version's files; the robot (policy executor)
fetches the announced version chunk by chunk into a hidden staging folder inside its own trusted
root, checks every file's size and sha256 against the manifest and the whole checkpoint's digest
against the one announced in PolicyUpdate, and only then renames the folder into place. A failed,
partial or corrupted transfer removes its staging folder and raises ``TransferError``: nothing
half-written can ever be loaded (the executor also refuses any path through a hidden folder).

The transport is a ``ChunkSource`` (the ROS service client lives in nodes/); this module never
imports rclpy. Announced URIs of fetched versions are ``ros:///<server node>/<version>``, e.g.
``ros:///world_model_node/v0003``: the server's services are ``<server>/checkpoint_manifest`` and
``<server>/checkpoint_chunk``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

from vla_mbpo_ros.core.policy.checkpoint import checkpoint_digests, checkpoint_sha256
from vla_mbpo_ros.core.util.durable import fsync_path

ROS_SCHEME = "ros"
STAGING_DIR = ".incoming"  # inside the receiving root; hidden, so never a loadable checkpoint path
MANIFEST_SUFFIX = ".manifest.json"  # next to a published checkpoint folder: <version>.manifest.json
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # one path component, not hidden


class TransferError(ValueError):
    """A transfer that did not produce a verified checkpoint; the message says why (a rejection)."""


@dataclass
class TransferConfig:
    """Limits of one fetch (executor parameters ``checkpoint_transfer.<field>``)."""

    max_bytes: int = 20 * 2**30  # a whole checkpoint larger than this is refused (pi0.5: ~8.7 GiB)
    chunk_bytes: int = 1 << 20  # bytes asked for per request
    chunk_timeout_s: float = 10.0  # one request (and reaching the server) may take this long ...
    chunk_retries: int = 2  # ... and is asked again this many times after a timeout
    timeout_s: float = 1800.0  # the whole transfer (pi0.5 over 1 GbE: ~1.5 min)

    def __post_init__(self) -> None:
        for name in ("max_bytes", "chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("chunk_timeout_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")
        if self.chunk_retries < 0:
            raise ValueError(f"chunk_retries must be >= 0, got {self.chunk_retries}")


# ------------------------------------------------------------------------------------------ names
def check_version_name(version: str) -> str:
    """``version`` if it can name a folder (one non-hidden path component); TransferError otherwise."""
    if not _VERSION.match(version or ""):
        raise TransferError(f"version {version!r} cannot name a checkpoint folder (letters, digits, _ . -)")
    return version


def safe_relative_path(text: str) -> PurePosixPath:
    """A manifest's file path: relative, no ``..``, ``.`` or empty parts, no backslashes."""
    path = PurePosixPath(text)
    if not text or "\\" in text or path.is_absolute() or any(part in ("", ".", "..") for part in text.split("/")):
        raise TransferError(f"manifest path {text!r} is not a plain relative path")
    return path


def ros_checkpoint_uri(server: str, version: str) -> str:
    """The PolicyUpdate URI of ``version`` served by the node ``server`` (its fully qualified name)."""
    return f"{ROS_SCHEME}://{'/' + server.strip('/')}/{check_version_name(version)}"


def is_ros_uri(uri: str) -> bool:
    return urlparse(uri).scheme == ROS_SCHEME


def parse_ros_checkpoint_uri(uri: str) -> tuple[str, str]:
    """(server node, version) of ``ros:///<server>/<version>``; TransferError when malformed."""
    parsed = urlparse(uri)
    if parsed.scheme != ROS_SCHEME or parsed.netloc or parsed.query or parsed.fragment:
        raise TransferError(f"uri {uri!r}: expected ros:///<server node>/<version>")
    server, _, version = parsed.path.rpartition("/")
    if not server.strip("/"):
        raise TransferError(f"uri {uri!r}: no server node before the version")
    return "/" + server.strip("/"), check_version_name(version)


# ------------------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative POSIX path inside the checkpoint folder
    size: int
    sha256: str


@dataclass(frozen=True)
class CheckpointManifest:
    """What a version consists of: its files with sizes and digests, and the checkpoint's own digest
    (``checkpoint_sha256``, the one PolicyUpdate announces)."""

    version: str
    checkpoint_sha256: str
    files: tuple[ManifestEntry, ...]
    key_id: str = ""  # the trainer's ed25519 signature over the rest (core.policy.signing); "" = unsigned
    signature: str = ""

    def __post_init__(self) -> None:
        check_version_name(self.version)
        if not _SHA256.match(self.checkpoint_sha256):
            raise TransferError(f"manifest of {self.version}: checkpoint_sha256 is not a sha256 hex digest")
        seen = set()
        for entry in self.files:
            safe_relative_path(entry.path)
            if entry.path in seen:
                raise TransferError(f"manifest of {self.version}: {entry.path} listed twice")
            seen.add(entry.path)
            if entry.size < 0 or not _SHA256.match(entry.sha256):
                raise TransferError(f"manifest of {self.version}: bad size or sha256 for {entry.path}")
        if not self.files:
            raise TransferError(f"manifest of {self.version} lists no files")

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def entry(self, path: str) -> ManifestEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise TransferError(f"{path!r} is not a file of {self.version}")

    def to_json(self) -> str:
        files = [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in self.files]
        data = {"version": self.version, "checkpoint_sha256": self.checkpoint_sha256, "files": files}
        if self.signature:
            data["signature"] = {"key_id": self.key_id, "ed25519": self.signature}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "CheckpointManifest":
        try:
            data = json.loads(text)
            files = tuple(ManifestEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"])
            signature = data.get("signature") or {}
            return cls(str(data["version"]), str(data["checkpoint_sha256"]), files,
                       str(signature.get("key_id", "")), str(signature.get("ed25519", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            if isinstance(err, TransferError):
                raise
            raise TransferError(f"malformed manifest: {type(err).__name__}: {err}") from err


def build_manifest(directory: Path, version: str) -> CheckpointManifest:
    """The manifest of a checkpoint folder (one read of every file)."""
    overall, files = checkpoint_digests(directory)
    return CheckpointManifest(version, overall, tuple(ManifestEntry(p, size, sha) for p, size, sha in files))


def manifest_path(checkpoint_dir: Path) -> Path:
    """Where the manifest of a published folder is kept: next to it, so it is no file of the checkpoint."""
    checkpoint_dir = Path(checkpoint_dir)
    return checkpoint_dir.with_name(checkpoint_dir.name + MANIFEST_SUFFIX)


def write_manifest(checkpoint_dir: Path, manifest: CheckpointManifest) -> Path:
    path = manifest_path(checkpoint_dir)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, path)
    return path


def load_or_build_manifest(checkpoint_dir: Path, version: str) -> CheckpointManifest:
    """The stored manifest when it still describes the folder's files (names and sizes: a published
    folder never changes; the receiver checks every byte anyway), else a new one, stored."""
    path = manifest_path(checkpoint_dir)
    if path.is_file():
        try:
            manifest = CheckpointManifest.from_json(path.read_text())
            on_disk = {p.relative_to(checkpoint_dir).as_posix(): p.stat().st_size
                       for p in Path(checkpoint_dir).rglob("*") if p.is_file()}
            if manifest.version == version and on_disk == {e.path: e.size for e in manifest.files}:
                return manifest
        except (OSError, TransferError):
            pass
    manifest = build_manifest(checkpoint_dir, version)
    write_manifest(checkpoint_dir, manifest)
    return manifest


def read_chunk(checkpoint_dir: Path, manifest: CheckpointManifest, path: str, offset: int, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` of a manifest file from ``offset`` (the server side; only listed files)."""
    entry = manifest.entry(path)
    if offset < 0 or offset > entry.size:
        raise TransferError(f"offset {offset} outside {path} ({entry.size} bytes)")
    with (Path(checkpoint_dir) / safe_relative_path(entry.path)).open("rb") as handle:
        handle.seek(offset)
        return handle.read(max(0, min(max_bytes, entry.size - offset)))


# ------------------------------------------------------------------------------------------ receiving
class ChunkSource(Protocol):
    """The transport of one server: raises TimeoutError when an answer does not come in ``timeout`` s,
    TransferError when the server refuses."""

    def manifest(self, version: str, timeout: float) -> CheckpointManifest: ...

    def chunk(self, version: str, path: str, offset: int, max_bytes: int, timeout: float) -> bytes: ...


def received_folder_name(version: str, sha256: str) -> str:
    """Version and digest: a retrained run that reuses a version name never collides with an old folder."""
    return f"{check_version_name(version)}-{sha256[:16]}"


def clear_staging(root: Path) -> None:
    """Remove what interrupted transfers left (at executor start; nothing in it was ever loadable)."""
    shutil.rmtree(Path(root) / STAGING_DIR, ignore_errors=True)


class _Deadline:
    def __init__(self, config: TransferConfig, clock: Callable[[], float]) -> None:
        self.config, self.clock = config, clock
        self.end = clock() + config.timeout_s

    def request_timeout(self, what: str) -> float:
        left = self.end - self.clock()
        if left <= 0:
            raise TransferError(f"transfer took longer than checkpoint_transfer.timeout_s = {self.config.timeout_s:g} s "
                                f"(at {what})")
        return min(self.config.chunk_timeout_s, left)


def _with_retries(deadline: _Deadline, what: str, call: Callable[[float], bytes | CheckpointManifest]):
    attempts = deadline.config.chunk_retries + 1
    for attempt in range(attempts):
        timeout = deadline.request_timeout(what)
        try:
            return call(timeout)
        except TimeoutError as err:
            if attempt + 1 == attempts:
                raise TransferError(f"no answer for {what} within checkpoint_transfer.chunk_timeout_s = "
                                    f"{deadline.config.chunk_timeout_s:g} s ({attempts} attempts): {err}") from err


def receive_checkpoint(
    source: ChunkSource,
    version: str,
    announced_sha256: str,
    root: Path,
    config: TransferConfig,
    clock: Callable[[], float] = time.monotonic,
    on_progress: Callable[[int, int], None] | None = None,
    check_manifest: Callable[[CheckpointManifest], object] | None = None,
) -> Path:
    """Fetch ``version`` into ``root`` and return its verified folder ``root/<version>-<sha>``.

    Order: manifest (its digest must be the announced one), size limit and free disk before any byte
    is written, every file into ``root/.incoming/`` with size and sha256 checked, the folder's digest
    checked, then one rename. ``check_manifest`` (the signature check) runs on the manifest before any
    byte is fetched, and the manifest is kept next to the received folder (``manifest_path``). A folder
    already received with this digest is returned without a fetch. TransferError says why anything
    failed; the staging folder is removed then.
    """
    sha = announced_sha256.strip().lower()
    if not _SHA256.match(sha):
        raise TransferError(f"announced sha256 {announced_sha256!r} is not a sha256 hex digest")
    root = Path(root)
    final = root / received_folder_name(version, sha)
    if final.is_dir() and checkpoint_sha256(final) == sha:
        return final
    deadline = _Deadline(config, clock)
    manifest = _with_retries(deadline, f"the manifest of {version}", lambda t: source.manifest(version, t))
    if manifest.version != version:
        raise TransferError(f"server sent the manifest of {manifest.version!r}, asked for {version!r}")
    if manifest.checkpoint_sha256 != sha:
        raise TransferError(f"sha256 mismatch: announced {sha}, the server's manifest of {version} has "
                            f"{manifest.checkpoint_sha256}")
    if check_manifest is not None:
        check_manifest(manifest)
    total = manifest.total_bytes
    if total > config.max_bytes:
        raise TransferError(f"checkpoint {version} is {total} bytes, over checkpoint_transfer.max_bytes = "
                            f"{config.max_bytes}")
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if total > free:
        raise TransferError(f"checkpoint {version} is {total} bytes, only {free} bytes free in {root}")
    staging = root / STAGING_DIR / final.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        done = 0
        for entry in manifest.files:
            done = _receive_file(source, manifest, entry, staging, deadline, done, total, on_progress)
        received = checkpoint_sha256(staging)
        if received != sha:
            raise TransferError(f"sha256 mismatch: announced {sha}, received folder has {received}")
        if final.exists():  # a folder of that name with other content: never overwrite what may be running
            raise TransferError(f"{final} exists with other content; not replaced")
        write_manifest(final, manifest)  # before the folder appears: whoever loads it can check the signature
        os.rename(staging, final)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _receive_file(source: ChunkSource, manifest: CheckpointManifest, entry: ManifestEntry, staging: Path,
                  deadline: _Deadline, done: int, total: int, on_progress: Callable[[int, int], None] | None) -> int:
    target = staging / safe_relative_path(entry.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    offset = 0
    with target.open("wb") as handle:
        while offset < entry.size:
            want = min(deadline.config.chunk_bytes, entry.size - offset)
            what = f"{entry.path} of {manifest.version} at byte {offset}"
            data = _with_retries(deadline, what, lambda t: source.chunk(manifest.version, entry.path, offset, want, t))
            if not data or len(data) > want:
                raise TransferError(f"{what}: server sent {len(data)} bytes, expected 1..{want} "
                                    f"({entry.path} is {entry.size} bytes in the manifest)")
            handle.write(data)
            digest.update(data)
            offset += len(data)
            done += len(data)
            if on_progress is not None:
                on_progress(done, total)
        handle.flush()
        os.fsync(handle.fileno())
    if digest.hexdigest() != entry.sha256:
        raise TransferError(f"sha256 mismatch of {entry.path} of {manifest.version}: manifest {entry.sha256}, "
                            f"received {digest.hexdigest()}")
    return done

