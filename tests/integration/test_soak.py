"""Soak: conversations starting and ending without pause; the worker's memory (its engine process
included) and Redis's stay flat, and latency does not drift.

CI runs it for ``SOAK_S`` (90 s); the long run is the same test with a longer duration:
``SOAK_S=1800 .venv/bin/python -m pytest tests/integration/test_soak.py -s``. The run is cut into
thirds: the first warms up, and the last is compared with the middle one.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, stream_benign, worker_settings
from topics.events import Stage
from workers.client import GuardClient
from workers.fuzz.rss import rss_kib
from workers.infra import LocalRedis, ensure_topics

SOAK_S = float(os.environ.get("SOAK_S", "90"))

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]
STREAMS = 8  # conversations streaming at any moment
CHUNKS = 16  # per answer, 50 ms apart: about 10 conversations and 165 chunks per second in all
SAMPLE_S = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds into the run
    worker_mib: float
    redis_mib: float
    redis_keys: int


async def _converse(client: GuardClient, started: list[str], until: float) -> None:
    while time.monotonic() < until:
        cid = f"s-{uuid.uuid4().hex[:10]}"
        started.append(cid)
        await stream_benign(client, cid, chunks=CHUNKS, delay_s=0.05)


async def _sample(worker_pid: int, redis: aioredis.Redis, began: float, samples: list[Sample]) -> None:
    while True:
        kib = rss_kib(worker_pid) or 0
        memory = await redis.info("memory")
        keys = await redis.dbsize()
        samples.append(Sample(time.monotonic() - began, kib / 1024, memory["used_memory"] / 2**20, keys))
        await asyncio.sleep(SAMPLE_S)


def _third(values: list[tuple[float, float]], which: int) -> list[float]:
    """The values whose time falls in third ``which`` (0, 1, 2) of the run."""
    return [v for at, v in values if which * SOAK_S / 3 <= at < (which + 1) * SOAK_S / 3]


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def test_memory_stays_flat_and_latency_does_not_drift_while_conversations_come_and_go(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"soak{uuid.uuid4().hex[:6]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=4)
    async with LocalRedis(run_dir=tmp_path / "redis") as local_redis:
        settings = worker_settings(kafka_bootstrap, local_redis.url, prefix, planted_checkpoint(tmp_path), 4)
        settings["redis.finished_ttl_s"] = 5  # ended turns leave Redis within seconds, as in production after 10 min
        redis = aioredis.Redis.from_url(local_redis.url)
        samples: list[Sample] = []
        started: list[str] = []
        async with (
            new_worker("soak", tmp_path / "run", settings) as worker,
            Observer(kafka_bootstrap, prefix) as obs,
            GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        ):
            assert worker.pid is not None
            began = time.monotonic()
            sampler = asyncio.create_task(_sample(worker.pid, redis, began, samples))
            until = began + SOAK_S
            await asyncio.gather(*(_converse(client, started, until) for _ in range(STREAMS)))
            await obs.wait_for(
                lambda: all(set(obs.effective(c)) == {None, *range(CHUNKS + 1)} for c in started),
                within_s=30,
                what="a verdict for every prompt and chunk",
            )
            caught_up_s = time.monotonic() - until
            sampler.cancel()
            await redis.aclose()
            first_ms = min(v.ts_ms for v in obs.verdicts)
            latency = [((v.ts_ms - first_ms) / 1000, v.latency_ms) for v in obs.verdicts if v.stage is Stage.RESPONSE]
            for cid in started:
                assert all(len(ids) == 1 for ids in obs.effective(cid).values()), cid
            assert not obs.dead, [d.reason for d in obs.dead]

    worker_mib = [(s.at, s.worker_mib) for s in samples]
    redis_mib = [(s.at, s.redis_mib) for s in samples]
    redis_keys = [(s.at, float(s.redis_keys)) for s in samples]
    middle, last = 1, 2
    report = {
        "duration_s": SOAK_S,
        "conversations": len(started),
        "chunks": len(started) * (CHUNKS + 1),
        "caught_up_s": round(caught_up_s, 2),
        **{
            f"{name}_{part}": round(statistics.median(_third(series, which)), 2)
            for name, series in (("worker_mib", worker_mib), ("redis_mib", redis_mib), ("redis_keys", redis_keys))
            for part, which in (("middle", middle), ("last", last))
        },
        **{
            f"chunk_latency_p{q}_ms_{part}": round(_p(_third(latency, which), q), 1)
            for q in (50, 99)
            for part, which in (("first", 0), ("middle", middle), ("last", last))
        },
    }
    print(json.dumps(report, indent=1))
    # Flat: the last third's medians at the middle third's, give or take allocator noise (16 MiB of
    # a worker of about 2 GiB); Redis holds the open turns and the last 5 s of ended ones, not every one.
    assert report["worker_mib_last"] <= report["worker_mib_middle"] + 16, report
    assert report["redis_mib_last"] <= report["redis_mib_middle"] * 1.2 + 1, report
    assert report["redis_keys_last"] <= report["redis_keys_middle"] * 1.5 + 20, report
    assert report["redis_keys_last"] < len(started), report  # ended turns do leave
    # No drift: the last third's latency is the middle third's, give or take the machine's noise.
    assert report["chunk_latency_p50_ms_last"] <= 2 * report["chunk_latency_p50_ms_middle"] + 20, report
    assert report["chunk_latency_p99_ms_last"] <= 3 * report["chunk_latency_p99_ms_middle"] + 50, report
    assert caught_up_s < 10, report
