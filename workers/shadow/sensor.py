"""What the shadow's moderator reports goes to the shadow's series, never to the live ones.

The live dashboards (verdicts, latency, lag, cut-offs) must count the live guard only; the shadow's
``Moderator`` gets this adapter, which turns its verdict latency into
``Sensor.on_shadow_verdict`` and drops the rest (its cut-offs are counted by ``ShadowSink``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from workers.metrics import PartitionSource, Sensor


class ShadowSensor:
    """A ``Sensor`` over the worker's sensor that records only the shadow's own series."""

    def __init__(self, sensor: Sensor) -> None:
        self._sensor = sensor

    def on_record(self, topic: str) -> None:
        pass

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float, tier: str = "") -> None:
        self._sensor.on_shadow_verdict(stage, latency_s)

    def on_lag(self, stage: str, lag_s: float) -> None:
        pass

    def on_cutoff(self, stage: str, category: str | None = None) -> None:
        pass

    def on_dead_letter(self, reason: str) -> None:
        pass

    def on_shadow_event(self, outcome: str) -> None:
        self._sensor.on_shadow_event(outcome)

    def on_shadow_verdict(self, stage: str, latency_s: float) -> None:
        self._sensor.on_shadow_verdict(stage, latency_s)

    def on_shadow_discard(self, kind: str) -> None:
        self._sensor.on_shadow_discard(kind)

    def add_source(self, read: Callable[[], Mapping[str, float]]) -> None:
        pass

    def add_partition_source(self, read: PartitionSource) -> None:
        pass
