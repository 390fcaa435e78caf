"""Signed policy updates (core.policy.signing): only a version signed by a trusted key is loaded,
whether it is read in place (file://) or fetched from a trainer (ros://)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.control.hot_swap import HotSwapConfig, prepare_candidate
from vla_mbpo_ros.core.control.limits import load_safety_config
from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.replay import ReplayPolicy
from vla_mbpo_ros.core.policy.signing import (
    SignatureError,
    TrustedKeys,
    ensure_key_pair,
    generate_key_pair,
    load_private_key,
    sign_checkpoint,
    sign_manifest,
)
from vla_mbpo_ros.core.policy.transfer import TransferConfig, build_manifest, manifest_path, write_manifest
from vla_mbpo_ros.keys import main as keys_main

REPO = Path(__file__).resolve().parents[2]
D = 6


def publish(root: Path, version: str, key=None) -> tuple[Path, str]:
    """A replay checkpoint as the trainer publishes it: folder + (signed) manifest next to it."""
    folder = root / version
    actions = np.linspace(-0.1, 0.1, 4 * 10 * D, dtype=np.float32).reshape(4, 10, D)
    ReplayPolicy(actions, ("head", "wrist"), version).save(folder)
    manifest = build_manifest(folder, version)
    write_manifest(folder, manifest if key is None else sign_manifest(manifest, key))
    return folder, manifest.checkpoint_sha256


def observations() -> list[Observation]:
    return [Observation({v: np.zeros((8, 8, 3), np.uint8) for v in ("head", "wrist")}, np.zeros(D), "task")]


@pytest.fixture()
def gate() -> SafetyGate:
    return SafetyGate(load_safety_config(REPO / "config" / "robots" / "so101.yaml"))


def prepare(version: str, uri: str, sha: str, config: HotSwapConfig, gate: SafetyGate, source_for=None):
    return prepare_candidate(version, uri, sha, config, TransferConfig(), source_for, observations, gate)


def test_a_key_pair_signs_and_verifies_and_the_private_key_is_private(tmp_path: Path):
    private, public = generate_key_pair(tmp_path / "keys", "trainer@test")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert public.read_text().startswith("ed25519 ") and public.read_text().strip().endswith("trainer@test")
    with pytest.raises(FileExistsError):
        generate_key_pair(tmp_path / "keys")  # never overwrites a key
    assert ensure_key_pair(tmp_path / "keys") == (private, public)
    folder, _ = publish(tmp_path, "v0001")
    manifest = sign_checkpoint(folder, "v0001", load_private_key(private))
    keys = TrustedKeys.load([str(public)])
    assert keys.verify(manifest) == manifest.key_id and len(manifest.key_id) == 16
    # The inline form of the same key is the same trust.
    assert TrustedKeys.load([public.read_text()]).verify(manifest) == manifest.key_id


def test_unsigned_unknown_key_bad_signature_and_replayed_manifests_are_refused(tmp_path: Path, gate):
    trainer_private, trainer_public = generate_key_pair(tmp_path / "trainer")
    rogue_private, _ = generate_key_pair(tmp_path / "rogue")
    root = tmp_path / "checkpoints"
    config = HotSwapConfig(trusted_checkpoint_roots=(str(root),), trusted_checkpoint_keys=(str(trainer_public),))

    folder, sha = publish(root, "v0001", load_private_key(trainer_private))
    assert prepare("v0001", folder.as_uri(), sha, config, gate).version == "v0001"

    unsigned, sha = publish(root, "v0002")
    with pytest.raises(SignatureError, match="not signed"):
        prepare("v0002", unsigned.as_uri(), sha, config, gate)
    manifest_path(unsigned).unlink()
    with pytest.raises(SignatureError, match="no signed manifest"):
        prepare("v0002", unsigned.as_uri(), sha, config, gate)

    rogue, sha = publish(root, "v0003", load_private_key(rogue_private))
    with pytest.raises(SignatureError, match="not a trusted key"):
        prepare("v0003", rogue.as_uri(), sha, config, gate)

    # A trusted signature over other content: the manifest is edited after signing.
    tampered, sha = publish(root, "v0004", load_private_key(trainer_private))
    data = json.loads(manifest_path(tampered).read_text())
    data["files"][0]["size"] += 1
    manifest_path(tampered).write_text(json.dumps(data))
    with pytest.raises(SignatureError, match="bad signature"):
        prepare("v0004", tampered.as_uri(), sha, config, gate)

    # A checkpoint's bytes changed after signing (manifest untouched, digest announced anew).
    changed, _ = publish(root, "v0005", load_private_key(trainer_private))
    (changed / "config.json").write_text((changed / "config.json").read_text() + " ")
    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256

    with pytest.raises(SignatureError, match="signed manifest has"):
        prepare("v0005", changed.as_uri(), checkpoint_sha256(changed), config, gate)

    # A signed v0001 announced as another version.
    with pytest.raises(SignatureError, match="for version 'v0001'"):
        prepare("v0009", folder.as_uri(), sha_of(folder), config, gate)

    # No trusted key configured: everything is refused.
    bare = replace(config, trusted_checkpoint_keys=("",))
    with pytest.raises(SignatureError, match="no trusted_checkpoint_keys"):
        prepare("v0001", folder.as_uri(), sha_of(folder), bare, gate)


def sha_of(folder: Path) -> str:
    from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256

    return checkpoint_sha256(folder)


def test_a_rogue_server_is_refused_before_any_byte_is_fetched(tmp_path: Path, gate):
    from test_transfer import FolderSource

    _, trusted_public = generate_key_pair(tmp_path / "trainer")
    rogue_private, _ = generate_key_pair(tmp_path / "rogue")
    folder, sha = publish(tmp_path / "served", "v0007")
    robot = tmp_path / "robot"
    config = HotSwapConfig(trusted_checkpoint_roots=(str(robot),), trusted_checkpoint_keys=(str(trusted_public),))
    source = FolderSource(folder, "v0007", key=load_private_key(rogue_private))
    with pytest.raises(SignatureError, match="not a trusted key"):
        prepare("v0007", "ros:///world_model_node/v0007", sha, config, gate, lambda server: source)
    assert source.requests == 0 and not any(p.name.startswith("v0007") for p in robot.glob("*"))


def test_key_configuration_errors_name_the_field(tmp_path: Path):
    with pytest.raises(ValueError, match="trusted_checkpoint_keys: cannot read public key file"):
        TrustedKeys.load([str(tmp_path / "missing.pub")])
    (tmp_path / "bad.pub").write_text("ed25519 not-base64!\n")
    with pytest.raises(ValueError, match="trusted_checkpoint_keys: .*not an ed25519 public key"):
        TrustedKeys.load([str(tmp_path / "bad.pub")])
    (tmp_path / "rsa.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="cannot read the signing key"):
        load_private_key(tmp_path / "rsa.key")


def test_the_keys_command_creates_a_pair_and_shows_its_id(tmp_path: Path, capsys):
    assert keys_main(["generate", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert "checkpoint_signing.key" in out and "checkpoint_signing.pub" in out
    assert keys_main(["show", str(tmp_path / "k" / "checkpoint_signing.pub")]) == 0
    assert capsys.readouterr().out.strip() in out
    assert keys_main(["generate", "--out", str(tmp_path / "k")]) == 1  # refuses to overwrite
