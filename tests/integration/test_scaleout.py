"""Workers as a consumer group: partitions split between two workers, and a crashed worker's
conversations taken over by the other with every chunk moderated exactly once (effectively)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, worker_settings
from topics.events import Message, Role, Stage
from workers.client import GuardClient
from workers.infra import ensure_topics
from workers.runner import WorkerProcess

pytestmark = pytest.mark.integration

PARTITIONS = 6


async def _stream(client: GuardClient, cid: str, pieces: list[str], delay_s: float) -> None:
    await client.publish_prompt(cid, "m1", [Message(role=Role.USER, content="Tell me about rivers.")])
    writer = client.stream(cid, "m1")
    for piece in pieces:
        await writer.send(piece)
        await asyncio.sleep(delay_s)
    await writer.finish()


def _check_exactly_once(obs: Observer, cids: list[str], chunks: int) -> None:
    for c in cids:
        effective = obs.effective(c)
        assert set(effective) == {None, *range(chunks)}, (c, sorted(effective, key=str))
        assert all(len(ids) == 1 for ids in effective.values()), (c, effective)


@dataclass
class Group:
    """Two workers in one consumer group, a producer client and an observer, on fresh topics."""

    workers: tuple[WorkerProcess, WorkerProcess]
    client: GuardClient
    obs: Observer


@pytest_asyncio.fixture
async def group(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Group]:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=PARTITIONS)
    settings = worker_settings(
        kafka_bootstrap, redis_url, prefix, planted_checkpoint(tmp_path_factory.getbasetemp()), PARTITIONS
    )
    workers = (new_worker("w1", tmp_path, settings), new_worker("w2", tmp_path, settings))
    await asyncio.gather(*(w.start() for w in workers))
    try:
        async with (
            GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
            Observer(kafka_bootstrap, prefix) as obs,
        ):
            yield Group(workers, client, obs)
    finally:
        await asyncio.gather(*(w.stop() for w in workers))


async def test_two_workers_split_partitions_and_moderate_each_chunk_once(group: Group) -> None:
    client, obs = group.client, group.obs
    cids = [f"conv-{i}-{uuid.uuid4().hex[:6]}" for i in range(24)]
    pieces = [f"word{i} " for i in range(8)]
    await asyncio.gather(*(_stream(client, c, pieces, delay_s=0.01) for c in cids))
    expected = len(cids) * (len(pieces) + 2)  # prompt + chunks + final
    await obs.wait_for(lambda: len(obs.verdicts) >= expected, within_s=60, what="every verdict")
    _check_exactly_once(obs, cids, len(pieces) + 1)
    workers = {v.worker_id for v in obs.verdicts}
    assert workers == {w.announcement()["worker_id"] for w in group.workers}
    # Each conversation was moderated by exactly one worker (co-partitioning).
    for c in cids:
        assert len({v.worker_id for v in obs.of(c)}) == 1


async def test_crashed_worker_is_replaced_without_losing_or_repeating_verdicts(group: Group) -> None:
    client, obs = group.client, group.obs
    victim, survivor = group.workers
    cids = [f"conv-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    pieces = [f"word{i} " for i in range(30)]
    unsafe = cids[0]
    streams = [
        asyncio.create_task(
            _stream(client, c, pieces if c != unsafe else [*pieces[:20], "DETONATE ", *pieces[20:]], 0.1)
        )
        for c in cids
    ]
    await asyncio.sleep(1.5)  # mid-stream
    victim.kill()  # SIGKILL: no clean leave, unacked records are redelivered to the survivor
    await asyncio.gather(*streams)
    total = len(cids) * (len(pieces) + 2) + 1
    await obs.wait_for(lambda: len({v.event_id for v in obs.verdicts}) >= total, within_s=90, what="all verdicts")
    for c in cids:
        chunks = len(pieces) + (2 if c == unsafe else 1)
        _check_exactly_once(obs, [c], chunks)
    controls = obs.controls_of(unsafe)
    assert controls and len({c.event_id for c in controls}) == 1
    assert all(not obs.controls_of(c) for c in cids[1:])
    late = [
        v for v in obs.verdicts if v.stage is Stage.RESPONSE and v.worker_id == survivor.announcement()["worker_id"]
    ]
    assert late, "the survivor took over nothing"
