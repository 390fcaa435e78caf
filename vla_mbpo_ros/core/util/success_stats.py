"""Success-rate statistics over seeds for learning benches: IQM with a bootstrap 95 % interval, and the
paired difference of two policies evaluated on the same start states.

A seed's score is its success rate over E evaluation episodes. Both sources of noise are resampled
(hierarchical bootstrap): the seeds, and within each drawn seed its E episodes; the paired difference
resamples episode indices once per seed and applies them to both policies, so a start state that is
easy for both cancels out. IQM (interquartile mean, as rliable) of S seeds is the mean of the middle 50 %
(scipy's trim_mean at 0.25; with 3 seeds that is the plain mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import trim_mean


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of a 1-D array of scores."""
    return float(trim_mean(np.asarray(scores, dtype=np.float64), proportiontocut=0.25))


@dataclass(frozen=True)
class Estimate:
    point: float
    low: float
    high: float

    def text(self, scale: float = 100.0, digits: int = 0) -> str:
        return f"{scale * self.point:.{digits}f}[{scale * self.low:.{digits}f},{scale * self.high:.{digits}f}]"


def _check(successes: np.ndarray) -> np.ndarray:
    successes = np.asarray(successes, dtype=np.float64)
    if successes.ndim != 2 or successes.size == 0:
        raise ValueError(f"successes must be (seeds, episodes) and non-empty, got shape {successes.shape}")
    return successes


def _resampled_indices(seeds: int, episodes: int, reps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    seed_pick = rng.integers(0, seeds, size=(reps, seeds))
    episode_pick = rng.integers(0, episodes, size=(reps, seeds, episodes))
    return seed_pick, episode_pick


def iqm_interval(successes: np.ndarray, reps: int = 2000, seed: int = 0) -> Estimate:
    """IQM over seeds of per-seed success rates ((seeds, episodes) 0/1 array), hierarchical bootstrap 95 %."""
    successes = _check(successes)
    rng = np.random.default_rng(seed)
    seed_pick, episode_pick = _resampled_indices(*successes.shape, reps, rng)
    rates = np.take_along_axis(successes[seed_pick], episode_pick, axis=2).mean(axis=2)  # (reps, seeds)
    boot = trim_mean(rates, proportiontocut=0.25, axis=1)
    return Estimate(iqm(successes.mean(axis=1)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))


def paired_difference(method: np.ndarray, baseline: np.ndarray, reps: int = 2000, seed: int = 0) -> Estimate:
    """IQM over seeds of (method - baseline) success rates on the same start states, with a hierarchical
    bootstrap 95 % interval that resamples the same episodes for both."""
    method, baseline = _check(method), _check(baseline)
    if method.shape != baseline.shape:
        raise ValueError(f"paired evaluation needs the same (seeds, episodes): {method.shape} vs {baseline.shape}")
    difference = method - baseline
    rng = np.random.default_rng(seed)
    seed_pick, episode_pick = _resampled_indices(*difference.shape, reps, rng)
    rates = np.take_along_axis(difference[seed_pick], episode_pick, axis=2).mean(axis=2)
    boot = trim_mean(rates, proportiontocut=0.25, axis=1)
    return Estimate(iqm(difference.mean(axis=1)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95 % interval of one success rate."""
    if trials <= 0:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(centre - half), float(centre + half)
