"""The local infrastructure against the real services: Kafka (1 and 3 nodes), Redis, topics, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.conftest import TopicsFactory
from topics.names import Topic
from topics.specs import DAY_MS
from workers.infra import LocalKafka, StartupError, TopicMismatch, delete_topics, ensure_topics
from workers.infra.kafka_admin import RETRIABLE_ERRORS, admin_client, broker_ids
from workers.settings import load_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def _consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Read ``count`` records from the start of ``topic`` through a fresh consumer group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend((m.key, m.value) for m in messages if m.key is not None and m.value is not None)
    finally:
        await consumer.stop()
    return records


async def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


# -- single broker --------------------------------------------------------------------------


async def test_broker_is_ready_and_round_trips_records(kafka_bootstrap: str, make_topics: TopicsFactory) -> None:
    assert await broker_ids(kafka_bootstrap) == {1}
    names = await make_topics(partitions=3)
    items = [(f"conv-{i}".encode(), f"chunk {i}".encode()) for i in range(20)]
    await _produce(kafka_bootstrap, names[Topic.TOKENS], items)
    received = await _consume(kafka_bootstrap, names[Topic.TOKENS], len(items))
    assert sorted(received) == sorted(items)


async def test_topics_get_the_requested_partitions_and_configs(
    kafka_bootstrap: str, make_topics: TopicsFactory, topic_prefix: str
) -> None:
    names = await make_topics(partitions=3)
    assert names[Topic.PROMPTS] == f"{topic_prefix}.prompts"
    async with admin_client(kafka_bootstrap) as admin:
        described = {t["topic"]: t for t in await admin.describe_topics(list(names.values()))}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names[Topic.VERDICTS])])
    counts = {topic: len(described[name]["partitions"]) for topic, name in names.items()}
    assert counts == {
        Topic.PROMPTS: 3,
        Topic.TOKENS: 3,
        Topic.VERDICTS: 3,
        Topic.CONTROL: 3,
        Topic.DEAD_LETTER: 1,
        Topic.SHADOW_VERDICTS: 3,
    }
    entries = {entry[0]: entry[1] for resource in configs[0].resources for entry in resource[4]}
    assert entries["retention.ms"] == str(30 * DAY_MS)

    again = await ensure_topics(kafka_bootstrap, prefix=topic_prefix, partitions=3)
    assert again.created == []
    assert sorted(again.existing) == sorted(names.values())


async def test_existing_topic_with_other_partition_count_is_an_error(
    kafka_bootstrap: str, make_topics: TopicsFactory, topic_prefix: str
) -> None:
    await make_topics(partitions=2)
    with pytest.raises(TopicMismatch, match=r"exists with 2 partitions .* but 4 partitions"):
        await ensure_topics(kafka_bootstrap, prefix=topic_prefix, partitions=4)


async def test_ensure_topics_takes_its_defaults_from_settings(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix, "partitions": 2}
    )
    ensured = await ensure_topics(settings)
    try:
        assert ensured.names[Topic.TOKENS] == f"{topic_prefix}.tokens"
        async with admin_client(kafka_bootstrap) as admin:
            described = await admin.describe_topics([ensured.names[Topic.TOKENS]])
        assert len(described[0]["partitions"]) == 2
    finally:
        await delete_topics(kafka_bootstrap, ensured.created)


async def test_a_broker_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    kafka = LocalKafka(nodes=1, run_dir=tmp_path, jvm_options=("-XX:+NoSuchJvmOption",), attempts=2)
    with pytest.raises(StartupError) as failure:
        await kafka.start()
    message = str(failure.value)
    assert "did not start in 2 attempts" in message
    assert "attempt 1:" in message and "attempt 2:" in message
    assert "NoSuchJvmOption" in message  # the JVM's own complaint, from the node's log tail
    assert not kafka.running_node_ids()


# -- Redis ------------------------------------------------------------------------------------


async def test_redis_answers_and_expires_keys(redis_client: aioredis.Redis) -> None:
    assert await redis_client.ping()
    key = f"test:{uuid.uuid4().hex}"
    await redis_client.set(key, b"state", px=300)
    assert await redis_client.get(key) == b"state"
    assert 0 < await redis_client.pttl(key) <= 300
    await asyncio.sleep(0.5)
    assert await redis_client.get(key) is None


# -- three nodes ------------------------------------------------------------------------------


async def test_three_node_cluster_lists_every_broker(three_node_cluster: LocalKafka) -> None:
    assert await broker_ids(three_node_cluster.bootstrap_servers) == {1, 2, 3}
    assert three_node_cluster.controller_id() in {1, 2, 3}


async def test_replicated_topic_survives_a_killed_node(three_node_cluster: LocalKafka, topic_prefix: str) -> None:
    kafka = three_node_cluster
    names = (await ensure_topics(kafka.bootstrap_servers, prefix=topic_prefix, partitions=3, replication=3)).names
    topic = names[Topic.VERDICTS]
    before = [(f"c{i}".encode(), f"before {i}".encode()) for i in range(30)]
    await _produce(kafka.bootstrap_servers, topic, before)

    victim = next(i for i in kafka.node_ids if i != kafka.controller_id())
    await kafka.kill_node(victim)
    assert not kafka.node(victim).running()
    survivors = kafka.node_bootstrap()
    # Two in-sync replicas remain, which min.insync.replicas=2 accepts for acks=all.
    after = [(f"c{i}".encode(), f"after {i}".encode()) for i in range(30)]
    await _produce(survivors, topic, after)
    received = await _consume(survivors, topic, len(before) + len(after), timeout_s=60.0)
    assert sorted(received) == sorted(before + after)

    await kafka.restart_node(victim)
    assert await broker_ids(kafka.bootstrap_servers) == {1, 2, 3}


async def test_paused_node_is_fenced_and_rejoins_when_resumed(three_node_cluster: LocalKafka) -> None:
    kafka = three_node_cluster
    victim = next(i for i in kafka.node_ids if i != kafka.controller_id())
    kafka.pause_node(victim)
    assert kafka.node(victim).running()
    assert victim not in kafka.running_node_ids()
    survivors = kafka.node_bootstrap()
    # A frozen broker stops heartbeating; the controller fences it after broker.session.timeout.ms.
    for _ in range(120):
        try:
            if victim not in await broker_ids(survivors):
                break
        except RETRIABLE_ERRORS:
            pass  # the admin client may pick the frozen node for its request
        await asyncio.sleep(0.5)
    else:
        pytest.fail(f"paused node {victim} was still listed after 60 s")
    kafka.resume_node(victim)
    await kafka.wait_ready({1, 2, 3}, timeout_s=60.0)
    # Each broker learns of the unfencing from the metadata log on its own schedule, and the admin
    # client asks any of them: every view must come to list all three.
    views: list[set[int]] = []
    for _ in range(60):
        try:
            views.append(await broker_ids(kafka.bootstrap_servers))
        except RETRIABLE_ERRORS:
            views.append(set())
        if views[-3:] == [{1, 2, 3}] * 3:
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail(f"the resumed node {victim} did not rejoin every broker's view in 30 s: {views[-5:]}")


# -- the CLI ----------------------------------------------------------------------------------


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_cli_up_status_down(tmp_path: Path, topic_prefix: str) -> None:
    paths = ["--run-dir", str(tmp_path / "run"), "--env-file", str(tmp_path / "infra.env")]
    pids: list[int] = []
    try:
        code, out, err = await _cli("infra", "up", "--partitions", "2", "--prefix", topic_prefix, *paths)
        assert code == 0, err
        # stdout may also carry log lines; the exports are the lines that start with "export ".
        lines = [line for line in out.splitlines() if line.startswith("export ")]
        exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        bootstrap = exports["STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS"]
        assert exports["STREAMWARDEN_KAFKA__PARTITIONS"] == "2"
        assert (tmp_path / "infra.env").read_text().splitlines() == lines

        assert await broker_ids(bootstrap) == {1}
        client = aioredis.from_url(exports["STREAMWARDEN_REDIS__URL"])
        try:
            assert await client.ping()
        finally:
            await client.aclose()
        async with admin_client(bootstrap) as admin:
            described = await admin.describe_topics([f"{topic_prefix}.tokens"])
        assert len(described[0]["partitions"]) == 2

        code, out, err = await _cli("infra", "status", "--json", *paths)
        assert code == 0, err
        status = json.loads(out)
        assert status["healthy"] and status["brokers_listed"] == [1]
        pids = [p["pid"] for p in status["processes"]]

        code, out, err = await _cli("infra", "up", "--partitions", "2", "--prefix", topic_prefix, *paths)
        assert code == 0, err
        assert "already running" in err
        assert f"STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS={bootstrap}" in out
    finally:
        code, out, err = await _cli("infra", "down", *paths)
    assert code == 0, err
    assert "stopped: kafka node 1, redis-server" in out
    assert all(_gone(pid) for pid in pids)
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "infra.env").exists()
    code, out, _ = await _cli("infra", "status", *paths)
    assert code == 0 and "nothing runs" in out


async def test_sigterm_to_a_command_stops_the_servers_it_started(tmp_path: Path) -> None:
    # What a benchmark or the demo does: start servers in an ``async with``, then get killed.
    script = f"""
import asyncio
from pathlib import Path
from workers.cli import exit_on_sigterm
from workers.infra import LocalRedis

exit_on_sigterm()

async def main():
    async with LocalRedis(run_dir=Path({str(tmp_path / "redis")!r})) as redis:
        print(redis.process.pid, flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line, "the command did not start its Redis"
    pid = int(line)
    try:
        assert not _gone(pid)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 128 + 15
        assert _gone(pid), "the Redis the command started outlived it"
    finally:
        if not _gone(pid):
            psutil.Process(pid).kill()
