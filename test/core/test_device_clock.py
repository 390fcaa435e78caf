"""Device timestamp -> host time mapping (vla_mbpo_ros.core.robot.device_clock)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_mbpo_ros.core.robot.device_clock import DeviceClockConfig, DeviceClockMapper


def test_host_clock_domains_map_one_to_one():
    mapper = DeviceClockMapper()
    assert mapper.map(1_700_000_000.123, "global_time", host_time=1_700_000_000.2) == 1_700_000_000.123
    assert mapper.map(1_700_000_000.156, "system_time", host_time=1_700_000_000.1) == 1_700_000_000.156
    assert mapper.offset == 0.0


def test_hardware_clock_offset_is_the_least_delayed_sample_and_never_after_receipt():
    rng = np.random.default_rng(0)
    true_offset = 1_700_000_000.0 - 12.5
    mapper = DeviceClockMapper(DeviceClockConfig(window_s=5.0))
    stamps, receipts = [], []
    for i in range(300):
        device = 12.5 + i / 30
        delay = 0.002 + rng.exponential(0.004)
        receipt = device + true_offset + delay
        stamps.append(mapper.map(device, "hardware_clock", receipt))
        receipts.append(receipt)
    stamps, receipts = np.array(stamps), np.array(receipts)
    assert np.all(stamps <= receipts)
    assert np.all(np.diff(stamps) > 0)
    # After a few frames the error is the smallest delay seen, not the mean delay.
    errors = stamps[30:] - (12.5 + np.arange(30, 300) / 30 + true_offset)
    assert errors.max() < 0.004 and errors.min() >= 0.002


def test_drift_is_followed_by_the_sliding_window():
    mapper = DeviceClockMapper(DeviceClockConfig(window_s=2.0))
    drift = 1e-3  # device runs 0.1 % slow: an exaggerated drift
    for i in range(30 * 60):
        host = 100.0 + i / 30
        device = (host - 100.0) * (1 - drift)
        stamp = mapper.map(device, "hardware_clock", host + 0.003)
    # A slow device clock makes the oldest sample in the window the minimum: the error is at most
    # window x drift (2 ms), not the 60 ms accumulated over the minute.
    assert 0.003 - 2.0 * drift - 1e-9 <= stamp - host <= 0.003 + 1e-9


def test_device_time_going_back_or_a_domain_change_restarts_the_estimate():
    mapper = DeviceClockMapper()
    mapper.map(50.0, "hardware_clock", 1000.0)
    assert mapper.offset == pytest.approx(950.0)
    # Device reset: its counter restarts near zero; the old offset would put stamps 50 s back.
    assert mapper.map(0.1, "hardware_clock", 1000.2) == pytest.approx(1000.2)
    assert mapper.resyncs == 1
    assert mapper.map(1000.25, "global_time", 1000.3) == 1000.25
    assert mapper.resyncs == 2 and mapper.domain == "global_time"


def test_rejects_unknown_domains_and_bad_config():
    with pytest.raises(ValueError, match="timestamp domain"):
        DeviceClockMapper().map(1.0, "steady_clock", 2.0)
    with pytest.raises(ValueError, match="clock.window_s"):
        DeviceClockConfig(window_s=0.0)
