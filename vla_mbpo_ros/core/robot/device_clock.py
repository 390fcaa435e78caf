"""Mapping a camera's device timestamps to host (ROS) time, without reading any clock.

Per frame the caller gives the device timestamp, its domain and the host time at which the frame
was received. RealSense domains:

* ``global_time`` / ``system_time``: librealsense already expresses these on the host's system
  clock (ms since the Unix epoch; global time is the device clock converted by librealsense's
  own running regression, system time is the host arrival time). They map one to one.
* ``hardware_clock``: the device's own counter (arbitrary epoch, drifts by tens of ppm, wraps
  or restarts on reset). Stamp = device time + offset, where offset is the *minimum* of
  ``host receipt - device time`` over the last ``window_s`` of host time: transport delay is
  never negative, so the minimum is the sample with the least delay, and a stamp is never later
  than its frame's receipt. The sliding window follows clock drift (the offset lags by at most
  ``window_s`` x drift, 0.5 ms for 5 s at 100 ppm). A device time that goes backwards (wrap,
  reset, reconnect) or a domain change restarts the estimate and counts a resync.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

IDENTITY_DOMAINS = frozenset({"global_time", "system_time"})
DEVICE_DOMAINS = frozenset({"hardware_clock"})


@dataclass(frozen=True)
class DeviceClockConfig:
    window_s: float = 5.0  # host seconds of samples the offset minimum is taken over

    def __post_init__(self) -> None:
        if not math.isfinite(self.window_s) or self.window_s <= 0:
            raise ValueError(f"clock.window_s: expected a number > 0, got {self.window_s!r}")


class DeviceClockMapper:
    """Device timestamp (s) + domain + host receipt time (s) -> stamp on the host clock (s)."""

    def __init__(self, config: DeviceClockConfig | None = None) -> None:
        self.config = config or DeviceClockConfig()
        self.resyncs = 0
        self.domain: str | None = None
        self._samples: deque[tuple[float, float]] = deque()  # (host time, offset sample), offsets increasing
        self._last_device: float | None = None

    @property
    def offset(self) -> float:
        """Current host - device offset (s); 0 for domains already on the host clock."""
        return self._samples[0][1] if self._samples else 0.0

    def reset(self) -> None:
        """Forget the estimate (e.g. after a reconnect): the next frame starts a new one."""
        if self._samples or self._last_device is not None:
            self.resyncs += 1
        self._samples.clear()
        self._last_device = None
        self.domain = None

    def map(self, device_time: float, domain: str, host_time: float) -> float:
        if domain not in IDENTITY_DOMAINS | DEVICE_DOMAINS:
            raise ValueError(f"unknown timestamp domain {domain!r}")
        if not (math.isfinite(device_time) and math.isfinite(host_time)):
            raise ValueError(f"timestamps must be finite, got device {device_time!r}, host {host_time!r}")
        if domain != self.domain or (self._last_device is not None and device_time < self._last_device):
            self.reset()
            self.domain = domain
        self._last_device = device_time
        if domain in IDENTITY_DOMAINS:
            return device_time
        sample = host_time - device_time
        # Monotonic deque: the front is the minimum of the window; larger older samples can never
        # become the minimum again once a smaller newer one exists.
        while self._samples and self._samples[-1][1] >= sample:
            self._samples.pop()
        self._samples.append((host_time, sample))
        while self._samples[0][0] < host_time - self.config.window_s:
            self._samples.popleft()
        return device_time + self._samples[0][1]
