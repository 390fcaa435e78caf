"""One thread that runs jobs in the order they were submitted: slow work (disk, encoding) off the callers'
threads, and a way for a caller to wait for the result of one job after all the jobs before it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class SerialWorker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet started."""
        return self._jobs.qsize()

    def submit(self, job: Callable[[], Any]) -> None:
        """Run ``job`` after every job submitted before it; its result and exceptions are its own business."""
        self._jobs.put(job)

    def call(self, work: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``work`` after every job submitted before it and return its result (or raise its exception);
        TimeoutError after ``timeout`` s."""
        future: Future = Future()

        def job() -> None:
            try:
                future.set_result(work())
            except Exception as err:  # noqa: BLE001  (handed back to the caller)
                future.set_exception(err)

        self._jobs.put(job)
        return future.result(timeout=timeout)

    def close(self, last: Callable[[], Any] | None = None, timeout: float | None = None) -> None:
        """Run the jobs already submitted, then ``last``, then end the thread (waiting up to ``timeout`` s)."""
        if last is not None:
            self._jobs.put(last)
        self._jobs.put(None)
        self._thread.join(timeout)
