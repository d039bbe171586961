"""A bounded worker pool for the slow part of a request (classification: embeddings, retrieval, the LLM).

The event loop never runs a classification itself, so `/healthz` and reads stay fast while the LLM is busy;
at most `workers` run at once and at most `queue_limit` wait. Past that the caller gets `PoolFull` at once
(the API answers 503 with Retry-After) instead of piling up requests that would time out anyway.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from typing import TypeVar

T = TypeVar("T")


class PoolFull(RuntimeError):
    def __init__(self, retry_after_s: int, waiting: int) -> None:
        super().__init__(f"{waiting} classifications are already waiting; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class WorkerPool:
    def __init__(self, workers: int, queue_limit: int) -> None:
        self.workers = workers
        self.capacity = workers + queue_limit
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")
        self._pending = 0  # admitted and not finished; only touched on the event loop's thread
        self._mean_s = 1.0  # moving average of a job's run time, for Retry-After
        self._running: set[Future[object]] = set()  # submitted and not finished, for a bounded shutdown

    @property
    def pending(self) -> int:
        return self._pending

    def retry_after(self) -> int:
        """Seconds until about one slot frees up: the queue ahead, drained by `workers` at the mean job time."""
        waiting = max(self._pending - self.workers, 0)
        return max(1, math.ceil((waiting + 1) * self._mean_s / self.workers))

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        if self._pending >= self.capacity:
            raise PoolFull(self.retry_after(), self._pending)
        self._pending += 1
        job = self._executor.submit(partial(self._timed, fn, *args, **kwargs))
        self._running.add(job)
        job.add_done_callback(self._running.discard)
        future = asyncio.wrap_future(job)

        def _done(_: object) -> None:
            # counted until the job really ends, even if the client went away and the request was cancelled
            self._pending -= 1

        future.add_done_callback(_done)
        return await asyncio.shield(future)

    def _timed(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - started)

    def shutdown(self, grace_s: float | None = None) -> int:
        """Drop the waiting jobs and give the running ones `grace_s` (None: as long as they take); how many are still
        running then. A job waiting on a hung LLM endpoint runs for its attempts x timeout, minutes: a stop waiting
        for it held the port, the UI and the embedded LLM that long after Ctrl-C."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        running = list(self._running)
        return len(wait(running, timeout=grace_s).not_done) if running else 0

    @property
    def unfinished(self) -> int:
        """Jobs still running (after a bounded shutdown: the ones left behind)."""
        return sum(not job.done() for job in list(self._running))
