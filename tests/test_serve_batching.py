"""The dynamic batcher alone (no server): batches bounded, results in order, a full queue refused, a failing
item isolated from the others of its batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from rnnkit.serve.batching import Batcher, QueueFull


def run_batcher(fn, items, **kw):
    calls = []

    def recorded(batch):
        calls.append(list(batch))
        return fn(batch)

    async def go():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(recorded, pool, **kw)
            b.start()
            try:
                return await asyncio.gather(*(b.submit(i) for i in items), return_exceptions=True), b.stats
            finally:
                await b.stop()

    results, stats = asyncio.run(go())
    return results, calls, stats


def test_batches_are_bounded_and_results_come_back_in_order():
    results, calls, stats = run_batcher(lambda xs: [x * 10 for x in xs], list(range(10)), max_batch=4,
                                        max_wait_ms=50, max_queue=100)
    assert results == [x * 10 for x in range(10)]
    assert [len(c) for c in calls] == [4, 4, 2] and sum(calls, []) == list(range(10))
    assert (stats.requests, stats.batches, stats.largest) == (10, 3, 4)


def test_a_full_queue_refuses_at_once():
    results, calls, _ = run_batcher(lambda xs: xs, list(range(5)), max_batch=1, max_wait_ms=0, max_queue=2)
    assert results[:2] == [0, 1] and all(isinstance(r, QueueFull) for r in results[2:])
    assert calls == [[0], [1]]


def test_a_failing_item_fails_alone():
    def fn(xs):
        if 3 in xs:
            raise ValueError("3 is bad")
        return [-x for x in xs]

    results, calls, _ = run_batcher(fn, list(range(6)), max_batch=6, max_wait_ms=50, max_queue=10)
    assert results[:3] == [0, -1, -2] and results[4:] == [-4, -5]
    assert isinstance(results[3], ValueError) and str(results[3]) == "3 is bad"
    assert calls[0] == list(range(6)) and calls[1:] == [[x] for x in range(6)]


def test_bad_settings():
    with pytest.raises(ValueError, match="need max_batch >= 1"):
        Batcher(lambda xs: xs, None, max_batch=0, max_wait_ms=1, max_queue=1)


def test_a_lone_request_does_not_wait_for_the_window():
    """Batches of one (a single client) run at once: the minute-long window is never waited."""
    async def go():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(lambda xs: [x + 1 for x in xs], pool, max_batch=8, max_wait_ms=60_000, max_queue=8)
            b.start()
            try:
                return [await asyncio.wait_for(b.submit(i), 10) for i in range(3)]
            finally:
                await b.stop()

    assert asyncio.run(go()) == [1, 2, 3]


def test_a_batch_waits_for_as_many_requests_as_the_previous_one():
    """After a batch of three, the next waits (within the window) until three requests are in hand."""
    calls = []

    def fn(xs):
        calls.append(list(xs))
        return xs

    async def go():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(fn, pool, max_batch=8, max_wait_ms=60_000, max_queue=8)
            b.start()
            try:
                first = await asyncio.gather(*(b.submit(i) for i in range(3)))
                early = [asyncio.ensure_future(b.submit(i)) for i in (3, 4)]
                await asyncio.sleep(0.2)  # the worker holds 3 and 4 and waits for a third request
                late = await asyncio.wait_for(b.submit(5), 10)
                return first, await asyncio.gather(*early), late
            finally:
                await b.stop()

    assert asyncio.run(go()) == ([0, 1, 2], [3, 4], 5)
    assert calls == [[0, 1, 2], [3, 4, 5]]
