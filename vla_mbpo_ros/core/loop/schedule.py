"""The real-episode schedule of the finetune loop: its decisions and its log, ROS-free.

An *iteration* is a batch of real episodes run with one policy version; between iterations the
world-model node trains and publishes the next version. The episode manager node only gathers
what it observes (``EpisodeView``, ``UpdateView``) and acts on these decisions: when an episode
ends and with which label (``decide_episode_end``), and when waiting for a new policy is over
(``decide_update``). The log answers the question a user asks first: what was the real success
rate per policy version.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla_mbpo_ros.core.data.recording import Outcome

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


@dataclass(frozen=True)
class EpisodeView:
    """What the episode manager has observed of the running episode (times: monotonic seconds)."""

    now: float
    started: float
    latched: bool = False  # the executor's e-stop latched
    operator_outcome: Outcome | None = None  # the operator's label (~/end_episode)
    success_since: float | None = None  # first time the sim reported success in this episode


@dataclass(frozen=True)
class EpisodeEnd:
    reason: str  # "estop", "operator", "success", "time_limit"
    outcome: Outcome


def decide_episode_end(schedule: ScheduleConfig, view: EpisodeView) -> EpisodeEnd | None:
    """Whether the episode ends now, and with which label; None: it goes on."""
    if view.latched:
        return EpisodeEnd("estop", Outcome.FAILURE)
    if view.operator_outcome is not None:
        return EpisodeEnd("operator", view.operator_outcome)
    succeeded = view.success_since is not None and schedule.label_source == "sim"
    if succeeded and schedule.stop_on_success and view.now - view.success_since >= schedule.settle_after_success_s:
        return EpisodeEnd("success", Outcome.SUCCESS)
    if view.now - view.started >= schedule.max_episode_s:
        if succeeded:
            return EpisodeEnd("time_limit", Outcome.SUCCESS)
        return EpisodeEnd("time_limit", Outcome.UNLABELLED if schedule.label_source == "none" else Outcome.FAILURE)
    return None


def next_episode_check(schedule: ScheduleConfig, view: EpisodeView) -> float:
    """Seconds until ``decide_episode_end`` can change its answer without a new observation."""
    deadlines = [view.started + schedule.max_episode_s]
    if view.success_since is not None and schedule.stop_on_success:
        deadlines.append(view.success_since + schedule.settle_after_success_s)
    return max(0.0, min(deadlines) - view.now)


@dataclass(frozen=True)
class UpdateView:
    """What the episode manager has observed while waiting for the next policy version."""

    running_version: str  # the version the executor runs now
    previous_version: str  # the version the finished iteration ran
    world_model_updates: int  # updates the world-model node finished, now ...
    world_model_updates_before: int  # ... and when the iteration began
    last_update_published: bool = True  # the world-model node's last result
    last_update_reason: str = ""
    executor_rejections: tuple[tuple[str, str], ...] = ()  # (version, reason) refused since the wait began


def decide_update(view: UpdateView) -> str | None:
    """Why waiting for the next policy is over (a log line), or None to keep waiting. A refused update
    (by the world-model node's validation, or the executor's) is no failure: the running policy goes on."""
    if view.running_version != view.previous_version:
        return f"policy {view.running_version} is running"
    if view.world_model_updates > view.world_model_updates_before and not view.last_update_published:
        return f"update rejected ({view.last_update_reason}); continuing with {view.previous_version}"
    if view.executor_rejections:
        version, reason = view.executor_rejections[-1]
        return f"the executor refused {version} ({reason}); continuing with {view.previous_version}"
    return None


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
