"""Policy checkpoints: ``model.safetensors`` + ``config.json``, nothing executable.

Loading a checkpoint must never be able to run code, so tensors go through safetensors and
everything else through JSON. ``checkpoint_sha256`` gives the digest the policy node compares
with the one announced in a PolicyUpdate message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_HASH_BLOCK = 1 << 20


def save_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``tensors`` (safetensors) and ``config`` (JSON, must contain "type") into ``directory``."""
    if "type" not in config:
        raise ValueError("checkpoint config must contain a 'type' field")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; clone makes every tensor standalone.
    flat = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    save_file(flat, str(directory / WEIGHTS_NAME))
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    config = json.loads(path.read_text())
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"{path} has no 'type' field")
    return config


def load_tensors(directory: Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    return load_file(str(path), device="cpu")


def checkpoint_sha256(directory: Path) -> str:
    """Stable sha256 over every regular file of a checkpoint directory (recursive, sorted by relative path).

    Each file contributes its relative POSIX path and its length before its bytes, so renaming or moving
    bytes between files changes the digest.
    """
    return checkpoint_digests(directory)[0]


def checkpoint_digests(directory: Path) -> tuple[str, list[tuple[str, int, str]]]:
    """``checkpoint_sha256`` and, from the same single read, each file's (relative path, size, sha256):
    what a transfer manifest lists (core.policy.transfer)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    digest = hashlib.sha256()
    files = sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.relative_to(directory).as_posix())
    per_file = []
    for path in files:
        rel = path.relative_to(directory).as_posix()
        size = path.stat().st_size
        digest.update(len(rel.encode()).to_bytes(8, "little") + rel.encode())
        digest.update(size.to_bytes(8, "little"))
        file_digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
                file_digest.update(block)
        per_file.append((rel, size, file_digest.hexdigest()))
    return digest.hexdigest(), per_file
