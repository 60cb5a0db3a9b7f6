"""Worker health: what ``GET /healthz`` answers.

A worker is healthy when its guard model is loaded and can judge (its engine process is up, not
dead or restarting), the consumer group has assigned it its
partitions (the first rebalance is done; there may be none for it), the state store answers, and
a Kafka broker answers. The runtime records each check as it learns of it, on the event loop; the
HTTP server's thread reads a snapshot (a dict copy: the entries themselves are immutable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CheckName = Literal["model", "partitions", "redis", "kafka"]


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


class Health:
    """The latest result of every check; every check fails until it has passed once."""

    def __init__(self) -> None:
        self._checks: dict[CheckName, Check] = {
            "model": Check(False, "the guard model is loading"),
            "partitions": Check(False, "the consumer group has not assigned partitions yet"),
            "redis": Check(False, "not checked yet"),
            "kafka": Check(False, "not checked yet"),
        }

    def record(self, name: CheckName, ok: bool, detail: str) -> None:
        self._checks[name] = Check(ok, detail)

    def report(self) -> tuple[bool, dict[str, object]]:
        """Whether every check passes, and the JSON body of ``/healthz`` (with a ``reason`` naming
        the failing checks when one fails)."""
        checks = dict(self._checks)
        healthy = all(check.ok for check in checks.values())
        body: dict[str, object] = {
            "status": "ok" if healthy else "unhealthy",
            "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()},
        }
        if not healthy:
            body["reason"] = "; ".join(f"{name}: {check.detail}" for name, check in checks.items() if not check.ok)
        return healthy, body
