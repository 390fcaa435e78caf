"""Action chunk <-> text codec for the UMM world model.

The world model sees actions as plain text, so the architecture and vocabulary stay unchanged: each
action dimension is clipped to ``[low, high]`` (statistics from the training data), min-max scaled to
an integer in ``[0, n_bins]`` and the chunk is written ``"Step 0: [i, ...]; Step 1: [...]"`` for all
k steps (VLA-MBPO, method notes section 2.1).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ACTION_STATS_FILE = "action_stats.json"

_STEP_PATTERN = re.compile(r"Step\s+(\d+)\s*:\s*\[([^\]]*)\]")


@dataclass
class ActionStats:
    """Per-dimension clip range of the actions, computed over the training data."""

    low: np.ndarray  # (d,) float32
    high: np.ndarray  # (d,) float32

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float32).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float32).reshape(-1)
        if self.low.shape != self.high.shape:
            raise ValueError(f"ActionStats.low {self.low.shape} and high {self.high.shape} differ in shape")
        if np.any(self.high < self.low):
            raise ValueError("ActionStats.high must be >= low in every dimension")

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    @classmethod
    def from_actions(cls, actions: np.ndarray, quantiles: tuple[float, float] = (0.0, 1.0)) -> "ActionStats":
        """Clip range from a set of actions (N, d); quantiles (0, 1) give plain min/max."""
        lo_q, hi_q = quantiles
        if not 0.0 <= lo_q < hi_q <= 1.0:
            raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        if actions.shape[0] == 0:
            raise ValueError("ActionStats.from_actions needs at least one action")
        return cls(low=np.quantile(actions, lo_q, axis=0), high=np.quantile(actions, hi_q, axis=0))

    def to_dict(self) -> dict[str, list[float]]:
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "ActionStats":
        return cls(low=np.asarray(data["low"]), high=np.asarray(data["high"]))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ACTION_STATS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "ActionStats":
        return cls.from_dict(json.loads((Path(directory) / ACTION_STATS_FILE).read_text()))


class ActionCodec:
    """Clip + min-max quantisation of action chunks to integers and their ``Step i: [..]`` text."""

    def __init__(self, stats: ActionStats, n_bins: int = 256) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.stats = stats
        self.n_bins = n_bins
        # A constant dimension has zero range: any positive span maps it to bin 0 and back exactly.
        self._span = np.where(stats.high > stats.low, stats.high - stats.low, 1.0).astype(np.float32)

    @property
    def bin_width(self) -> np.ndarray:
        """Per-dimension width of one integer step, in action units."""
        return (self.stats.high - self.stats.low) / self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(..., d) float actions -> (..., d) int64 in [0, n_bins]."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape[-1] != self.stats.dim:
            raise ValueError(f"actions have {actions.shape[-1]} dims, codec expects {self.stats.dim}")
        clipped = np.clip(actions, self.stats.low, self.stats.high)
        scaled = (clipped - self.stats.low) / self._span * self.n_bins
        return np.clip(np.rint(scaled), 0, self.n_bins).astype(np.int64)

    def decode(self, bins: np.ndarray) -> np.ndarray:
        """(..., d) integers -> (..., d) float32 actions at the bin values."""
        bins = np.asarray(bins, dtype=np.float32)
        return (self.stats.low + bins / self.n_bins * (self.stats.high - self.stats.low)).astype(np.float32)

    @staticmethod
    def format_bins(bins: np.ndarray) -> str:
        """(k, d) integers -> ``"Step 0: [a, b]; Step 1: [c, d]"``."""
        bins = np.asarray(bins)
        if bins.ndim != 2:
            raise ValueError(f"a chunk must be (k, d), got shape {bins.shape}")
        steps = (f"Step {i}: [{', '.join(str(int(v)) for v in row)}]" for i, row in enumerate(bins))
        return "; ".join(steps)

    @staticmethod
    def parse_bins(text: str) -> np.ndarray:
        """Inverse of :meth:`format_bins`; raises ValueError on malformed or out-of-order steps."""
        rows = []
        for expected, match in enumerate(_STEP_PATTERN.finditer(text)):
            if int(match.group(1)) != expected:
                raise ValueError(f"step {match.group(1)} found where step {expected} was expected")
            rows.append([int(v) for v in match.group(2).split(",") if v.strip()])
        if not rows or len({len(r) for r in rows}) != 1:
            raise ValueError(f"no well-formed 'Step i: [..]' chunk in {text!r}")
        return np.asarray(rows, dtype=np.int64)

    def to_text(self, chunk: np.ndarray) -> str:
        """(k, d) float chunk -> action text."""
        return self.format_bins(self.encode(chunk))

    def from_text(self, text: str) -> np.ndarray:
        """Action text -> (k, d) float chunk at the bin values."""
        return self.decode(self.parse_bins(text))
