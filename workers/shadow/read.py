"""Reading the live and shadow verdict topics for a comparison.

Both topics are read with manually assigned partitions (no consumer group, nothing committed), from
the beginning or from the first record at or after ``since_ms`` (a Kafka timestamp), and records
with a timestamp at or after ``until_ms`` are left out. Reading stops once no record has arrived
on either topic for ``idle_s``, or once ``max_records`` have been read from both together. Records
that do not decode as verdicts are counted, not fatal.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from topics import codec
from topics.errors import DecodeError
from topics.events import VerdictEvent
from topics.names import Topic


@dataclass(frozen=True, slots=True)
class ReadWindow:
    since_ms: int | None = None
    until_ms: int | None = None
    idle_s: float = 3.0
    max_records: int | None = None


@dataclass(slots=True)
class ReadVerdicts:
    live: list[VerdictEvent] = field(default_factory=list)
    shadow: list[VerdictEvent] = field(default_factory=list)
    undecodable: int = 0


async def read_verdicts(bootstrap: str, prefix: str, window: ReadWindow) -> ReadVerdicts:
    """The verdicts of both topics under ``prefix`` within ``window`` (see the module docstring)."""
    live_topic, shadow_topic = Topic.VERDICTS.full_name(prefix), Topic.SHADOW_VERDICTS.full_name(prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    out = ReadVerdicts()
    try:
        partitions = []
        for topic in (live_topic, shadow_topic):
            partitions += [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await _seek(consumer, partitions, window.since_ms)
        last = time.monotonic()
        total = 0
        while time.monotonic() - last < window.idle_s:
            batches = await consumer.getmany(timeout_ms=min(200, max(1, int(window.idle_s * 1000))))
            for tp, records in batches.items():
                for record in records:
                    last = time.monotonic()
                    total += 1
                    if window.until_ms is not None and record.timestamp >= window.until_ms:
                        continue
                    try:
                        verdict = codec.decode(record.value or b"", VerdictEvent)
                    except DecodeError:
                        out.undecodable += 1
                        continue
                    (out.live if tp.topic == live_topic else out.shadow).append(verdict)
            if window.max_records is not None and total >= window.max_records:
                break
    finally:
        await consumer.stop()
    return out


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partitions of ``topic``, waiting for metadata; a topic that does not exist is an error."""
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()  # aiokafka has no public metadata refresh
        await asyncio.sleep(0.1)
    raise LookupError(f"topic {topic} does not exist (was it created with `streamwarden topics create`?)")


async def _seek(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int | None) -> None:
    if since_ms is None:
        await consumer.seek_to_beginning(*partitions)
        return
    offsets = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        at = offsets.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])
