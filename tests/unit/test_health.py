"""``/healthz`` and ``/metrics``: the checks' report and the HTTP endpoint that serves it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from workers.health import Health
from workers.metrics import PartitionPosition, PrometheusSensor


def test_every_check_fails_until_it_has_passed_and_the_reason_names_the_failing_ones() -> None:
    health = Health()
    healthy, body = health.report()
    assert not healthy and body["status"] == "unhealthy"
    for name in ("model", "partitions", "redis", "kafka"):
        assert name in str(body["reason"])
    health.record("model", True, "m loaded")
    health.record("partitions", True, "2 assigned")
    health.record("kafka", True, "a broker answers")
    health.record("redis", False, "unreachable (ConnectionError: refused)")
    healthy, body = health.report()
    assert not healthy and body["reason"] == "redis: unreachable (ConnectionError: refused)"
    health.record("redis", True, "answers")
    healthy, body = health.report()
    assert healthy and body["status"] == "ok" and "reason" not in body
    assert body["checks"] == {
        "model": {"ok": True, "detail": "m loaded"},
        "partitions": {"ok": True, "detail": "2 assigned"},
        "redis": {"ok": True, "detail": "answers"},
        "kafka": {"ok": True, "detail": "a broker answers"},
    }


@pytest.fixture
def served() -> Iterator[tuple[str, Health, PrometheusSensor]]:
    health = Health()
    sensor = PrometheusSensor()
    server = sensor.serve(0, health=health.report)
    try:
        yield f"http://127.0.0.1:{server.server_port}", health, sensor
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_healthz_is_503_with_the_reason_then_200(served: tuple[str, Health, PrometheusSensor]) -> None:
    base, health, _ = served
    status, body = _get(f"{base}/healthz")
    assert status == 503 and "model" in json.loads(body)["reason"]
    for name in ("model", "partitions", "redis", "kafka"):
        health.record(name, True, "fine")  # type: ignore[arg-type]
    status, body = _get(f"{base}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_metrics_are_served_beside_health(served: tuple[str, Health, PrometheusSensor]) -> None:
    base, _, sensor = served
    sensor.on_verdict("response", "safe", "allow", 0.012, "stream")
    sensor.on_cutoff("response", "Violent")
    sensor.on_cutoff("prompt", None)
    sensor.on_dead_letter("invalid_json")
    status, body = _get(f"{base}/metrics")
    text = body.decode()
    assert status == 200
    assert 'guard_verdicts_total{action="allow",risk="safe",stage="response"} 1.0' in text
    assert 'guard_dead_letters_total{reason="invalid_json"} 1.0' in text
    assert 'guard_verdict_latency_seconds_count{stage="response",tier="stream"} 1.0' in text
    assert 'guard_cutoffs_total{category="Violent",stage="response"} 1.0' in text
    assert 'guard_cutoffs_total{category="none",stage="prompt"} 1.0' in text
    assert _get(f"{base}/nothing-here")[0] == 404


def test_runtime_series_are_read_at_each_scrape(served: tuple[str, Health, PrometheusSensor]) -> None:
    base, _, sensor = served
    snapshot = {"forwards": 3.0, "tokens": 42.0, "kv_bytes_used": 6144.0, "lanes_active": 2.0, "unknown": 1.0}
    sensor.add_source(lambda: snapshot)
    text = _get(f"{base}/metrics")[1].decode()
    assert "guard_engine_forwards_total 3.0" in text and "guard_engine_tokens_total 42.0" in text
    assert "guard_kv_bytes_in_use 6144.0" in text and "guard_lanes_active 2.0" in text
    assert "unknown" not in text
    snapshot["forwards"] = 5.0
    assert "guard_engine_forwards_total 5.0" in _get(f"{base}/metrics")[1].decode()


def test_partition_lag_is_read_at_each_scrape(served: tuple[str, Health, PrometheusSensor]) -> None:
    base, _, sensor = served
    snapshot = {
        ("guard.tokens", 0): PartitionPosition(highwater=120, committed=100, read=115),
        ("guard.tokens", 1): PartitionPosition(highwater=7, committed=7, read=7),
        ("guard.prompts", 0): PartitionPosition(highwater=None, committed=None, read=None),  # nothing fetched yet
    }
    sensor.add_partition_source(lambda: snapshot)
    text = _get(f"{base}/metrics")[1].decode()
    assert 'guard_consumer_lag_records{partition="0",topic="guard.tokens"} 20.0' in text
    assert 'guard_consumer_unread_records{partition="0",topic="guard.tokens"} 5.0' in text
    assert 'guard_consumer_lag_records{partition="1",topic="guard.tokens"} 0.0' in text
    assert 'topic="guard.prompts"' not in text  # unknown offsets have no sample, not a made-up zero
    snapshot[("guard.tokens", 0)] = PartitionPosition(highwater=130, committed=130, read=130)
    assert 'guard_consumer_lag_records{partition="0",topic="guard.tokens"} 0.0' in _get(f"{base}/metrics")[1].decode()
