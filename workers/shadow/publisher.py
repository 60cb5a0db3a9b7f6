"""Publishing shadow verdicts with a Kafka producer of their own.

The shadow does not share the live worker's producer: its records never wait in the live
producer's buffer, and a slow or failing shadow publication never delays a live verdict's
acknowledgement. Keys are conversation ids, as on the live verdicts topic, so a conversation's
live and shadow verdicts land on the same partition number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from topics import codec
from topics.events import VerdictEvent
from topics.names import Topic
from workers.kafka_auth import KafkaAuth
from workers.settings import KafkaSettings


class ShadowPublisher:
    """``publish_many`` returns once the broker has acknowledged every shadow verdict."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._topic = Topic.SHADOW_VERDICTS.full_name(kafka.topic_prefix)
        self._producer: AIOKafkaProducer | None = None

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        # aiokafka binds its producer to the running loop: it is made here, not in __init__.
        k = self._kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=k.bootstrap_servers,
            acks="all",
            linger_ms=k.producer_linger_ms,
            max_request_size=max(k.max_message_bytes, 1 << 20) + (64 << 10),
            client_id="streamwarden-shadow",
            **KafkaAuth.from_settings(k).client_options(),
        )
        await self._producer.start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish_many(self, verdicts: Sequence[VerdictEvent]) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("ShadowPublisher.start() has not been called")
        # Each send is queued before the next, so a conversation's verdicts keep their order.
        acks = [await producer.send(self._topic, codec.encode(v), key=v.conversation_id.encode()) for v in verdicts]
        await asyncio.gather(*acks)
