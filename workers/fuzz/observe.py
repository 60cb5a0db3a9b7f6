"""Reading back what the worker published: verdicts, cut-offs and dead letters, indexed for the checks.

The observer reads the three output topics of one prefix from the beginning, decodes every record
with the wire codec (a record that does not decode is itself a failure, counted in
``undecodable``), and notes when each arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from types import TracebackType

from aiokafka import AIOKafkaConsumer

from topics import codec
from topics.errors import DecodeError
from topics.events import ControlEvent, DeadLetter, VerdictEvent
from topics.names import Topic

OUTPUTS: tuple[Topic, ...] = (Topic.VERDICTS, Topic.CONTROL, Topic.DEAD_LETTER)


@dataclass
class Observed:
    """Everything read so far, by conversation (verdicts, cut-offs) and by source record (dead letters)."""

    verdicts: dict[str, list[VerdictEvent]] = field(default_factory=lambda: defaultdict(list))
    controls: dict[str, list[ControlEvent]] = field(default_factory=lambda: defaultdict(list))
    dead: dict[tuple[str, int, int], list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))
    arrived: dict[str, float] = field(default_factory=dict)  # verdict event id -> first arrival (monotonic)
    undecodable: int = 0
    records: int = 0
    last_arrival: float = 0.0


class Observer:
    """``async with Observer(bootstrap, prefix) as obs:`` collects into ``obs.seen`` until the block ends."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self._names = {t.full_name(prefix): t for t in OUTPUTS}
        self._consumer = AIOKafkaConsumer(
            *self._names,
            bootstrap_servers=bootstrap,
            group_id=f"fuzz-observer-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 << 20,
        )
        self.seen = Observed()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="fuzz-observer")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for tp, records in batches.items():
                for r in records:
                    self._add(self._names[tp.topic], r.value or b"", now)

    def _add(self, topic: Topic, raw: bytes, now: float) -> None:
        seen = self.seen
        seen.records += 1
        seen.last_arrival = now
        try:
            event = codec.decode_any(raw)
        except DecodeError:
            seen.undecodable += 1
            return
        if topic is Topic.VERDICTS and isinstance(event, VerdictEvent):
            seen.verdicts[event.conversation_id].append(event)
            seen.arrived.setdefault(event.event_id, now)
        elif topic is Topic.CONTROL and isinstance(event, ControlEvent):
            seen.controls[event.conversation_id].append(event)
        elif topic is Topic.DEAD_LETTER and isinstance(event, DeadLetter):
            seen.dead[(event.source_topic, event.source_partition, event.source_offset)].append(event)
        else:
            seen.undecodable += 1
