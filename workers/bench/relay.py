"""The pipeline benchmark's baseline: a bare relay from the tokens topic to the verdicts topic.

It does what a guard worker does at the Kafka level (consume as a group, produce keyed records,
commit) and nothing else, so its latency is the floor of two Kafka hops on this machine.
Run as ``python -m workers.bench.relay BOOTSTRAP PREFIX``.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from topics.names import Topic


async def relay(bootstrap: str, prefix: str) -> None:
    consumer = AIOKafkaConsumer(
        Topic.TOKENS.full_name(prefix),
        bootstrap_servers=bootstrap,
        group_id=f"relay-{prefix}",
        auto_offset_reset="latest",
        enable_auto_commit=True,
        fetch_max_wait_ms=5,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    out = Topic.VERDICTS.full_name(prefix)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            sends = [await producer.send(out, r.value, key=r.key) for records in batches.values() for r in records]
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(relay(sys.argv[1], sys.argv[2]))
