"""``VerdictConsumer``: read verdicts as a consumer group, each verdict id once.

Verdicts are published at least once; a verdict re-emitted after a worker crash carries the same
``event_id``. The consumer drops ids it has already delivered (within a bounded window). It never
commits on its own: the caller calls ``commit()`` once everything yielded so far is durably
handled, so a crash re-delivers what was not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from types import TracebackType

from aiokafka import AIOKafkaConsumer

from topics import codec
from topics.errors import DecodeError
from topics.events import VerdictEvent
from topics.names import DEFAULT_PREFIX, Topic
from workers.kafka_auth import KafkaAuth


class VerdictConsumer:
    """Use as ``async with VerdictConsumer(servers, group_id="archive") as verdicts:``.

    ``auth`` (``workers.kafka_auth.KafkaAuth``) authenticates to a broker with SASL and/or TLS.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        group_id: str,
        topic_prefix: str = DEFAULT_PREFIX,
        from_beginning: bool = True,
        dedupe_window: int = 1_000_000,
        auth: KafkaAuth | None = None,
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            Topic.VERDICTS.full_name(topic_prefix),
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            fetch_max_wait_ms=50,
            **(auth or KafkaAuth()).client_options(),
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._window = dedupe_window
        self.duplicates = 0
        self.undecodable = 0

    async def __aenter__(self) -> VerdictConsumer:
        await self._consumer.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def batches(self, timeout_ms: int = 200) -> AsyncIterator[list[VerdictEvent]]:
        """Yield batches of new verdicts (possibly empty, every ``timeout_ms`` at most)."""
        while True:
            records = await self._consumer.getmany(timeout_ms=timeout_ms)
            yield [v for recs in records.values() for r in recs if (v := self._accept(r.value or b""))]

    async def commit(self) -> None:
        """Commit the position after everything yielded so far."""
        await self._consumer.commit()

    def _accept(self, raw: bytes) -> VerdictEvent | None:
        try:
            verdict = codec.decode(raw, VerdictEvent)
        except DecodeError:
            self.undecodable += 1
            return None
        if verdict.event_id in self._seen:
            self.duplicates += 1
            return None
        self._seen[verdict.event_id] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
        return verdict
