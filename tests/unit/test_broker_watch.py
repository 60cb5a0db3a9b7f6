"""BrokerWatch: gives up only after the brokers stayed unreachable for the whole limit."""

from __future__ import annotations

import asyncio
import socket

from workers.agents.broker_watch import BrokerWatch, parse_servers, reachable


def test_gives_up_after_the_limit_and_resets_when_a_broker_answers() -> None:
    now = [0.0]
    watch = BrokerWatch(10.0, clock=lambda: now[0])
    assert not watch.observe(False)
    now[0] = 9.0
    assert not watch.observe(False)
    now[0] = 9.5
    assert not watch.observe(True)  # answered: the clock starts again
    now[0] = 19.0
    assert not watch.observe(False)
    now[0] = 29.0
    assert watch.observe(False)


def test_parse_and_probe() -> None:
    assert parse_servers("a:1, b:2,c") == [("a", 1), ("b", 2), ("c", 9092)]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        assert asyncio.run(reachable([("127.0.0.1", port)]))
    finally:
        listener.close()
    assert not asyncio.run(reachable([("127.0.0.1", port)], timeout_s=0.5))
