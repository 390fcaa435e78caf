"""The run directory of the finetune loop: phase markers and atomic outputs of each iteration, the
run's durable state (current policy, iterations done), and publishing a version.

    RUN/state.json                     current policy (version, path, sha256), iterations done
    RUN/iterations/<i>/<phase>.done    a finished phase; <phase>.metrics.json its metrics
    RUN/iterations/<i>/<name>/         a phase output, renamed into place when complete
    RUN/checkpoints/v<NNNN>/           published policy versions (the executor's trusted root)
    RUN/checkpoints/v<NNNN>.manifest.json  its files with sizes and sha256 (served to other machines)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

PHASES = ("bc", "world_model", "rl", "publish")


class IterationDir:
    """Phase markers and atomic outputs of one iteration."""

    def __init__(self, run_dir: Path, iteration: int) -> None:
        self.path = run_dir / "iterations" / f"{iteration:04d}"
        self.path.mkdir(parents=True, exist_ok=True)

    def done(self, phase: str) -> bool:
        return (self.path / f"{phase}.done").exists()

    def mark_done(self, phase: str, metrics: dict[str, Any]) -> None:
        self.write_json(f"{phase}.metrics.json", metrics)
        (self.path / f"{phase}.done").touch()

    def metrics(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for phase in PHASES:
            path = self.path / f"{phase}.metrics.json"
            if path.exists():
                merged.update({f"{phase}.{k}": v for k, v in json.loads(path.read_text()).items()})
        return merged

    def output(self, name: str) -> Path:
        return self.path / name

    def staging(self, name: str) -> Path:
        tmp = self.path / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        return tmp

    def commit(self, name: str) -> Path:
        final = self.path / name
        shutil.rmtree(final, ignore_errors=True)
        (self.path / f".{name}.tmp").rename(final)
        return final

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=float))
        os.replace(tmp, self.path / name)


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run's durable state: the current policy and the number of finished iterations."""
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"current_policy": None, "iterations_done": 0}


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / ".state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, run_dir / "state.json")


def publish_candidate(run_dir: Path, it: IterationDir, accepted: bool, reason: str) -> dict[str, Any]:
    """Copy an accepted candidate to ``RUN/checkpoints/v<N+1>`` (atomically) and return what the node
    announces: version, path, sha256 and policy type."""
    from vla_mbpo_ros.core.policy.checkpoint import read_config
    from vla_mbpo_ros.core.policy.transfer import build_manifest, write_manifest

    if not accepted:
        return {"published": False, "reason": reason}
    number = 1 + max((int(p.name[1:]) for p in (run_dir / "checkpoints").glob("v*") if p.name[1:].isdigit()), default=0)
    version = f"v{number:04d}"
    target = run_dir / "checkpoints" / version
    tmp = run_dir / "checkpoints" / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(it.output("candidate"), tmp)
    config = json.loads((tmp / "config.json").read_text())
    config["version"] = version  # the policy reports the version it was published as
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    tmp.rename(target)
    # One read gives the digest and the manifest a trainer on another machine serves (core.policy.transfer).
    manifest = build_manifest(target, version)
    write_manifest(target, manifest)
    return {"published": True, "version": version, "path": str(target.resolve()), "sha256": manifest.checkpoint_sha256,
            "policy_type": read_config(target)["type"]}
