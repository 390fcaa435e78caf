"""The real-episode schedule of the finetune loop and its log, ROS-free.

An *iteration* is a batch of real episodes run with one policy version; between iterations the
world-model node trains and publishes the next version. The log answers the question a user asks
first: what was the real success rate per policy version.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

LABEL_SOURCES = ("sim", "operator", "none")


@dataclass(frozen=True)
class ScheduleConfig:
    task: str = "pick up the cube"
    source: str = "policy"  # who drives the arm during episodes: "policy" or "teleop"
    episodes_per_iteration: int = 4
    iterations: int = 1  # 0 = run until stopped
    max_episode_s: float = 20.0
    label_source: str = "sim"  # success from the sim's ground truth, the operator's service, or none
    stop_on_success: bool = True
    settle_after_success_s: float = 0.5  # keep recording briefly so the success frames are in the data
    wait_for_policy_update: bool = True  # between iterations, wait until a new policy version runs
    policy_update_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.source not in ("policy", "teleop"):
            raise ValueError(f"schedule.source must be 'policy' or 'teleop', got {self.source!r}")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"schedule.label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}")
        if self.episodes_per_iteration < 1:
            raise ValueError(f"schedule.episodes_per_iteration must be >= 1, got {self.episodes_per_iteration}")
        if self.iterations < 0:
            raise ValueError(f"schedule.iterations must be >= 0, got {self.iterations}")
        if self.max_episode_s <= 0:
            raise ValueError(f"schedule.max_episode_s must be > 0, got {self.max_episode_s}")

    def iteration_of(self, episode_count: int) -> int:
        return episode_count // self.episodes_per_iteration

    def iteration_done(self, episode_count: int) -> bool:
        return episode_count > 0 and episode_count % self.episodes_per_iteration == 0

    def finished(self, episode_count: int) -> bool:
        return self.iterations > 0 and episode_count >= self.iterations * self.episodes_per_iteration


@dataclass
class EpisodeRecord:
    index: int  # dataset episode index (-1 when not recorded)
    iteration: int
    policy_version: str
    success: bool | None
    duration_s: float
    end_reason: str  # "success", "time_limit", "operator", "estop"
    interventions: int = 0


@dataclass
class EpisodeLog:
    records: list[EpisodeRecord] = field(default_factory=list)

    def add(self, record: EpisodeRecord) -> None:
        self.records.append(record)

    def success_by_version(self) -> list[tuple[int, str, int, int]]:
        """(iteration, policy version, episodes, successes) in order of first appearance."""
        rows: dict[tuple[int, str], list[int]] = {}
        for r in self.records:
            row = rows.setdefault((r.iteration, r.policy_version), [0, 0])
            row[0] += 1
            row[1] += int(bool(r.success))
        return [(it, version, n, s) for (it, version), (n, s) in rows.items()]

    def table(self) -> str:
        lines = ["iteration  policy_version  episodes  successes  success_rate"]
        for iteration, version, n, s in self.success_by_version():
            lines.append(f"{iteration:>9}  {version or '-':>14}  {n:>8}  {s:>9}  {s / n:>12.2f}")
        return "\n".join(lines)

    @classmethod
    def read_csv(cls, path: Path) -> EpisodeLog:
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return cls([
            EpisodeRecord(
                index=int(r["index"]),
                iteration=int(r["iteration"]),
                policy_version=r["policy_version"],
                success={"True": True, "False": False}.get(r["success"]),
                duration_s=float(r["duration_s"]),
                end_reason=r["end_reason"],
                interventions=int(r["interventions"]),
            )
            for r in rows
        ])

    def write_csv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(asdict(EpisodeRecord(0, 0, "", None, 0.0, "")).keys()))
            writer.writeheader()
            for r in self.records:
                writer.writerow(asdict(r))
        tmp.replace(path)
