"""Redis down for seconds under traffic: events wait and are retried, none is dead-lettered or lost."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.integration.endpoints import samples, unlabelled, watch_health
from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, stream_benign, worker_settings
from topics.events import Stage, VerdictStatus
from topics.names import Topic
from workers.client import GuardClient
from workers.infra import LocalRedis, ensure_topics
from workers.infra.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHUNKS = 40


async def _stream(client: GuardClient, cid: str) -> None:
    await stream_benign(client, cid, chunks=CHUNKS, delay_s=0.05)


def _partition_series(port: int, name: str, topic: str) -> dict[int, float]:
    """Series ``name`` of ``topic``'s partitions, keyed by partition."""
    found: dict[int, float] = {}
    for sample, value in samples(port).items():
        series, _, labels = sample.partition("{")
        if series == name and f'topic="{topic}"' in labels:
            found[int(labels.split('partition="')[1].split('"')[0])] = value
    return found


async def test_redis_stopped_and_restarted_mid_stream_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=2)
    async with LocalRedis(run_dir=tmp_path / "redis") as redis:
        settings = worker_settings(kafka_bootstrap, redis.url, prefix, planted_checkpoint(tmp_path), 2)
        settings["worker.prompt_wait_s"] = 30.0  # chunks wait for their prompt across the outage
        settings["worker.reorder_wait_s"] = 30.0
        (port,) = free_ports(1)
        settings["worker.metrics_port"] = port
        settings["worker.health_interval_s"] = 0.5
        health: list[tuple[int, str]] = []
        async with (
            new_worker("w1", tmp_path / "run", settings) as worker,
            Observer(kafka_bootstrap, prefix) as obs,
            GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        ):
            watcher = asyncio.create_task(watch_health(port, health))
            await obs.wait_for(lambda: bool(health) and health[-1][0] == 200, within_s=30, what="/healthz 200")
            cids = [f"c{i}-{uuid.uuid4().hex[:6]}" for i in range(8)]
            streams = asyncio.gather(*(_stream(client, c) for c in cids))
            await asyncio.sleep(0.6)
            before = len(health)
            await redis.restart(down_s=4.0, crash=False)  # 4 s of connection refused, data kept
            down = [reason for status, reason in health[before:] if status == 503]
            assert down and all("redis" in reason for reason in down), health[before:]
            await streams
            await obs.wait_for(lambda: health[-1][0] == 200, within_s=30, what="/healthz 200 again")
            watcher.cancel()
            metrics = unlabelled(port)
            assert metrics["guard_engine_forwards_total"] > 0
            assert metrics["guard_engine_tokens_total"] >= metrics["guard_engine_rows_total"] > 0
            assert metrics["guard_store_failures_total"] > 0  # the outage's failed attempts, retried
            assert metrics["guard_kv_bytes_in_use"] >= 0
            tokens = Topic.TOKENS.full_name(prefix)
            await obs.wait_for(  # every chunk read and committed: no partition of this worker lags
                lambda: _partition_series(port, "guard_consumer_lag_records", tokens) == {0: 0.0, 1: 0.0},
                within_s=60,
                what="consumer lag 0 on both token partitions",
            )
            assert _partition_series(port, "guard_consumer_unread_records", tokens) == {0: 0.0, 1: 0.0}
            await obs.wait_for(
                lambda: all(set(obs.effective(c)) == {None, *range(CHUNKS + 1)} for c in cids),
                within_s=60,
                what="a verdict for every prompt and chunk",
            )
            for c in cids:
                assert all(len(ids) == 1 for ids in obs.effective(c).values()), obs.effective(c)
            assert not obs.dead, [d.reason for d in obs.dead]
            assert "state store unreachable" in worker.log_tail(400)
            assert "state store reachable again" in worker.log_tail(400)


async def test_redis_restarted_empty_mid_stream_cuts_the_affected_messages_off(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """State loss: every chunk still gets a verdict, and every message whose state was lost gets a
    cut-off (the default ``guard.on_state_loss``), so no producer streams on unmoderated."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=2)
    async with LocalRedis(run_dir=tmp_path / "redis") as redis:
        settings = worker_settings(kafka_bootstrap, redis.url, prefix, planted_checkpoint(tmp_path), 2)
        async with (
            new_worker("w1", tmp_path / "run", settings),
            Observer(kafka_bootstrap, prefix) as obs,
            GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        ):
            cids = [f"c{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
            streams = asyncio.gather(*(_stream(client, c) for c in cids))
            await asyncio.sleep(0.8)
            await redis.restart(down_s=0.5, keep_data=False)  # a crash and an empty replacement
            await streams
            await obs.wait_for(
                lambda: all(set(obs.effective(c)) == {None, *range(CHUNKS + 1)} for c in cids),
                within_s=60,
                what="a verdict for every prompt and chunk",
            )
            for c in cids:
                assert obs.controls_of(c), f"{c} lost its state and was never cut off"
                statuses = {v.status for v in obs.of(c, Stage.RESPONSE)}
                assert statuses <= {VerdictStatus.MODERATED, VerdictStatus.CONTEXT_LOST, VerdictStatus.AFTER_CUTOFF}
