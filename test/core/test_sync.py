"""Tests for vla_mbpo_ros.core.data.sync: approximate-time matching and rate diagnostics."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_mbpo_ros.core.data.sync import ApproximateTimeSync
from vla_mbpo_ros.core.util.stats import RateStats


def make_sync(streams=("head", "joints"), slop=0.01, queue_size=10, **kw) -> ApproximateTimeSync:
    return ApproximateTimeSync(streams, slop=slop, queue_size=queue_size, **kw)


def test_identical_stamps_emit_on_the_last_member():
    sync = make_sync(("head", "wrist", "joints"))
    assert sync.add("head", 1.0, "h", now=1.0) == []
    assert sync.add("wrist", 1.0, "w", now=1.0) == []
    sets = sync.add("joints", 1.0, "j", now=1.0)
    assert len(sets) == 1
    s = sets[0]
    assert s.stamp == 1.0 and s.items == {"head": "h", "wrist": "w", "joints": "j"}
    assert s.offsets == {"head": 0.0, "wrist": 0.0, "joints": 0.0} and s.max_skew == 0.0


def test_skew_within_slop_waits_only_until_the_nearest_is_decided():
    sync = make_sync(slop=0.01)
    sync.add("head", 1.000, "h", now=0)
    # joints at 0.997 is within slop but a joint message at up to 1.003 could still be nearer.
    assert sync.add("joints", 0.997, "j_early", now=0) == []
    # 1.004 is further than 0.003 away, so 0.997 is decided: emitted now, not a frame later.
    sets = sync.add("joints", 1.004, "j_late", now=0)
    assert len(sets) == 1
    assert sets[0].items["joints"] == "j_early"
    assert sets[0].offsets["joints"] == pytest.approx(-0.003)
    assert sets[0].max_skew == pytest.approx(0.003)


@pytest.mark.parametrize("fraction, waits_for_next_frame", [(0.5, False), (0.0, True)])
def test_known_stream_period_decides_without_waiting_a_frame(fraction, waits_for_next_frame):
    sync = make_sync(("head", "wrist"), slop=0.01, min_gap_fraction=fraction)
    period = 1 / 30
    for i in range(4):  # learn the wrist's ~33 ms gaps
        sync.add("head", i * period, i, now=0)
        sync.add("wrist", i * period, i, now=0)
    r = 4 * period
    sync.add("head", r, "h", now=0)
    sets = sync.add("wrist", r - 0.0015, "w", now=0)  # jittered 1.5 ms early
    if waits_for_next_frame:
        assert sets == []  # a wrist frame up to 1.5 ms after r might still come
        sets = sync.add("wrist", r + period, "w_next", now=0)
    assert [(s.items["head"], s.items["wrist"]) for s in sets] == [("h", "w")]


@pytest.mark.parametrize("fraction, waits_for_next_sample", [(1.0, False), (0.5, True)])
def test_a_50_hz_joint_state_9_ms_early_is_known_nearest_from_the_smallest_gap(fraction, waits_for_next_sample):
    sync = make_sync(("head", "joints"), slop=0.02, min_gap_fraction=fraction)
    for i in range(5):  # 20 ms joint-state gaps, the newest at 0.98
        sync.add("joints", 0.9 + i * 0.02, i, now=0)
    sets = sync.add("head", 0.989, "h", now=0)  # 9 ms after the newest; the next one is due at ~1.00
    if waits_for_next_sample:
        assert sets == []  # assuming only half a gap, a sample at 0.99 could still come
        sets = sync.add("joints", 1.0, "next", now=0)
    assert [s.items["joints"] for s in sets] == [4]


def test_nearer_later_message_wins():
    sync = make_sync(slop=0.01)
    sync.add("head", 1.000, "h", now=0)
    sync.add("joints", 0.995, "far", now=0)
    sets = sync.add("joints", 1.001, "near", now=0)
    assert [s.items["joints"] for s in sets] == ["near"]
    assert sync.stats()["joints"].dropped == 1  # "far" was never part of a set


def test_reference_arriving_last_matches_immediately():
    sync = make_sync(slop=0.01)
    for t in (0.990, 0.996, 1.002, 1.008, 1.014):
        assert sync.add("joints", t, t, now=0) == []
    sets = sync.add("head", 1.000, "h", now=0)
    assert len(sets) == 1 and sets[0].items["joints"] == 1.002


def test_outside_slop_never_matches_and_drops_the_reference():
    sync = make_sync(slop=0.01)
    sync.add("head", 1.000, "h1", now=0)
    sync.add("joints", 0.980, "j0", now=0)
    # 1.020 passes 1.000 + slop with nothing within slop: head 1.000 can't match (barring a
    # late out-of-order joint message), so it doesn't block the next head frame.
    assert sync.add("joints", 1.020, "j1", now=0) == []
    sets = sync.add("head", 1.021, "h2", now=0)
    assert len(sets) == 0  # j1 is 0.001 away but a nearer one may still come
    sets = sync.add("joints", 1.030, "j2", now=0)
    assert [(s.items["head"], s.items["joints"]) for s in sets] == [("h2", "j1")]
    assert sync.queued("head") == 0
    assert sync.stats()["head"].dropped == 1  # h1 went when the newer h2 was emitted


def test_out_of_order_older_message_still_matches_while_queued():
    sync = make_sync(("head", "wrist", "joints"), slop=0.01)
    sync.add("head", 2.0, "h2", now=0)
    sync.add("head", 1.0, "h1", now=0)  # older head frame arrives late
    sync.add("wrist", 2.0, "w2", now=0)
    sync.add("wrist", 1.0, "w1", now=0)
    sets = sync.add("joints", 2.0, "j2", now=0)
    # joints has passed 1.0 + slop without a match for head 1.0: h1 is dropped, h2 emitted.
    assert [s.stamp for s in sets] == [2.0]
    assert sync.stats()["head"].dropped == 1 and sync.stats()["wrist"].dropped == 1

    # A late joint message rescues a head frame that the newer joint stamps had already passed.
    sync2 = make_sync(("head", "joints"), slop=0.01)
    sync2.add("joints", 1.5, "j_new", now=0)
    sync2.add("head", 1.0, "h", now=0)
    sets = sync2.add("joints", 1.002, "j_old_late", now=0)  # older joint message arrives late
    assert [(s.stamp, s.items["joints"]) for s in sets] == [(1.0, "j_old_late")]


def test_never_emits_a_set_older_than_the_last_one():
    sync = make_sync(slop=0.01)
    sync.add("head", 2.0, "h2", now=0)
    assert len(sync.add("joints", 2.0, "j2", now=0)) == 1
    assert sync.add("head", 1.5, "h_old", now=0) == []  # late reference: dropped
    assert sync.add("joints", 1.5, "j_old", now=0) == []
    stats = sync.stats()
    assert stats["head"].late == 1 and stats["joints"].late == 1
    assert sync.emitted == 1


def test_messages_are_used_at_most_once():
    sync = make_sync(slop=0.05)
    sync.add("joints", 1.00, "j", now=0)
    sync.add("joints", 1.10, "j_next", now=0)
    s1 = sync.add("head", 1.00, "h1", now=0)
    assert [s.items["joints"] for s in s1] == ["j"]
    # j at 1.00 would be within slop of head 1.03 too, but it was used already.
    assert sync.add("head", 1.03, "h2", now=0) == []  # j_next is 0.07 away: no partner
    s3 = sync.add("head", 1.10, "h3", now=0)
    assert [(s.items["head"], s.items["joints"]) for s in s3] == [("h3", "j_next")]
    assert sync.stats()["head"].dropped == 1


def test_stopped_stream_yields_no_sets_and_is_flagged_stale():
    sync = make_sync(("head", "wrist"), slop=0.005, queue_size=5, stale_after=0.5)
    emitted = []
    for i in range(10):
        t = i * 0.1
        emitted += sync.add("head", t, i, now=t)
        if i < 3:
            emitted += sync.add("wrist", t, i, now=t)
    assert [s.items["head"] for s in emitted] == [0, 1, 2]
    assert sync.stale_streams(now=0.25) == []
    assert sync.stale_streams(now=0.9) == ["wrist"]  # last wrist at 0.2
    assert sync.queued("head") == 5  # bounded
    assert sync.stats()["head"].dropped == 2


def test_streams_never_heard_from_are_stale():
    sync = make_sync(("a", "b"), stale_after=1.0)
    sync.add("a", 0.0, None, now=10.0)
    assert sync.stale_streams(now=10.5) == ["b"]


def test_bounded_queue_drops_oldest_and_counts_it():
    sync = make_sync(("head", "joints"), slop=0.001, queue_size=3)
    for i in range(7):
        sync.add("joints", float(i), i, now=0)
    assert sync.queued("joints") == 3
    assert sync.stats()["joints"].dropped == 4
    assert sync.stats()["joints"].received == 7
    # The oldest were dropped: only 4, 5, 6 can still match.
    assert sync.add("head", 1.0, "h_old", now=0) == []
    sets = sync.add("head", 5.0, "h", now=0)
    assert [s.items["joints"] for s in sets] == [5]


def test_clock_jump_backwards_resets_instead_of_stalling():
    sync = make_sync(slop=0.01, jump_threshold=1.0)
    for t in (100.0, 100.1):
        sync.add("head", t, t, now=0)
        sync.add("joints", t, t, now=0)
    sync.add("head", 100.2, "pending", now=0)
    assert sync.emitted == 2
    # The simulation restarts: stamps jump back to 0.
    assert sync.add("head", 0.0, "h0", now=0) == []
    assert sync.resets == 1
    assert sync.stats()["head"].dropped == 1  # the pending 100.2 frame
    sets = sync.add("joints", 0.0, "j0", now=0)
    assert [(s.stamp, s.items["head"]) for s in sets] == [(0.0, "h0")]


def test_small_backwards_step_is_late_not_a_reset():
    sync = make_sync(slop=0.01, jump_threshold=1.0)
    sync.add("head", 5.0, "h", now=0)
    sync.add("joints", 5.0, "j", now=0)
    assert sync.add("head", 4.5, "old", now=0) == []
    assert sync.resets == 0 and sync.stats()["head"].late == 1


def test_non_finite_stamps_are_ignored():
    sync = make_sync()
    assert sync.add("head", math.nan, "x", now=0) == []
    assert sync.stats()["head"].invalid == 1 and sync.queued("head") == 0


def test_single_stream_passes_through():
    sync = make_sync(("head",))
    assert [s.stamp for s in sync.add("head", 3.0, "h", now=0)] == [3.0]


def test_reference_can_be_any_stream():
    sync = make_sync(("joints", "head"), reference="head", slop=0.01)
    sync.add("joints", 0.999, "j", now=0)
    sync.add("joints", 1.01, "j2", now=0)
    sets = sync.add("head", 1.0, "h", now=0)
    assert sets[0].stamp == 1.0 and list(sets[0].items) == ["joints", "head"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(stream_names=()), "sync.streams"),
        (dict(stream_names=("a", "a")), "sync.streams"),
        (dict(slop=-1), "sync.slop"),
        (dict(queue_size=0), "sync.queue_size"),
        (dict(reference="c"), "sync.reference"),
        (dict(stale_after=math.inf), "sync.stale_after"),
        (dict(min_gap_fraction=1.5), "sync.min_gap_fraction"),
        (dict(gap_history=2), "sync.gap_history"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = dict(stream_names=("a", "b"), slop=0.01, queue_size=5) | kwargs
    with pytest.raises(ValueError, match=field):
        ApproximateTimeSync(**args)
    with pytest.raises(ValueError, match="unknown stream"):
        ApproximateTimeSync(("a", "b"), slop=0.01, queue_size=5).add("z", 0.0, None, now=0)


def _simulate(rates_and_offsets, duration, jitter, shuffle_window, seed, slop, queue_size):
    """Interleave stamped messages of several streams in arrival order, some out of order."""
    rng = random.Random(seed)
    msgs = []
    for name, (period, phase) in rates_and_offsets.items():
        t = phase
        while t < duration:
            stamp = t + rng.uniform(-jitter, jitter)
            arrival = stamp + rng.uniform(0, shuffle_window)
            msgs.append((arrival, name, stamp))
            t += period
    msgs.sort()
    sync = ApproximateTimeSync(tuple(rates_and_offsets), slop=slop, queue_size=queue_size)
    sets = []
    for arrival, name, stamp in msgs:
        sets += sync.add(name, stamp, (name, stamp), now=arrival)
    return sync, sets, msgs


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    jitter=st.floats(0.0, 0.01),
    shuffle=st.floats(0.0, 0.03),
    slop=st.floats(0.002, 0.02),
)
def test_emitted_sets_respect_slop_and_are_monotonic_for_3_streams(seed, jitter, shuffle, slop):
    streams = {"head": (1 / 30, 0.0), "wrist": (1 / 30, 0.002), "joints": (1 / 100, 0.0)}
    sync, sets, msgs = _simulate(streams, 2.0, jitter, shuffle, seed, slop, queue_size=20)
    used = set()
    for prev, cur in zip(sets, sets[1:]):
        assert cur.stamp > prev.stamp
    for s in sets:
        assert set(s.items) == set(streams)
        for name, item in s.items.items():
            assert abs(item[1] - s.stamp) <= slop + 1e-12
            assert s.offsets[name] == pytest.approx(item[1] - s.stamp)
            assert item not in used  # each message in at most one set
            used.add(item)
    stats = sync.stats()
    for name in streams:
        st_ = stats[name]
        assert st_.matched + st_.dropped + sync.queued(name) == st_.received


def test_clean_streams_match_every_reference_frame():
    streams = {"head": (1 / 30, 0.0), "wrist": (1 / 30, 0.001), "joints": (1 / 100, 0.0)}
    sync, sets, msgs = _simulate(streams, 2.0, jitter=0.0, shuffle_window=0.0, seed=0, slop=0.006, queue_size=20)
    n_head = sum(1 for m in msgs if m[1] == "head")
    # Only the last head frame may still wait for a later joint message.
    assert len(sets) >= n_head - 1
    assert all(s.max_skew <= 0.006 for s in sets)


def test_rate_stats_rate_and_percentiles():
    stats = RateStats(window_s=1.0)
    for i in range(31):
        stats.tick("head", i / 30)
    assert stats.rate("head", now=1.0) == pytest.approx(30.0)
    for i, v in enumerate(range(1, 101)):
        stats.add("skew", v / 1000, now=0.5)
    pct = stats.percentiles("skew", now=0.5)
    assert pct[50.0] == pytest.approx(0.0505)
    assert pct[99.0] == pytest.approx(0.09901)
    summary = stats.summary(now=0.5)
    assert summary["rate/head"] > 0 and summary["skew/p99"] == pytest.approx(0.09901)
    # Everything ages out of the window: a stopped stream reads 0 Hz, no samples read NaN.
    assert stats.rate("head", now=5.0) == 0.0
    assert math.isnan(stats.percentiles("skew", now=5.0)[50.0])
    assert stats.rate("never", now=0.0) == 0.0


def test_rate_stats_validates_arguments():
    with pytest.raises(ValueError, match="window_s"):
        RateStats(window_s=0)
    with pytest.raises(ValueError, match="max_samples"):
        RateStats(max_samples=1)
