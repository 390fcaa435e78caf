"""Waiting on an observable event with a bound: the one way tests synchronise (no ROS needed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

DEFAULT_TIMEOUT = 30.0


def wait_until(predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, what: str = "condition", poll: float = 0.02):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
