"""Hot-swap of a new policy version: where a checkpoint may come from, and whether it may run.

``load_candidate`` accepts only checkpoints under the executor's trusted roots (symlinks and ``..``
resolved first) whose sha256 is the announced one; ``validate_candidate`` runs a loaded candidate
on recent real observations through the gate's chunk check before it may touch the arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from vla_mbpo_ros.core.control.gate import SafetyGate


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
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ValueError(f"uri {uri!r} is not under a trusted checkpoint root {[str(r) for r in roots]}")
    if not resolved.is_dir():
        raise ValueError(f"checkpoint directory {resolved} does not exist")
    return resolved


def load_candidate(uri: str, sha256: str, trusted_roots: Sequence[str | Path]) -> Any:
    """The policy at ``uri`` once it is under a trusted root and its digest is the announced one;
    ValueError saying why not (a corrupt checkpoint is a rejection, whatever its parser raises)."""
    from vla_mbpo_ros.core.policy.base import load_policy
    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256

    directory = resolve_checkpoint_uri(uri, trusted_roots)
    try:
        digest = checkpoint_sha256(directory)
    except OSError as err:
        raise ValueError(f"cannot hash checkpoint {directory}: {err}") from err
    if digest != sha256.strip().lower():
        raise ValueError(f"sha256 mismatch: announced {sha256 or '(empty)'}, checkpoint has {digest}")
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
