"""Support for end-to-end pipeline tests: a planted test model, worker processes, an observer.

The planted checkpoint (``workers.engine.planted``) runs through the real engine but has known
verdicts: "DETONATE" is unsafe, "GREYZONE" controversial, everything else safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from topics import codec
from topics.events import ControlEvent, DeadLetter, Message, Role, Stage, VerdictEvent
from topics.names import Topic
from workers.client import GuardClient
from workers.engine.planted import make_planted_checkpoint
from workers.kafka_auth import KafkaAuth
from workers.runner import WorkerProcess

_CHECKPOINTS: dict[str, Path] = {}


def planted_checkpoint(root: Path) -> Path:
    """The planted checkpoint, written once per test session under ``root``."""
    key = str(root)
    if key not in _CHECKPOINTS:
        _CHECKPOINTS[key] = make_planted_checkpoint(root / "planted")
    return _CHECKPOINTS[key]


def worker_settings(kafka: str, redis: str, prefix: str, checkpoint: Path, partitions: int) -> dict[str, object]:
    return {
        "kafka.bootstrap_servers": kafka,
        "kafka.topic_prefix": prefix,
        "kafka.partitions": partitions,
        "kafka.group_id": f"guard-{prefix}",
        "kafka.max_message_bytes": 64 * 1024,
        "kafka.session_timeout_s": 6.0,
        "redis.url": redis,
        "redis.namespace": f"test:{prefix}",
        "guard.backend": "stream",
        "guard.checkpoint": str(checkpoint),
        "guard.allow_test_checkpoint": True,
        "engine.dtype": "float32",  # the planted weights are exact in float32
        "worker.prompt_wait_s": 1.5,
        "worker.reorder_wait_s": 1.5,
        "worker.reorder_window": 8,
        "engine.max_wait_ms": 1.0,
    }


def new_worker(name: str, run_dir: Path, settings: dict[str, object]) -> WorkerProcess:
    return WorkerProcess(name, run_dir, settings)


@dataclass
class Observer:
    """Reads the verdict, control and dead-letter topics of one prefix from the beginning."""

    bootstrap: str
    prefix: str
    verdicts: list[VerdictEvent] = field(default_factory=list)
    controls: list[ControlEvent] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    auth: KafkaAuth = field(default_factory=KafkaAuth)
    _task: asyncio.Task[None] | None = None
    # ``verdicts`` by conversation, so that a check over thousands of conversations is not quadratic
    _by_conversation: dict[str, list[VerdictEvent]] = field(default_factory=dict)

    async def __aenter__(self) -> Observer:
        self._consumer = AIOKafkaConsumer(
            *(t.full_name(self.prefix) for t in (Topic.VERDICTS, Topic.CONTROL, Topic.DEAD_LETTER)),
            bootstrap_servers=self.bootstrap,
            group_id=f"observer-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            **self.auth.client_options(),
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        names = {t.full_name(self.prefix): t for t in (Topic.VERDICTS, Topic.CONTROL, Topic.DEAD_LETTER)}
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for r in records:
                    event = codec.decode_any(r.value or b"")
                    kind = names[tp.topic]
                    if kind is Topic.VERDICTS:
                        assert isinstance(event, VerdictEvent)
                        self.verdicts.append(event)
                        self._by_conversation.setdefault(event.conversation_id, []).append(event)
                    elif kind is Topic.CONTROL:
                        assert isinstance(event, ControlEvent)
                        self.controls.append(event)
                    else:
                        assert isinstance(event, DeadLetter)
                        self.dead.append(event)

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + within_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}; {self.summary()}")
            await asyncio.sleep(0.05)

    def of(self, cid: str, stage: Stage | None = None) -> list[VerdictEvent]:
        return [v for v in self._by_conversation.get(cid, ()) if stage is None or v.stage is stage]

    def effective(self, cid: str) -> dict[int | None, set[str]]:
        """Distinct verdict ids per chunk seq (None: the prompt) of one conversation."""
        out: dict[int | None, set[str]] = {}
        for v in self.of(cid):
            out.setdefault(v.seq, set()).add(v.event_id)
        return out

    def controls_of(self, cid: str) -> list[ControlEvent]:
        return [c for c in self.controls if c.conversation_id == cid]

    def dead_of(self, reason: str) -> list[DeadLetter]:
        return [d for d in self.dead if d.reason == reason]

    def summary(self) -> str:
        return (
            f"{len(self.verdicts)} verdicts, {len(self.controls)} controls, "
            f"dead letters: {sorted({d.reason for d in self.dead})}"
        )


async def stream_benign(client: GuardClient, cid: str, *, chunks: int, delay_s: float) -> None:
    """Publish a benign prompt and an answer of ``chunks`` chunks ``delay_s`` apart, then the final
    chunk (seq ``chunks``)."""
    await client.publish_prompt(cid, "m1", [Message(role=Role.USER, content="Tell me about rivers.")])
    writer = client.stream(cid, "m1")
    for i in range(chunks):
        await writer.send(f"the river runs on {i} ")
        await asyncio.sleep(delay_s)
    await writer.finish()


async def moderate_one(client: GuardClient, obs: Observer, *, chunks: int, within_s: float) -> str:
    """Stream one benign conversation of ``chunks`` chunks and wait until the prompt and every chunk
    have a verdict; return its conversation id."""
    cid = f"c-{uuid.uuid4().hex[:6]}"
    await stream_benign(client, cid, chunks=chunks, delay_s=0.02)
    await obs.wait_for(
        lambda: set(obs.effective(cid)) == {None, *range(chunks + 1)},
        within_s=within_s,
        what="a verdict for the prompt and every chunk",
    )
    return cid


async def words(text: str, delay_s: float) -> AsyncIterator[str]:
    """A fake LLM: the text word by word, ``delay_s`` apart."""
    for w in text.split(" "):
        await asyncio.sleep(delay_s)
        yield w + " "
