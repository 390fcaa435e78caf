"""The newest few items of a stream, shared between the thread that adds them and threads that wait."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class RecentItems(Generic[T]):
    """The newest ``capacity`` items (e.g. observations from a subscription callback), read and awaited
    from other threads: ``wait_for`` blocks on a condition, never polls."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)
        self._changed = threading.Condition()
        self._closed = False

    def add(self, item: T) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def latest(self) -> T | None:
        with self._changed:
            return self._items[-1] if self._items else None

    def wait_for(self, count: int, timeout: float) -> list[T]:
        """The items once there are ``count`` of them, or whatever there is after ``timeout`` s or ``close``."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._items) >= count or self._closed, timeout=timeout)
            return list(self._items)

    def close(self) -> None:
        """Wake every waiter (shutdown)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
