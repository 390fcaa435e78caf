"""core.util: the typed config loader, image resizing; core.control.rate: the fixed-rate loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from vla_mbpo_ros.core.control.rate import FixedRate
from vla_mbpo_ros.core.util.config import load_config
from vla_mbpo_ros.core.util.images import resize_uint8


@dataclass
class Inner:
    steps: int = 3
    scale: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.0, 1.0)
    flag: bool = False
    maybe: float | None = None
    inner: Inner = field(default_factory=Inner)


def test_the_loader_builds_nested_configs_and_converts_what_yaml_gives():
    config = load_config(Outer, {"sizes": [4, 5], "pair": [1, 2], "maybe": 3, "inner": {"scale": 2}})
    assert config.sizes == (4, 5) and config.pair == (1.0, 2.0) and isinstance(config.pair[0], float)
    assert config.maybe == 3.0 and isinstance(config.maybe, float)
    assert config.inner == Inner(steps=3, scale=2.0) and isinstance(config.inner.scale, float)
    assert load_config(Outer, None) == Outer()


@pytest.mark.parametrize("values,message", [
    ({"nmae": "y"}, r"cfg: unknown field\(s\) nmae \(known: name, sizes"),
    ({"inner": {"stpes": 1}}, r"cfg.inner: unknown field\(s\) stpes"),
    ({"flag": 1}, r"cfg.flag: expected true or false, got 1"),
    ({"inner": {"steps": 2.5}}, r"cfg.inner.steps: expected an integer, got 2.5"),
    ({"sizes": [1, "2"]}, r"cfg.sizes\[1\]: expected an integer, got '2'"),
    ({"pair": [1.0]}, r"cfg.pair: expected 2 values, got 1"),
    ({"name": 3}, r"cfg.name: expected a string, got 3"),
    ({"inner": 5}, r"cfg.inner: expected a mapping of fields, got int"),
])
def test_the_loader_names_the_field_and_what_was_wrong(values, message):
    with pytest.raises(ValueError, match=message):
        load_config(Outer, values, "cfg")


def test_a_configs_own_validation_error_says_where_the_value_came_from():
    from vla_mbpo_ros.core.sim import SimConfig

    with pytest.raises(ValueError, match=r"^site.yaml: sim: camera_fps must be"):
        load_config(SimConfig, {"camera_fps": 0}, "site.yaml: sim")


def test_resize_keeps_uint8_and_the_kind_of_array():
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
    out = resize_uint8(frames, 4)
    assert isinstance(out, np.ndarray) and out.shape == (2, 4, 4, 3) and out.dtype == np.uint8
    assert resize_uint8(frames, (8, 12)) is frames
    flat = np.full((1, 8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_uint8(flat, 3), np.full((1, 3, 3, 3), 77, np.uint8))
    tensor = resize_uint8(torch.from_numpy(frames), (6, 6))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 6, 6, 3)
    np.testing.assert_array_equal(tensor.numpy(), resize_uint8(frames, 6))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.work = 0.0  # seconds each cycle takes after its wait returns

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_fixed_rate_loop_keeps_absolute_deadlines_and_skips_after_a_long_stall():
    fake = FakeClock()
    rate = FixedRate(0.1, fake.clock, fake.sleep)
    times, errors = [], []
    for cycle in range(6):
        now, error = rate.wait()
        times.append(now)
        errors.append(error)
        fake.now += 0.03 if cycle != 2 else 0.35  # the third cycle stalls for 3.5 periods
    assert times[:3] == pytest.approx([100.1, 100.2, 100.3])  # no drift from the 30 ms of work
    assert errors[0] is None and errors[1] == pytest.approx(0.0)
    assert rate.overruns == 1
    # after the stall it restarts one period after the late cycle instead of bursting the missed ones
    assert times[3] == pytest.approx(100.65) and times[4] == pytest.approx(100.75)
    with pytest.raises(ValueError, match="period"):
        FixedRate(0.0)


def test_the_serial_worker_runs_jobs_in_order_and_hands_back_results_and_errors():
    from vla_mbpo_ros.core.util.worker import SerialWorker

    worker = SerialWorker("test_worker")
    done: list[int] = []
    for i in range(5):
        worker.submit(lambda i=i: done.append(i))
    assert worker.call(lambda: list(done), timeout=10) == [0, 1, 2, 3, 4]  # after every job before it
    with pytest.raises(ZeroDivisionError):
        worker.call(lambda: 1 / 0, timeout=10)
    worker.submit(lambda: done.append(5))
    worker.close(last=lambda: done.append(6), timeout=10)
    assert done == [0, 1, 2, 3, 4, 5, 6]
