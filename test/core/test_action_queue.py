"""Tests for vla_mbpo_ros.core.control.action_queue: chunk queue, watermark, blending by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_mbpo_ros.core.control.action_queue import ActionQueue


def chunk(values, d: int = 2) -> np.ndarray:
    """A (k, d) chunk whose row i is values[i] in every dim."""
    return np.repeat(np.asarray(values, dtype=np.float64)[:, None], d, axis=1)


def pops(queue: ActionQueue, steps) -> list[float | None]:
    out = []
    for step in steps:
        action = queue.pop(step)
        out.append(None if action is None else float(action[0]))
    return out


def test_single_chunk_plays_in_order_then_runs_dry():
    queue = ActionQueue(chunk_size=4, request_watermark=1)
    assert queue.pop(0) is None and queue.needs_chunk(0) and queue.remaining(0) == 0
    queue.push(chunk([10, 11, 12, 13]), start_step=5)
    assert queue.pop(4) is None  # not started yet
    assert queue.remaining(5) == 4 and not queue.needs_chunk(5)
    assert pops(queue, [5, 6]) == [10, 11]
    assert queue.remaining(7) == 2 and not queue.needs_chunk(7)
    assert queue.remaining(8) == 1 and queue.needs_chunk(8)  # watermark reached: request now
    assert pops(queue, [8, 9]) == [13, None]


def test_stale_actions_are_skipped():
    queue = ActionQueue(chunk_size=4)
    # Inference took 2 steps: the chunk was computed for step 10, arrives at step 12.
    queue.push(chunk([0, 1, 2, 3]), start_step=10)
    assert queue.remaining(12) == 2
    assert pops(queue, [12, 13, 14]) == [2, 3, None]
    queue.push(chunk([0, 1, 2, 3]), start_step=0)  # entirely in the past
    assert queue.pop(20) is None and queue.remaining(20) == 0


def test_remaining_counts_only_contiguous_coverage():
    queue = ActionQueue(chunk_size=3)
    queue.push(chunk([0, 0, 0]), start_step=0)
    queue.push(chunk([1, 1, 1]), start_step=5)  # gap at steps 3, 4
    assert queue.remaining(0) == 3
    queue.push(chunk([2, 2, 2]), start_step=2)
    assert queue.remaining(0) == 8  # 0..7 now covered without a gap


def test_blend_none_newest_chunk_wins():
    queue = ActionQueue(chunk_size=4, blend="none")
    queue.push(chunk([0, 0, 0, 0]), start_step=0)
    queue.push(chunk([1, 1, 1, 1]), start_step=2)
    assert pops(queue, range(7)) == [0, 0, 1, 1, 1, 1, None]


def test_blend_none_tie_goes_to_the_later_push():
    queue = ActionQueue(chunk_size=2, blend="none", request_watermark=0)
    queue.push(chunk([0, 0]), start_step=0)
    queue.push(chunk([5, 5]), start_step=0)
    assert pops(queue, [0, 1]) == [5, 5]


def test_blend_linear_ramps_over_the_overlap():
    queue = ActionQueue(chunk_size=4, blend="linear")
    queue.push(chunk([0, 0, 0, 0]), start_step=0)
    queue.push(chunk([1, 1, 1, 1]), start_step=2)
    # Overlap steps 2, 3 (L = 2): new weight (j + 1) / 3 -> 1/3, 2/3.
    got = pops(queue, range(7))
    assert got[:2] == [0, 0] and got[4:] == [1, 1, None]
    assert got[2] == pytest.approx(1 / 3) and got[3] == pytest.approx(2 / 3)


def test_blend_linear_three_chunks_hand_computed():
    queue = ActionQueue(chunk_size=4, blend="linear")
    queue.push(chunk([0, 0, 0, 0]), start_step=0)  # covers 0..3
    queue.push(chunk([3, 3, 3, 3]), start_step=1)  # covers 1..4, overlap with A: steps 1..3 (L=3)
    queue.push(chunk([6, 6, 6, 6]), start_step=2)  # covers 2..5, overlap with A|B coverage: 2..4 (L=3)
    got = pops(queue, range(6))
    # step 1: A,B: w_B = 1/4 -> 0.75
    # step 2: A,B: w_B = 2/4 -> 1.5; then C: w_C = 1/4 -> 0.75*1.5 + 0.25*6 = 2.625
    # step 3: A,B: w_B = 3/4 -> 2.25; then C: w_C = 2/4 -> 4.125
    # step 4: B only (A ended), then C: overlap B.end - C.start = 3, w_C = 3/4 -> 0.25*3 + 0.75*6 = 5.25
    # step 5: C only -> 6
    assert got == pytest.approx([0, 0.75, 2.625, 4.125, 5.25, 6])


def test_blend_exponential_act_weights():
    decay = math.log(2.0)  # weights 1, 1/2, 1/4 for oldest, middle, newest
    queue = ActionQueue(chunk_size=3, blend="exponential", exp_decay=decay)
    queue.push(chunk([0, 0, 0]), start_step=0)
    queue.push(chunk([1, 1, 1]), start_step=1)
    queue.push(chunk([2, 2, 2]), start_step=2)
    got = pops(queue, range(5))
    # step 1: (1*0 + 0.5*1) / 1.5 = 1/3
    # step 2: (1*0 + 0.5*1 + 0.25*2) / 1.75 = 4/7
    # step 3: B, C: (1*1 + 0.5*2) / 1.5 = 4/3
    # step 4: C only
    assert got == pytest.approx([0, 1 / 3, 4 / 7, 4 / 3, 2])


def test_blend_exponential_negative_decay_favours_newer():
    queue = ActionQueue(chunk_size=2, blend="exponential", exp_decay=-math.log(3.0), request_watermark=0)
    queue.push(chunk([0, 0]), start_step=0)
    queue.push(chunk([1, 1]), start_step=1)
    # Weights 1 and 3 -> (0 + 3) / 4.
    assert pops(queue, [1]) == [pytest.approx(0.75)]


def test_blending_is_per_dimension():
    queue = ActionQueue(chunk_size=2, blend="linear", request_watermark=0)
    queue.push(np.array([[0.0, 10.0], [0.0, 10.0]]), start_step=0)
    queue.push(np.array([[3.0, 40.0], [3.0, 40.0]]), start_step=1)
    # Overlap step 1 only (L = 1): new weight 1/2.
    np.testing.assert_allclose(queue.pop(1), [1.5, 25.0])


def test_clear_flushes_everything():
    queue = ActionQueue(chunk_size=3, request_watermark=0)
    queue.push(chunk([1, 2, 3]), start_step=0)
    queue.clear()
    assert queue.pop(0) is None and queue.remaining(0) == 0 and queue.needs_chunk(0)


def test_pop_returns_a_copy():
    queue = ActionQueue(chunk_size=2, request_watermark=0)
    queue.push(chunk([1, 2]), start_step=0)
    action = queue.pop(0)
    action[:] = 99
    assert pops(queue, [0]) == [1]


def test_push_validates_shapes():
    queue = ActionQueue(chunk_size=3)
    with pytest.raises(ValueError, match=r"shape \(3, d\)"):
        queue.push(np.zeros((2, 6)), start_step=0)
    with pytest.raises(ValueError, match=r"shape \(3, d\)"):
        queue.push(np.zeros(3), start_step=0)
    queue.push(np.zeros((3, 6)), start_step=0)
    with pytest.raises(ValueError, match="6-dim"):
        queue.push(np.zeros((3, 5)), start_step=1)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(chunk_size=0), "action_queue.chunk_size"),
        (dict(blend="cubic"), "action_queue.blend"),
        (dict(exp_decay=float("nan")), "action_queue.exp_decay"),
        (dict(request_watermark=10), "action_queue.request_watermark"),
        (dict(request_watermark=-1), "action_queue.request_watermark"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ActionQueue(**(dict(chunk_size=10) | kwargs))
