"""``GuardClient``: publish prompts and streamed chunks, and learn of cut-offs.

The client keeps a consumer on the control topic (all partitions, from the end at start-up, no
consumer group), so every cut-off published after ``start()`` reaches it. ``guarded()`` wraps the
LLM's async stream of text pieces: each piece is published as the next chunk and passed on to the
caller, and the wrapper stops pulling from the LLM as soon as the conversation's message is cut
off (it closes the source generator, which is how an asyncio generation is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from topics import codec
from topics.errors import DecodeError
from topics.events import ControlEvent, Message, PromptEvent, TokenChunkEvent
from topics.names import DEFAULT_PREFIX, Topic
from workers.kafka_auth import KafkaAuth

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Cut:
    """A cut-off as it reached this client."""

    event: ControlEvent
    received: float  # time.perf_counter() on arrival
    published: float  # the control record's timestamp, in seconds since the epoch


class GuardClient:
    """Producer-side helper. Use as ``async with GuardClient(servers) as client:``.

    ``auth`` (``workers.kafka_auth.KafkaAuth``) authenticates to a broker with SASL and/or TLS.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        client_id: str = "streamwarden-producer",
        linger_ms: int = 0,
        auth: KafkaAuth | None = None,
    ) -> None:
        security = (auth or KafkaAuth()).client_options()
        self._prefix = topic_prefix
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            **security,
        )
        self._control = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{client_id}-control",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            **security,
        )
        self._cuts: dict[tuple[str, str], _Cut] = {}
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._control.start()
        topic = Topic.CONTROL.full_name(self._prefix)
        partitions = await self._control_partitions(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        self._control.assign(tps)
        await self._control.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so no cut-off after start() is missed
            await self._control.position(tp)
        self._listener = asyncio.create_task(self._listen(), name="guard-client-control")

    async def _control_partitions(self, topic: str) -> list[int]:
        for _ in range(50):
            partitions = self._control.partitions_for_topic(topic)
            if partitions:
                return sorted(partitions)
            await self._control._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"control topic {topic!r} does not exist; create the topics first")

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._control.stop()
        await self._producer.stop()

    async def __aenter__(self) -> GuardClient:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- publishing -------------------------------------------------------------------------------

    async def publish_prompt(
        self,
        conversation_id: str,
        message_id: str,
        messages: Sequence[Message],
        *,
        policy: str | None = None,
        tenant: str | None = None,
    ) -> PromptEvent:
        """Publish the conversation so far; its last user message is judged. Waits for the broker."""
        event = PromptEvent(
            conversation_id=conversation_id,
            message_id=message_id,
            messages=tuple(messages),
            policy=policy,
            tenant=tenant,
        )
        await self.publish(Topic.PROMPTS, conversation_id, codec.encode(event))
        return event

    async def publish(self, topic: Topic, key: str, value: bytes, *, wait: bool = True) -> None:
        """Publish raw bytes keyed by conversation (also how tests send malformed records)."""
        fut = await self._producer.send(topic.full_name(self._prefix), value=value, key=key.encode())
        if wait:
            await fut

    def stream(self, conversation_id: str, message_id: str) -> ChunkWriter:
        """A writer that numbers a message's chunks 0, 1, 2, ..."""
        return ChunkWriter(self, conversation_id, message_id)

    def guarded(self, conversation_id: str, message_id: str, source: AsyncIterable[str]) -> GuardedStream:
        """Publish each text piece of ``source`` and pass it on, until the message is cut off."""
        return GuardedStream(self, self.stream(conversation_id, message_id), source)

    # -- cut-offs ---------------------------------------------------------------------------------

    def cutoff(self, conversation_id: str, message_id: str) -> ControlEvent | None:
        """The cut-off of a message, if one has arrived."""
        cut = self._cuts.get((conversation_id, message_id))
        return cut.event if cut else None

    def cutoff_received_at(self, conversation_id: str, message_id: str) -> float | None:
        """``time.perf_counter()`` when the message's cut-off reached this client, if it has."""
        cut = self._cuts.get((conversation_id, message_id))
        return cut.received if cut else None

    def cutoff_published_at(self, conversation_id: str, message_id: str) -> float | None:
        """When the worker published the message's cut-off (``time.time()`` scale), if it arrived.

        This is the control record's Kafka timestamp: the worker's send time with the topic's
        default ``CreateTime``, so comparing it with this host's clock is only exact on one host.
        """
        cut = self._cuts.get((conversation_id, message_id))
        return cut.published if cut else None

    async def wait_cutoff(self, conversation_id: str, message_id: str, within_s: float) -> ControlEvent | None:
        """Wait up to ``within_s`` seconds for the message's cut-off."""
        key = (conversation_id, message_id)
        if key not in self._cuts:
            event = self._waiters.setdefault(key, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), within_s)
        return self.cutoff(conversation_id, message_id)

    async def _listen(self) -> None:
        while True:
            batches = await self._control.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    self._on_control(record.value or b"", record.timestamp / 1000)

    def _on_control(self, raw: bytes, published: float) -> None:
        try:
            event = codec.decode(raw, ControlEvent)
        except DecodeError as exc:
            logger.warning("ignoring an undecodable control record: %s", exc)
            return
        key = (event.conversation_id, event.message_id)
        if key not in self._cuts:
            self._cuts[key] = _Cut(event, time.perf_counter(), published)
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            waiter.set()


class ChunkWriter:
    """Publishes one message's chunks in order; sends are pipelined, ``finish`` waits for all."""

    def __init__(self, client: GuardClient, conversation_id: str, message_id: str) -> None:
        self._client = client
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.seq = 0
        self._pending: list[asyncio.Future[object]] = []

    async def send(
        self, text: str | None = None, *, token_ids: Sequence[int] | None = None, final: bool = False
    ) -> TokenChunkEvent:
        event = TokenChunkEvent(
            conversation_id=self.conversation_id,
            message_id=self.message_id,
            seq=self.seq,
            text=text,
            token_ids=tuple(token_ids) if token_ids is not None else None,
            final=final,
        )
        self.seq += 1
        producer = self._client._producer
        fut = await producer.send(
            Topic.TOKENS.full_name(self._client._prefix),
            value=codec.encode(event),
            key=self.conversation_id.encode(),
        )
        self._pending.append(fut)
        return event

    async def finish(self) -> TokenChunkEvent:
        """Send the final (empty) chunk and wait until every chunk is acknowledged by the broker."""
        event = await self.send("", final=True)
        await self.flush()
        return event

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)


class GuardedStream:
    """``async for piece in client.guarded(cid, mid, llm_stream)``; ``cutoff`` is set if it was cut."""

    def __init__(self, client: GuardClient, writer: ChunkWriter, source: AsyncIterable[str]) -> None:
        self._client = client
        self._writer = writer
        self._source = source
        self.cutoff: ControlEvent | None = None
        self.pieces = 0

    def _cut(self) -> bool:
        self.cutoff = self._client.cutoff(self._writer.conversation_id, self._writer.message_id)
        return self.cutoff is not None

    async def __aiter__(self) -> AsyncIterator[str]:
        iterator = aiter(self._source)
        try:
            while not self._cut():
                try:
                    piece = await anext(iterator)
                except StopAsyncIteration:
                    await self._writer.finish()
                    return
                if self._cut():  # the cut arrived while the model was generating this piece
                    return
                await self._writer.send(piece)
                self.pieces += 1
                yield piece
        finally:
            await self._writer.flush()
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()  # stops the generation
