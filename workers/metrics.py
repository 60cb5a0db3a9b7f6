"""Metrics go through a ``Sensor``; Prometheus is one implementation, ``NullSensor`` the default.

Business code calls the hooks and never touches prometheus_client directly. The Prometheus
sensor registers its collectors in its own registry, so tests and several workers in one process
do not collide, and ``serve(port)`` exposes them over HTTP.
"""

from __future__ import annotations

from typing import Protocol


class Sensor(Protocol):
    def on_record(self, topic: str) -> None:
        """A Kafka record arrived."""

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float) -> None:
        """A verdict was published; ``latency_s`` is receipt to publication."""

    def on_lag(self, stage: str, lag_s: float) -> None:
        """A verdict was published ``lag_s`` after its record was (the record's Kafka timestamp)."""

    def on_cutoff(self, stage: str) -> None:
        """A cut-off was published."""

    def on_dead_letter(self, reason: str) -> None:
        """A record was dead-lettered."""


class NullSensor:
    def on_record(self, topic: str) -> None:
        pass

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float) -> None:
        pass

    def on_lag(self, stage: str, lag_s: float) -> None:
        pass

    def on_cutoff(self, stage: str) -> None:
        pass

    def on_dead_letter(self, reason: str) -> None:
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
            "Record receipt to verdict publication",
            ["stage"],
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
        self._cutoffs = Counter("guard_cutoffs", "Cut-offs published", ["stage"], registry=self.registry)
        self._dead = Counter("guard_dead_letters", "Records dead-lettered", ["reason"], registry=self.registry)

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def on_record(self, topic: str) -> None:
        self._records.labels(topic).inc()

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float) -> None:
        self._verdicts.labels(stage, risk, action).inc()
        self._latency.labels(stage).observe(latency_s)

    def on_lag(self, stage: str, lag_s: float) -> None:
        self._lag.labels(stage).observe(lag_s)

    def on_cutoff(self, stage: str) -> None:
        self._cutoffs.labels(stage).inc()

    def on_dead_letter(self, reason: str) -> None:
        self._dead.labels(reason).inc()
