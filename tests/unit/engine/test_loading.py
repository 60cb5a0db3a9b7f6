"""Loads in worker threads take turns, so concurrent backend starts never race transformers' imports."""

from __future__ import annotations

import asyncio
import threading
import time

from workers.engine.loading import load_in_thread


async def test_loads_run_in_threads_one_at_a_time() -> None:
    inside: list[int] = []
    overlap = False
    threads: set[int] = set()

    def load(n: int) -> int:
        nonlocal overlap
        inside.append(n)
        overlap = overlap or len(inside) > 1
        threads.add(threading.get_ident())
        time.sleep(0.05)
        inside.remove(n)
        return n * 10

    ticks = 0

    async def loop_alive() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(loop_alive())
    results = await asyncio.gather(*(load_in_thread(load, n) for n in range(4)))
    ticker.cancel()
    assert results == [0, 10, 20, 30]
    assert not overlap
    assert threading.get_ident() not in threads  # off the event loop, which kept running
    assert ticks >= 10
