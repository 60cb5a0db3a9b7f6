"""Exit instead of spinning forever when no Kafka broker can be reached.

aiokafka reconnects without end, so a worker whose brokers are gone (a lost network, a cluster
moved without it) would sit idle and look alive. ``BrokerWatch`` probes the bootstrap servers with
a TCP connect every ``interval_s``; once none has answered for ``give_up_s`` it reports it, and
the worker logs a clear error and exits with ``EXIT_BROKER_UNREACHABLE``, so its supervisor
(systemd, Kubernetes, docker) sees a failure and can restart it or page someone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

EXIT_BROKER_UNREACHABLE = 3


def parse_servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs (port 9092 when absent)."""
    servers = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "9092"
        servers.append((host.strip("[]"), int(port)))
    return servers


async def reachable(servers: Sequence[tuple[str, int]], *, timeout_s: float = 1.0) -> bool:
    """Whether any of ``servers`` accepts a TCP connection within ``timeout_s``."""
    for host, port in servers:
        with contextlib.suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
    return False


class BrokerWatch:
    """Tracks since when no broker has answered."""

    def __init__(self, give_up_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.give_up_s = give_up_s
        self._clock = clock
        self.unreachable_since: float | None = None

    def observe(self, ok: bool) -> bool:
        """Record one probe; True once no broker has answered for ``give_up_s``."""
        now = self._clock()
        if ok:
            self.unreachable_since = None
            return False
        if self.unreachable_since is None:
            self.unreachable_since = now
        return now - self.unreachable_since >= self.give_up_s
