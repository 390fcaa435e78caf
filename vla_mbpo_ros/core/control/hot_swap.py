"""Hot-swap of a new policy version: where a checkpoint may come from, and whether it may run.

``load_candidate`` accepts only checkpoints under the executor's trusted roots (symlinks and ``..``
resolved first, never through a hidden folder such as a transfer's staging area) whose manifest is
signed by a trusted key (core.policy.signing: a node's name proves nothing) and whose sha256 is the
announced and the signed one; ``validate_candidate`` runs a loaded candidate on recent real observations
through the gate's chunk check before it may touch the arm. ``prepare_candidate`` is the whole
path of one PolicyUpdate: a ``ros://`` version is first fetched into the executor's own root
(core.policy.transfer), a ``file://`` one is read in place (same machine). ``PolicySlot`` holds the
running policy and a validated candidate until the episode boundary, and words the status reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.policy.signing import SignatureError, TrustedKeys
from vla_mbpo_ros.core.policy.transfer import (
    CheckpointManifest,
    ChunkSource,
    TransferConfig,
    TransferError,
    is_ros_uri,
    manifest_path,
    parse_ros_checkpoint_uri,
    receive_checkpoint,
)


@dataclass
class HotSwapConfig:
    """Where a new version may come from and how it is checked (policy executor parameters)."""

    trusted_checkpoint_roots: tuple[str, ...] = ("outputs/checkpoints",)  # file:// uris must lie under one
    # ros:///<server>/<version> uris must name one of these nodes; their versions are fetched into
    # received_checkpoint_root ("" = the first trusted root), which must lie under a trusted root.
    trusted_checkpoint_servers: tuple[str, ...] = ("/world_model_node",)
    received_checkpoint_root: str = ""
    # Public keys (one-line "ed25519 <base64>" or a file holding one) whose signed manifests are accepted;
    # read at every update, so a key created after the executor started counts. None: every update is refused.
    trusted_checkpoint_keys: tuple[str, ...] = ("",)  # "" entries are ignored (a typed ROS list default)
    validation_observations: int = 3  # recent real observations a candidate is run on
    validation_wait_s: float = 10.0  # ... waiting at most this long for them
    validation_limit_margin: float = 0.1  # a candidate may aim this far past a position limit (rad; clamped)

    def __post_init__(self) -> None:
        self.trusted_checkpoint_roots = tuple(self.trusted_checkpoint_roots)
        self.trusted_checkpoint_keys = tuple(k for k in self.trusted_checkpoint_keys if k)
        self.trusted_checkpoint_servers = tuple("/" + s.strip("/") for s in self.trusted_checkpoint_servers)
        if self.validation_observations < 1:
            raise ValueError(f"validation_observations: expected >= 1, got {self.validation_observations}")
        if not self.validation_limit_margin >= 0.0:
            raise ValueError(f"validation_limit_margin: expected >= 0 rad, got {self.validation_limit_margin}")
        if self.received_checkpoint_root or self.trusted_checkpoint_roots:
            root = Path(self.receive_root).resolve()
            if not any(root.is_relative_to(Path(r).resolve()) for r in self.trusted_checkpoint_roots):
                raise ValueError(f"received_checkpoint_root: {root} is not under a trusted checkpoint root")

    @property
    def receive_root(self) -> Path:
        return Path(self.received_checkpoint_root or self.trusted_checkpoint_roots[0])


def resolve_checkpoint_uri(uri: str, trusted_roots: Sequence[str | Path]) -> Path:
    """The checkpoint directory of ``uri`` (absolute path or file:// URI) if it lies under one of the
    trusted roots after resolving symlinks and ``..``; ValueError saying why otherwise."""
    if not uri:
        raise ValueError("empty checkpoint uri")
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"uri {uri!r}: file URIs on other hosts are not supported")
        path_text = unquote(parsed.path)
    elif parsed.scheme == "":
        path_text = uri
    else:
        raise ValueError(f"uri {uri!r}: scheme {parsed.scheme!r} is not supported (absolute path or file://)")
    path = Path(path_text)
    if not path.is_absolute():
        raise ValueError(f"uri {uri!r}: checkpoint path must be absolute")
    resolved = path.resolve()
    roots = [Path(r).resolve() for r in trusted_roots if str(r)]
    under = [root for root in roots if resolved == root or resolved.is_relative_to(root)]
    if not under:
        raise ValueError(f"uri {uri!r} is not under a trusted checkpoint root {[str(r) for r in roots]}")
    if any(part.startswith(".") for part in resolved.relative_to(under[0]).parts):
        # Staging folders of transfers (and of publishing) are hidden: never loadable, even when complete.
        raise ValueError(f"uri {uri!r} passes through a hidden folder under the trusted root")
    if not resolved.is_dir():
        raise ValueError(f"checkpoint directory {resolved} does not exist")
    return resolved


def load_candidate(version: str, uri: str, sha256: str, trusted_roots: Sequence[str | Path], keys: TrustedKeys) -> Any:
    """The policy at ``uri`` once it is under a trusted root, its manifest (next to the folder) is
    signed by a trusted key for this version, and its digest is the announced and the signed one;
    ValueError saying why not (a corrupt checkpoint is a rejection, whatever its parser raises)."""
    from vla_mbpo_ros.core.policy.base import load_policy
    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256

    directory = resolve_checkpoint_uri(uri, trusted_roots)
    signed = manifest_path(directory)
    try:
        manifest = CheckpointManifest.from_json(signed.read_text())
    except FileNotFoundError:
        raise SignatureError(f"no signed manifest {signed.name} next to {directory}: only signed checkpoints are accepted") from None
    except OSError as err:
        raise ValueError(f"cannot read {signed}: {err}") from err
    keys.verify(manifest)
    if manifest.version != version:
        raise SignatureError(f"the signed manifest is for version {manifest.version!r}, the update announces {version!r}")
    try:
        digest = checkpoint_sha256(directory)
    except OSError as err:
        raise ValueError(f"cannot hash checkpoint {directory}: {err}") from err
    if digest != sha256.strip().lower():
        raise ValueError(f"sha256 mismatch: announced {sha256 or '(empty)'}, checkpoint has {digest}")
    if digest != manifest.checkpoint_sha256:
        raise SignatureError(f"sha256 mismatch: the signed manifest has {manifest.checkpoint_sha256}, checkpoint has {digest}")
    try:
        return load_policy(directory)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"load failed: {type(err).__name__}: {err}") from err


def validate_candidate(
    policy: Any, observations: Sequence[Any], gate: SafetyGate, limit_margin: float = 0.0
) -> list[str]:
    """Problems of a candidate policy on recent real observations (empty list: acceptable).

    Runs ``predict_chunk`` on each observation and checks every chunk with ``gate.check_chunk``
    (shape, NaN/inf, position limits widened by ``limit_margin``). An exception from the policy is
    a problem, not a crash.
    """
    if not observations:
        return ["no recent observation to validate the candidate on"]
    d = gate.config.limits.dim
    if getattr(policy, "action_dim", d) != d:
        return [f"policy action_dim {policy.action_dim} != {d} arm joints"]
    problems: list[str] = []
    for i, obs in enumerate(observations):
        try:
            chunk = np.asarray(policy.predict_chunk(obs), dtype=np.float64)
        except Exception as err:  # noqa: BLE001 - any failure of the candidate rejects it
            problems.append(f"observation {i}: predict_chunk raised {type(err).__name__}: {err}")
            continue
        if chunk.ndim == 2 and chunk.shape[0] != policy.chunk_size:
            problems.append(f"observation {i}: chunk has {chunk.shape[0]} steps, policy declares {policy.chunk_size}")
        problems += [f"observation {i}: {p}" for p in gate.check_chunk(chunk, limit_margin)]
    return problems


def prepare_candidate(
    version: str,
    uri: str,
    sha256: str,
    config: HotSwapConfig,
    transfer: TransferConfig,
    source_for: Callable[[str], ChunkSource],
    recent_observations: Callable[[], Sequence[Any]],
    gate: SafetyGate,
) -> Any:
    """The validated candidate of one PolicyUpdate, or ValueError saying why not (the running policy
    is untouched either way). ``source_for(server)`` gives the transport of a ``ros://`` server;
    ``recent_observations()`` the real observations to validate on (it may wait for them)."""
    keys = TrustedKeys.load(config.trusted_checkpoint_keys)
    if is_ros_uri(uri):
        server, served_version = parse_ros_checkpoint_uri(uri)
        if served_version != version:
            raise TransferError(f"uri {uri!r} names version {served_version!r}, the update {version!r}")
        if server not in config.trusted_checkpoint_servers:
            raise TransferError(f"server {server} is not a trusted checkpoint server {list(config.trusted_checkpoint_servers)}")
        try:
            received = receive_checkpoint(source_for(server), version, sha256, config.receive_root, transfer,
                                          check_manifest=keys.verify)
            uri = str(received.resolve())  # the root may be relative to the working directory
        except OSError as err:  # disk full, permissions: a refused transfer like any other
            raise TransferError(f"transfer of {version} failed: {type(err).__name__}: {err}") from err
    candidate = load_candidate(version, uri, sha256, config.trusted_checkpoint_roots, keys)
    observations = list(recent_observations())
    problems = validate_candidate(candidate, observations, gate, config.validation_limit_margin)
    candidate.reset()
    if problems:
        shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        raise ValueError(f"validation failed on {len(observations)} recent observations: {shown}")
    return candidate


class PolicySlot:
    """The running policy and version, a validated candidate waiting for the episode boundary, and the
    policy status reports (dicts published as JSON on /vla_mbpo/policy_status). Not thread-safe: the
    executor calls it under its lock."""

    def __init__(self) -> None:
        self.policy: Any = None
        self.version = ""
        self.note = ""  # the last event, for diagnostics
        self._pending: tuple[Any, str] | None = None

    def install(self, policy: Any, version: str, reason: str) -> dict[str, Any]:
        self.policy, self.version, self.note = policy, version, reason
        return self.report(version, "active", reason, accepted=True)

    def offer(self, candidate: Any, version: str) -> dict[str, Any]:
        self._pending = (candidate, version)
        return self.report(version, "pending", "validated; swaps in at the next episode boundary", accepted=True)

    def swap_at_boundary(self, episode_running: bool) -> dict[str, Any] | None:
        """Install the pending candidate when no episode runs; its status report, or None."""
        if self._pending is None or episode_running:
            return None
        (candidate, version), self._pending = self._pending, None
        return self.install(candidate, version, f"swapped in at the episode boundary (was {self.version!r})")

    def reject(self, version: str, reason: str, **extra: Any) -> dict[str, Any]:
        self.note = f"rejected {version!r}: {reason}"
        return self.report(version, "rejected", reason, accepted=False, **extra)

    def report(self, version: str, state: str, reason: str, accepted: bool | None, **extra: Any) -> dict[str, Any]:
        """accepted: True/False is the verdict; None while there is none yet (state "fetching")."""
        return {"version": version, "accepted": accepted, "state": state, "reason": reason, "running": self.version, **extra}
