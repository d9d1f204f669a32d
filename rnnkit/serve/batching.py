"""Dynamic batching: requests arriving within a few milliseconds of each other run as one batch.

A :class:`Batcher` owns a bounded queue and one worker task. The worker waits for a first request, takes
every request already queued (up to ``max_batch``), and, while it holds fewer than the previous batch had,
waits at most ``max_wait_ms`` for more; then it runs the batch function once in a worker thread (so the event
loop keeps accepting requests) and hands each caller its own result, in the order the batch function returned
them. The wait adapts to the traffic: a lone client (batches of one) never waits, and a batch of 64 clients
waits until they are back or the window closes; requests that arrive while the model runs are queued for the
next batch anyway. A full queue refuses new work at once (:class:`QueueFull`): memory never grows without
bound. ``max_batch=1`` runs requests one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already."""


@dataclass
class BatchStats:
    """Counters for ``GET /health``: requests run, batches run, and the largest batch."""

    requests: int = 0
    batches: int = 0
    largest: int = 0


class Batcher:
    """Collects items for ``fn(items) -> results`` (one result per item, same order) and runs them in batches.

    Args:
        fn: the batch function; when it raises, each item of the batch is run alone and only the callers
            whose items fail get the exception.
        executor: where ``fn`` runs (one thread: models are not run concurrently).
        max_batch: most items per call of ``fn``.
        max_wait_ms: how long the first item of a batch waits for others (only while the batch holds fewer
            items than the previous one).
        max_queue: most items waiting; more raise :class:`QueueFull`.
    """

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], executor: Executor, *, max_batch: int,
                 max_wait_ms: float, max_queue: int) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1, max_wait_ms >= 0; got {max_batch}, "
                             f"{max_queue}, {max_wait_ms}")
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue(maxsize=max_queue)
        self.stats = BatchStats()
        self._expected = 1  # the previous batch's size: how many items a batch waits for
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the worker; callers still waiting get a cancelled future."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self.queue.empty():
            _, fut = self.queue.get_nowait()
            fut.cancel()

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its result; :class:`QueueFull` when the queue is full."""
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, fut))
        except asyncio.QueueFull:
            raise QueueFull() from None
        return await fut

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        """The queued items (at most ``max_batch``), after waiting at most ``max_wait`` while fewer than the
        previous batch's size are in hand."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if len(batch) >= self._expected or left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        self._expected = len(batch)
        return batch

    async def _call(self, items: list[Any]) -> list[tuple[bool, Any]]:
        """``(ok, result or exception)`` per item: the batch in one call; if that call fails, each item alone,
        so that one bad request does not fail the others of its batch."""
        loop = asyncio.get_running_loop()
        try:
            return [(True, r) for r in await loop.run_in_executor(self.executor, self.fn, items)]
        except Exception as e:  # noqa: BLE001 (the error belongs to the callers, not to the worker)
            if len(items) == 1:
                return [(False, e)]
        return [(await self._call([item]))[0] for item in items]

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # a caller may have gone away
            if not live:
                continue
            outcomes = await self._call([item for item, _ in live])
            self.stats.requests += len(live)
            self.stats.batches += 1
            self.stats.largest = max(self.stats.largest, len(live))
            for (_, fut), (ok, value) in zip(live, outcomes):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
