"""Faults under worker traffic, on real brokers and Redis: workers crashing, joining, leaving and
freezing; a broker restarted; a node of a three-node cluster killed.

After each fault every prompt and chunk has exactly one effective verdict (one distinct event id;
redelivered copies carry the same id and the same decision), every unsafe message exactly one
cut-off, no benign message any, and nothing is dead-lettered. The planted test model makes the
verdicts known in advance: "DETONATE" is unsafe, everything else safe.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, worker_settings
from topics.events import Message, Role
from workers.client import GuardClient
from workers.infra import LocalKafka, ensure_topics
from workers.runner import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
TRIGGER = "DETONATE "


@dataclass
class Traffic:
    """Conversations streamed at a steady pace; every ``unsafe_every``-th turns unsafe part-way."""

    client: GuardClient
    conversations: int
    chunks: int
    delay_s: float
    unsafe_every: int = 4
    cids: list[str] = field(default_factory=list)
    unsafe: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.cids = [f"f{i}-{tag}" for i in range(self.conversations)]
        self.unsafe = {c for i, c in enumerate(self.cids) if i % self.unsafe_every == 0}

    def pieces(self, cid: str) -> list[str]:
        words = [f"river{i} " for i in range(self.chunks)]
        if cid in self.unsafe:
            words[self.chunks // 2] = TRIGGER
        return words

    async def _one(self, cid: str, start_delay_s: float) -> None:
        await asyncio.sleep(start_delay_s)
        await self.client.publish_prompt(cid, "m1", [Message(role=Role.USER, content="Tell me about rivers.")])
        writer = self.client.stream(cid, "m1")
        for piece in self.pieces(cid):
            # Every chunk is published, cut off or not: later chunks get ``after_cutoff`` verdicts,
            # so each one must still be answered exactly once.
            await writer.send(piece)
            await asyncio.sleep(self.delay_s)
        await writer.finish()

    def run(self) -> asyncio.Future[list[None]]:
        """Start every conversation (spread over one chunk interval) and return their gathering."""
        spread = self.delay_s / max(1, self.conversations)
        return asyncio.gather(*(self._one(c, i * spread) for i, c in enumerate(self.cids)))

    @property
    def expected_verdicts(self) -> int:
        return self.conversations * (self.chunks + 2)  # prompt + chunks + the final chunk


async def wait_and_check(obs: Observer, traffic: Traffic, *, within_s: float) -> None:
    """Wait until every prompt and chunk has a verdict, then check the invariants of the module docstring."""
    await obs.wait_for(
        lambda: len({v.event_id for v in obs.verdicts}) >= traffic.expected_verdicts,
        within_s=within_s,
        what="a verdict for every prompt and chunk",
    )
    await asyncio.sleep(1.0)  # late duplicates and cut-offs, if any, arrive too
    for cid in traffic.cids:
        effective = obs.effective(cid)
        assert set(effective) == {None, *range(traffic.chunks + 1)}, (cid, sorted(effective, key=str))
        assert all(len(ids) == 1 for ids in effective.values()), (cid, effective)
        decisions: dict[str, set[tuple[str, str, str]]] = {}
        for v in obs.of(cid):
            decisions.setdefault(v.event_id, set()).add((v.risk.value, v.action.value, v.status.value))
        assert all(len(d) == 1 for d in decisions.values()), f"copies of one verdict disagree: {cid} {decisions}"
        cut_ids = {c.event_id for c in obs.controls_of(cid)}
        if cid in traffic.unsafe:
            assert len(cut_ids) == 1, (cid, obs.controls_of(cid))
        else:
            assert not cut_ids, (cid, obs.controls_of(cid))
    assert not obs.dead, [(d.reason, d.detail) for d in obs.dead[:5]]


@dataclass
class Fleet:
    """Worker processes of one consumer group on fresh topics, started and stopped by name."""

    bootstrap: str
    run_dir: Path
    settings: dict[str, object]
    workers: dict[str, WorkerProcess] = field(default_factory=dict)

    async def start(self, *names: str) -> None:
        new = [new_worker(n, self.run_dir, self.settings) for n in names]
        self.workers.update(zip(names, new, strict=True))
        await asyncio.gather(*(w.start() for w in new))

    async def stop_all(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()))

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{w.log_tail(20)}" for n, w in self.workers.items())


@pytest_asyncio.fixture
async def fleet(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=PARTITIONS)
    settings = worker_settings(
        kafka_bootstrap, redis_url, prefix, planted_checkpoint(tmp_path_factory.getbasetemp()), PARTITIONS
    )
    fleet = Fleet(kafka_bootstrap, tmp_path, settings)
    try:
        yield fleet
    finally:
        await fleet.stop_all()


def _prefix(fleet: Fleet) -> str:
    return str(fleet.settings["kafka.topic_prefix"])


async def test_one_of_three_workers_killed_under_load(fleet: Fleet) -> None:
    await fleet.start("w1", "w2", "w3")
    async with (
        GuardClient(fleet.bootstrap, topic_prefix=_prefix(fleet)) as client,
        Observer(fleet.bootstrap, _prefix(fleet)) as obs,
    ):
        traffic = Traffic(client, conversations=36, chunks=40, delay_s=0.1)
        streams = traffic.run()
        await asyncio.sleep(1.5)  # mid-stream, before any conversation reaches its trigger
        fleet.workers["w2"].kill()
        await streams
        await wait_and_check(obs, traffic, within_s=90)
        survivors = {fleet.workers[n].announcement()["worker_id"] for n in ("w1", "w3")}
        late = [v for v in obs.verdicts if v.seq is not None and v.seq >= 30]
        assert {v.worker_id for v in late} <= survivors, "a killed worker published after its death"


async def test_rebalance_storm_workers_joining_and_leaving_repeatedly(fleet: Fleet) -> None:
    await fleet.start("w1")
    async with (
        GuardClient(fleet.bootstrap, topic_prefix=_prefix(fleet)) as client,
        Observer(fleet.bootstrap, _prefix(fleet)) as obs,
    ):
        traffic = Traffic(client, conversations=24, chunks=300, delay_s=0.1)
        streams = traffic.run()
        # Joins, clean leaves and a crash, each a rebalance of the whole group, while 24
        # conversations stream for about 30 s.
        await fleet.start("w2")
        await fleet.start("w3")
        await fleet.workers["w1"].stop()
        await fleet.start("w4")
        fleet.workers["w2"].kill()
        await fleet.workers["w3"].stop()
        await streams
        await wait_and_check(obs, traffic, within_s=120)
        workers = {v.worker_id for v in obs.verdicts}
        assert len(workers) >= 3, f"the storm moved no work: {workers}\n{fleet.logs()}"


async def test_a_frozen_worker_that_wakes_after_losing_its_partitions_is_fenced(fleet: Fleet) -> None:
    await fleet.start("w1", "w2")
    zombie = fleet.workers["w1"]
    pid = zombie.pid
    assert pid is not None
    async with (
        GuardClient(fleet.bootstrap, topic_prefix=_prefix(fleet)) as client,
        Observer(fleet.bootstrap, _prefix(fleet)) as obs,
    ):
        traffic = Traffic(client, conversations=24, chunks=120, delay_s=0.1)
        streams = traffic.run()
        await asyncio.sleep(1.5)
        os.kill(pid, signal.SIGSTOP)  # mid-step: records fetched, some scored, none committed yet
        try:
            # Its session expires (kafka.session_timeout_s 6 s) and w2 takes its partitions over,
            # bumping their owner epochs; then the frozen worker wakes with its old view.
            await asyncio.sleep(9.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        await streams
        await wait_and_check(obs, traffic, within_s=120)
    fenced = zombie.log_path.read_text(errors="replace").count("moved to a newer owner")
    taken_over = {v.worker_id for v in obs.verdicts if v.seq is not None and 30 <= v.seq < 90}
    assert fleet.workers["w2"].announcement()["worker_id"] in taken_over
    # Fencing is what made the zombie's late writes harmless; when it happened, it was logged.
    print(f"zombie writes fenced: {fenced}")


async def _worker_on(kafka: LocalKafka, redis_url: str, run_dir: Path, checkpoint: Path, **extra: object) -> Fleet:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    replication = int(str(extra.pop("replication", 1)))
    await ensure_topics(kafka.bootstrap_servers, prefix=prefix, partitions=PARTITIONS, replication=replication)
    settings = worker_settings(kafka.bootstrap_servers, redis_url, prefix, checkpoint, PARTITIONS)
    settings["kafka.replication"] = replication
    settings.update(extra)
    return Fleet(kafka.bootstrap_servers, run_dir, settings)


async def test_a_single_broker_restarted_under_traffic_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    async with LocalKafka(nodes=1, run_dir=tmp_path / "kafka") as kafka:
        fleet = await _worker_on(kafka, redis_url, tmp_path / "run", planted_checkpoint(tmp_path))
        await fleet.start("w1")
        try:
            async with (
                GuardClient(kafka.bootstrap_servers, topic_prefix=_prefix(fleet)) as client,
                Observer(kafka.bootstrap_servers, _prefix(fleet)) as obs,
            ):
                traffic = Traffic(client, conversations=12, chunks=80, delay_s=0.1)
                streams = traffic.run()
                await asyncio.sleep(2.0)
                await kafka.kill_node(1)  # a crash, not a controlled shutdown
                await kafka.restart_node(1)  # same ports, same data
                await streams
                await wait_and_check(obs, traffic, within_s=120)
        finally:
            await fleet.stop_all()


async def test_a_node_of_three_killed_during_traffic_loses_nothing(
    three_node_cluster: LocalKafka, redis_url: str, tmp_path: Path
) -> None:
    kafka = three_node_cluster
    # Replication 3 with min.insync.replicas 2: acks=all writes go on with one node down.
    fleet = await _worker_on(kafka, redis_url, tmp_path / "run", planted_checkpoint(tmp_path), replication=3)
    await fleet.start("w1", "w2")
    try:
        async with (
            GuardClient(kafka.bootstrap_servers, topic_prefix=_prefix(fleet)) as client,
            Observer(kafka.bootstrap_servers, _prefix(fleet)) as obs,
        ):
            traffic = Traffic(client, conversations=18, chunks=80, delay_s=0.1)
            streams = traffic.run()
            await asyncio.sleep(2.0)
            victim = next(i for i in kafka.node_ids if i != kafka.controller_id())
            await kafka.kill_node(victim)
            await streams
            await wait_and_check(obs, traffic, within_s=120)
    finally:
        await fleet.stop_all()
