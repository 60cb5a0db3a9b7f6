"""Metrics go through a ``Sensor``; Prometheus is one implementation, ``NullSensor`` the default.

Business code calls the hooks and never touches prometheus_client directly. The Prometheus
sensor registers its collectors in its own registry, so tests and several workers in one process
do not collide, and ``serve(port)`` exposes them over HTTP: ``GET /metrics`` (Prometheus text) and,
given a health report, ``GET /healthz`` (200 or 503 with a JSON body).
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

HealthReport = Callable[[], tuple[bool, dict[str, object]]]


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where a worker stands in one of its assigned partitions. Each is a Kafka *next* offset
    (one past the last record it counts), None until known."""

    highwater: int | None
    """The offset the broker will give the next record (as of the consumer's last fetch)."""
    committed: int | None
    """The offset the consumer group resumes from after a rebalance or restart."""
    read: int | None
    """The offset the worker reads next."""


PartitionSource = Callable[[], Mapping[tuple[str, int], PartitionPosition]]
"""A snapshot of ``(topic, partition) -> PartitionPosition`` for the assigned partitions."""

PARTITION_SERIES: dict[str, str] = {
    "guard_consumer_lag_records": (
        "Records of the partition past the group's committed offset (highwater - committed): "
        "what the group has not yet finished"
    ),
    "guard_consumer_unread_records": "Records of the partition the worker has not read yet (highwater - read)",
}


class Sensor(Protocol):
    def on_record(self, topic: str) -> None:
        """A Kafka record arrived."""

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float, tier: str = "") -> None:
        """A verdict was published by guard ``tier``; ``latency_s`` is receipt to publication."""

    def on_lag(self, stage: str, lag_s: float) -> None:
        """A verdict was published ``lag_s`` after its record was (the record's Kafka timestamp)."""

    def on_cutoff(self, stage: str, category: str | None = None) -> None:
        """A cut-off was published (``category``: what the guard named, None when it named none)."""

    def on_dead_letter(self, reason: str) -> None:
        """A record was dead-lettered."""

    def on_shadow_event(self, outcome: str) -> None:
        """An event was offered to the shadow guard: ``queued``, or not judged by it: ``dropped`` (its
        queue was full) or ``skipped`` (an earlier event of its message was dropped)."""

    def on_shadow_verdict(self, stage: str, latency_s: float) -> None:
        """The shadow guard published a verdict ``latency_s`` after the live worker received the record."""

    def on_shadow_discard(self, kind: str) -> None:
        """The shadow guard produced an effect it never publishes: ``control`` or ``dead_letter``."""

    def add_source(self, read: Callable[[], Mapping[str, float]]) -> None:
        """Read ``read()`` at every scrape: values keyed as in ``RUNTIME_SERIES``."""

    def add_partition_source(self, read: PartitionSource) -> None:
        """Read ``read()`` at every scrape: ``PARTITION_SERIES`` per topic and partition."""


RUNTIME_SERIES: dict[str, tuple[str, str, bool]] = {
    # key: (metric name, help, is a counter)
    "forwards": ("guard_engine_forwards", "Engine forwards run", True),
    "rows": ("guard_engine_rows", "Rows (one conversation each) in engine forwards", True),
    "tokens": ("guard_engine_tokens", "New tokens in engine forwards", True),
    "forward_seconds": ("guard_engine_forward_seconds", "Seconds spent in engine forwards", True),
    "rebuilds": ("guard_engine_rebuilds", "Conversations rebuilt from the token log", True),
    "kv_evictions": ("guard_kv_evictions", "Conversations evicted from the KV cache", True),
    "engine_restarts": ("guard_engine_restarts", "Engine processes started after the previous one died", True),
    "kv_bytes_used": ("guard_kv_bytes_in_use", "KV cache bytes held", False),
    "lanes_active": ("guard_lanes_active", "Conversations with events being processed", False),
    "store_failures": ("guard_store_failures", "State store attempts that failed (each is retried)", True),
    "shadow_queued": ("guard_shadow_queue_depth", "Events waiting for the shadow guard", False),
}
"""Series read from the runtime at scrape time; rates give rows and tokens per forward and the time
per forward (``rate(guard_engine_tokens_total) / rate(guard_engine_forwards_total)``)."""


class NullSensor:
    def on_record(self, topic: str) -> None:
        pass

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float, tier: str = "") -> None:
        pass

    def on_lag(self, stage: str, lag_s: float) -> None:
        pass

    def on_cutoff(self, stage: str, category: str | None = None) -> None:
        pass

    def on_dead_letter(self, reason: str) -> None:
        pass

    def on_shadow_event(self, outcome: str) -> None:
        pass

    def on_shadow_verdict(self, stage: str, latency_s: float) -> None:
        pass

    def on_shadow_discard(self, kind: str) -> None:
        pass

    def add_source(self, read: Callable[[], Mapping[str, float]]) -> None:
        pass

    def add_partition_source(self, read: PartitionSource) -> None:
        pass


