"""A worker's HTTP endpoints, read the way a probe or a scraper reads them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request


def healthz(port: int) -> tuple[int, dict[str, object]]:
    """``GET /healthz``: the status and the JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def samples(port: int) -> dict[str, float]:
    """Every sample of ``/metrics``, keyed by its name with its labels as printed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines if line and not line.startswith("#"))
    }


def unlabelled(port: int) -> dict[str, float]:
    """The unlabelled series of ``/metrics``."""
    return {name: value for name, value in samples(port).items() if "{" not in name}


async def watch_health(port: int, seen: list[tuple[int, str]]) -> None:
    """Append ``(status, reason)`` of ``/healthz`` to ``seen`` every 0.25 s, until cancelled."""
    while True:
        try:
            status, body = await asyncio.to_thread(healthz, port)
            seen.append((status, str(body.get("reason", ""))))
        except OSError:
            pass  # the endpoint is not up yet
        await asyncio.sleep(0.25)
