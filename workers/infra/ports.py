"""Free loopback ports and TCP reachability; every local service binds 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import socket

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on 127.0.0.1 a moment ago.

    All sockets stay open until every port is picked, so the ports differ from each other. Another
    process may still take one before the caller binds it; callers retry a failed start with new ports.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    """Return one TCP port that was free on 127.0.0.1 a moment ago (see ``free_ports``)."""
    return free_ports(1)[0]


async def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