class PrometheusSensor:
    """``guard_*`` metrics in a private registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self._records = Counter("guard_records", "Kafka records received", ["topic"], registry=self.registry)
        self._verdicts = Counter(
            "guard_verdicts", "Verdicts published", ["stage", "risk", "action"], registry=self.registry
        )
        self._latency = Histogram(
            "guard_verdict_latency_seconds",
            "Record receipt to verdict publication, per stage and deciding tier",
            ["stage", "tier"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
            registry=self.registry,
        )
        self._lag = Histogram(
            "guard_verdict_lag_seconds",
            "Record published (its Kafka timestamp) to verdict publication: grows when the worker falls behind",
            ["stage"],
            buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48),
            registry=self.registry,
        )
        self._cutoffs = Counter(
            "guard_cutoffs", "Cut-offs published, per stage and category", ["stage", "category"], registry=self.registry
        )
        self._dead = Counter("guard_dead_letters", "Records dead-lettered", ["reason"], registry=self.registry)
        self._shadow_events = Counter(
            "guard_shadow_events",
            "Events offered to the shadow guard: queued, dropped (queue full) or skipped (message incomplete)",
            ["outcome"],
            registry=self.registry,
        )
        self._shadow_latency = Histogram(
            "guard_shadow_verdict_latency_seconds",
            "Record receipt to shadow verdict publication (queueing included), per stage",
            ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12),
            registry=self.registry,
        )
        self._shadow_discarded = Counter(
            "guard_shadow_discarded",
            "Effects of the shadow guard never published: cut-offs and dead letters",
            ["kind"],
            registry=self.registry,
        )

    def serve(self, port: int, *, host: str = "127.0.0.1", health: HealthReport | None = None) -> WSGIServer:
        """Serve ``/metrics`` (and ``/healthz`` when ``health`` is given) from a daemon thread;
        returns the server (``shutdown()`` stops it; port 0 picks a free one, see ``server_port``)."""
        from prometheus_client import make_wsgi_app

        metrics = make_wsgi_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz" and health is not None:
                healthy, body = health()
                status = "200 OK" if healthy else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [json.dumps(body).encode()]
            if path in ("/metrics", "/"):
                return metrics(environ, start_response)  # type: ignore[no-any-return]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: /metrics and /healthz are served here\n"]

        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server

    def on_record(self, topic: str) -> None:
        self._records.labels(topic).inc()

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float, tier: str = "") -> None:
        self._verdicts.labels(stage, risk, action).inc()
        self._latency.labels(stage, tier).observe(latency_s)

    def on_lag(self, stage: str, lag_s: float) -> None:
        self._lag.labels(stage).observe(lag_s)

    def on_cutoff(self, stage: str, category: str | None = None) -> None:
        self._cutoffs.labels(stage, category or "none").inc()

    def on_dead_letter(self, reason: str) -> None:
        self._dead.labels(reason).inc()

    def on_shadow_event(self, outcome: str) -> None:
        self._shadow_events.labels(outcome).inc()

    def on_shadow_verdict(self, stage: str, latency_s: float) -> None:
        self._shadow_latency.labels(stage).observe(latency_s)

    def on_shadow_discard(self, kind: str) -> None:
        self._shadow_discarded.labels(kind).inc()

    def add_source(self, read: Callable[[], Mapping[str, float]]) -> None:
        self.registry.register(_SourceCollector(read))

    def add_partition_source(self, read: PartitionSource) -> None:
        self.registry.register(_PartitionCollector(read))


class _SourceCollector:
    """Turns a runtime snapshot into ``RUNTIME_SERIES`` metric families at scrape time."""

    def __init__(self, read: Callable[[], Mapping[str, float]]) -> None:
        self._read = read

    def describe(self) -> list[Any]:
        return []  # families depend on the snapshot; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for key, value in self._read().items():
            if key not in RUNTIME_SERIES:
                continue
            name, documentation, counter = RUNTIME_SERIES[key]
            family = CounterMetricFamily if counter else GaugeMetricFamily
            yield family(name, documentation, value=float(value))


class _PartitionCollector:
    """Turns a partition snapshot into ``PARTITION_SERIES`` gauges at scrape time; a partition
    whose offsets are not known yet has no sample (rather than a made-up zero)."""

    def __init__(self, read: PartitionSource) -> None:
        self._read = read

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        lag, unread = (
            GaugeMetricFamily(name, doc, labels=["topic", "partition"]) for name, doc in PARTITION_SERIES.items()
        )
        for (topic, partition), at in sorted(self._read().items()):
            labels = [topic, str(partition)]
            if at.highwater is not None and at.committed is not None:
                lag.add_metric(labels, max(at.highwater - at.committed, 0))
            if at.highwater is not None and at.read is not None:
                unread.add_metric(labels, max(at.highwater - at.read, 0))
        yield lag
        yield unread


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""
