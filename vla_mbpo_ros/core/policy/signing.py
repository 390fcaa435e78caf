"""Signed checkpoint manifests: only a trainer holding a trusted private key can put a policy on the arm.

A ROS 2 node name is not authenticated: any process on the robot's domain can call itself
``world_model_node``, announce a version and serve well-formed files. So the executor trusts no
*source*, only *signatures*: the trainer signs each version's manifest (its name, the checkpoint's
digest and every file's size and sha256) with an ed25519 private key that never leaves the training
server, and the executor accepts a version only when that signature verifies against one of the public
keys it was configured with (``trusted_checkpoint_keys``), for ``file://`` and ``ros://`` alike.

Key files: the private key is PKCS#8 PEM (mode 0600); the public key is one line,
``ed25519 <base64 of the 32 raw bytes> [comment]``. ``python -m vla_mbpo_ros.keys generate --out DIR``
creates a pair. The key id (16 hex digits of the public key's sha256) names a key in messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vla_mbpo_ros.core.policy.transfer import CheckpointManifest, TransferError, load_or_build_manifest, write_manifest

PRIVATE_KEY_NAME = "checkpoint_signing.key"
PUBLIC_KEY_NAME = "checkpoint_signing.pub"
_KEY_TYPE = "ed25519"
# Domain separation: a signature over a manifest can never be replayed as a signature over anything else.
_CONTEXT = b"vla_mbpo_ros checkpoint manifest v1\n"


class SignatureError(TransferError):
    """A manifest that is unsigned, signed by an untrusted key, or whose signature does not verify."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_line(public_key: Ed25519PublicKey, comment: str = "") -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{_KEY_TYPE} {base64.b64encode(raw).decode()}" + (f" {comment}" if comment else "")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its one-line form; ValueError saying what is wrong."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != _KEY_TYPE:
        raise ValueError(f"expected '{_KEY_TYPE} <base64 key> [comment]', got {text.strip()[:40]!r}")
    try:
        raw = base64.b64decode(parts[1], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"not an ed25519 public key ({err})") from err


def generate_key_pair(directory: Path, comment: str = "") -> tuple[Path, Path]:
    """Write a new pair into ``directory`` (private 0600, never overwritten); returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if private_path.exists() or public_path.exists():
        raise FileExistsError(f"a signing key already exists in {directory}; remove it first to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_text(public_key_line(key.public_key(), comment) + "\n")
    return private_path, public_path


def ensure_key_pair(directory: Path, comment: str = "") -> tuple[Path, Path]:
    """The pair in ``directory``, created when there is none (the single-machine sim setup)."""
    private_path, public_path = Path(directory) / PRIVATE_KEY_NAME, Path(directory) / PUBLIC_KEY_NAME
    if private_path.is_file() and public_path.is_file():
        return private_path, public_path
    return generate_key_pair(directory, comment)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at ``path``; ValueError naming the file when it is missing or not ed25519."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot read the signing key {path}: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an ed25519 private key")
    return key


def _payload(manifest: CheckpointManifest) -> bytes:
    return _CONTEXT + replace(manifest, key_id="", signature="").to_json().encode()


def sign_manifest(manifest: CheckpointManifest, key: Ed25519PrivateKey) -> CheckpointManifest:
    signature = base64.b64encode(key.sign(_payload(manifest))).decode()
    return replace(manifest, key_id=key_id(key.public_key()), signature=signature)


def sign_checkpoint(directory: Path, version: str, key: Ed25519PrivateKey) -> CheckpointManifest:
    """Sign the manifest of a published checkpoint folder and store it next to the folder (the trainer)."""
    manifest = sign_manifest(load_or_build_manifest(Path(directory), version), key)
    write_manifest(Path(directory), manifest)
    return manifest


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys an executor accepts checkpoints from, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def load(cls, entries: Iterable[str], field: str = "trusted_checkpoint_keys") -> "TrustedKeys":
        """Each entry is a public key line or the path of a file holding one; ValueError naming ``field``."""
        keys: dict[str, Ed25519PublicKey] = {}
        for entry in entries:
            text = entry
            if not entry.strip().startswith(_KEY_TYPE + " "):
                try:
                    text = Path(entry).expanduser().read_text()
                except OSError as err:
                    raise ValueError(f"{field}: cannot read public key file {entry!r}: {err.strerror or err}") from err
            try:
                key = parse_public_key(text)
            except ValueError as err:
                raise ValueError(f"{field}: {entry!r}: {err}") from err
            keys[key_id(key)] = key
        return cls(keys)

    def verify(self, manifest: CheckpointManifest) -> str:
        """The id of the trusted key that signed ``manifest``; SignatureError saying why not."""
        if not manifest.signature:
            raise SignatureError(f"manifest of {manifest.version} is not signed: only signed checkpoints are accepted")
        if not self.keys:
            raise SignatureError("no trusted_checkpoint_keys are configured: every checkpoint is refused")
        key = self.keys.get(manifest.key_id)
        if key is None:
            raise SignatureError(f"manifest of {manifest.version} is signed by key {manifest.key_id or '(none)'}, which is "
                                 f"not a trusted key {sorted(self.keys)}")
        try:
            key.verify(base64.b64decode(manifest.signature, validate=True), _payload(manifest))
        except (InvalidSignature, binascii.Error, ValueError) as err:
            raise SignatureError(f"bad signature on the manifest of {manifest.version} (key {manifest.key_id})") from err
        return manifest.key_id
