"""Success statistics of the learning bench: IQM, hierarchical bootstrap intervals, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from vla_mbpo_ros.core.util.success_stats import iqm, iqm_interval, paired_difference, wilson_interval


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])) == pytest.approx(3.5)
    assert iqm(np.array([0.1, 0.2, 0.6])) == pytest.approx(0.3)  # three seeds: nothing trimmed


def test_intervals_contain_the_point_and_shrink_with_more_episodes():
    rng = np.random.default_rng(0)
    few, many = (rng.random((3, n)) < 0.4 for n in (50, 800))
    widths = []
    for data in (few, many):
        estimate = iqm_interval(data, reps=500)
        assert estimate.low <= estimate.point <= estimate.high
        widths.append(estimate.high - estimate.low)
    assert widths[1] < widths[0]


def test_the_paired_difference_cancels_start_states_both_policies_share():
    rng = np.random.default_rng(1)
    baseline = (rng.random((3, 200)) < 0.5).astype(float)
    better = baseline.copy()
    better[:, :20] = 1.0  # the method also solves some episodes BC failed
    gain = (better - baseline).mean()
    difference = paired_difference(better, baseline, reps=500)
    assert difference.point == pytest.approx(gain)
    assert difference.low > 0, "a strict gain on shared start states must have an interval above 0"
    assert paired_difference(baseline, baseline, reps=200).text() == "0[0,0]"
    with pytest.raises(ValueError, match="same"):
        paired_difference(better[:, :100], baseline)


def test_wilson_interval_of_a_known_case():
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-3) and high == pytest.approx(0.1744, abs=1e-3)
