"""Conversation lanes: events of one conversation in order, different conversations concurrently.

The router gives every conversation with work a lane (an asyncio task) that hands its events to the
handler in order, so a conversation's prompt and chunks are applied in ``seq`` order while thousands
of other conversations proceed in parallel (their chunks meet in the engine's batches).

A lane hands over a *run*: the next event and, when it is a chunk, the consecutive chunks of the
same message queued behind it (``seq`` + 1, + 2, ..., up to ``max_run``, ending at a final chunk).
A conversation streaming faster than one handler round trip (score, publish, commit) therefore
catches up in one step instead of falling further behind: the run is scored as one engine row,
committed in one store call and published in one batch, while every chunk keeps its own verdict.
Unloaded, runs are single events.

A handler may *park* an event it cannot apply yet: a chunk that arrived before its prompt, or ahead
of a missing ``seq``. Parked events are retried after every event the lane applies, and are handed
to ``Handler.expire`` (which dead-letters them) when they have waited too long, on the worker's
clock and on the log's (``LogClock``: a backlog does not eat into the wait), or the lane's park is
full. ``max_in_flight`` bounds the events admitted and not yet finished; ``submit`` waits for room,
which back-pressures the Kafka consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from topics.events import PromptEvent, TokenChunkEvent
from workers.moderation.delivery import Delivery
from workers.moderation.logclock import LogClock

logger = logging.getLogger(__name__)

LOG_RECHECK_S = 0.1
"""How often a parked event whose wait is over on the worker's clock, not yet on the log's, looks again."""


@dataclass(slots=True, eq=False)
class Work:
    """One decoded event on its way through a lane; ``ack`` acknowledges the Kafka record."""

    event: PromptEvent | TokenChunkEvent
    delivery: Delivery
    ack: Callable[[], Awaitable[None]]
    parked_until: float = field(default=0.0)

    @property
    def conversation_id(self) -> str:
        return self.event.conversation_id

    def order(self) -> tuple[int, int]:
        """Retry order among parked events: prompts first, then chunks by seq."""
        if isinstance(self.event, PromptEvent):
            return (0, 0)
        return (1, self.event.seq)


class Outcome(Enum):
    DONE = "done"  # finished (effects published, record acked); no progress for parked events
    APPLIED = "applied"  # finished and the conversation advanced: parked events may now apply
    WAIT_PROMPT = "wait_prompt"  # a chunk whose prompt has not been applied yet
    WAIT_SEQ = "wait_seq"  # a chunk ahead of the next expected seq


class Handler(Protocol):
    async def handle(self, run: Sequence[Work]) -> list[Outcome]:
        """Process a prefix of ``run`` (at least its first event) and return one outcome per event
        processed; the rest go back to the lane, in order. On DONE/APPLIED an event's effects are
        published and its record acked; WAIT_* events are parked by the lane."""
        ...

    async def expire(self, work: Work, outcome: Outcome, why: str) -> None:
        """Give up on a parked event: dead-letter it and ack the record."""


class ConversationRouter:
    """Owns the lanes; ``submit`` is called by the Kafka agents for every decoded event."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_in_flight: int,
        prompt_wait_s: float,
        reorder_window: int,
        reorder_wait_s: float,
        max_run: int = 64,
    ) -> None:
        if max_run < 1:
            raise ValueError(f"max_run must be at least 1, got {max_run}")
        self._handler = handler
        self._max_run = max_run
        self._slots = asyncio.Semaphore(max_in_flight)
        self._lanes: dict[str, _Lane] = {}
        self._waits = {Outcome.WAIT_PROMPT: prompt_wait_s, Outcome.WAIT_SEQ: reorder_wait_s}
        self._window = reorder_window
        self._clock = LogClock()

    @property
    def active_lanes(self) -> int:
        return len(self._lanes)

    def observe(self, delivery: Delivery) -> None:
        """Note a record read from an input topic, decodable or not: the log clock of the waits."""
        self._clock.observe(delivery)

    def _log_waited(self, work: Work, outcome: Outcome) -> bool:
        """Whether ``work``'s wait is over on the log too (a prompt comes on the other topic)."""
        return self._clock.waited(work.delivery, self._waits[outcome], other_topics=outcome is Outcome.WAIT_PROMPT)

    async def submit(self, work: Work) -> None:
        """Queue ``work`` on its conversation's lane; waits while ``max_in_flight`` events are open."""
        await self._slots.acquire()
        lane = self._lanes.get(work.conversation_id)
        if lane is None:
            lane = self._lanes[work.conversation_id] = _Lane(work.conversation_id, self)
        lane.push(work)

    async def drain(self, within_s: float) -> bool:
        """Wait until every lane has finished (parked events included); False if not within ``within_s``."""
        deadline = time.monotonic() + within_s
        while self._lanes:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def aclose(self) -> None:
        """Cancel all lanes (their unacked records will be redelivered)."""
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.cancel()
        for lane in lanes:
            await lane.wait_closed()

    def _finished(self, lane: _Lane) -> None:
        if self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]


class _Lane:
    def __init__(self, key: str, router: ConversationRouter) -> None:
        self.key = key
        self._router = router
        self._inbox: deque[Work] = deque()
        self._parked: list[tuple[Work, Outcome]] = []
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"lane:{key}")

    def push(self, work: Work) -> None:
        self._inbox.append(work)
        self._wake.set()

    def cancel(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        try:
            while True:
                if self._inbox:
                    await self._process(self._take_run())
                    continue
                if not self._parked:
                    # No await between the emptiness check and removal: submit() cannot slip in.
                    self._router._finished(self)
                    return
                await self._sleep_until_deadline()
                await self._expire_overdue()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A handler bug must not strand the conversation's records unacked forever.
            logger.exception("lane %s crashed; its pending records will be redelivered", self.key)
            self._router._finished(self)

    def _take_run(self) -> list[Work]:
        """The inbox's first event and the chunks that directly follow it in ``seq``."""
        run = [self._inbox.popleft()]
        while self._inbox and len(run) < self._router._max_run and _continues(run[-1].event, self._inbox[0].event):
            run.append(self._inbox.popleft())
        return run

    async def _process(self, run: list[Work]) -> None:
        outcomes = await self._router._handler.handle(run)
        if not 1 <= len(outcomes) <= len(run):
            raise RuntimeError(f"handler returned {len(outcomes)} outcomes for a run of {len(run)}")
        # What the handler left goes back to the front, ahead of anything queued since.
        self._inbox.extendleft(reversed(run[len(outcomes) :]))
        applied = False
        for work, outcome in zip(run, outcomes, strict=False):
            if outcome in (Outcome.WAIT_PROMPT, Outcome.WAIT_SEQ):
                await self._park(work, outcome)
                continue
            self._router._slots.release()
            applied = applied or outcome is Outcome.APPLIED
        if applied and self._parked:
            retry = sorted(self._parked, key=lambda p: p[0].order())
            self._parked.clear()
            self._inbox.extendleft(reversed([w for w, _ in retry]))

    async def _park(self, work: Work, outcome: Outcome) -> None:
        if not work.parked_until:
            work.parked_until = time.monotonic() + self._router._waits[outcome]
        if len(self._parked) >= self._router._window:
            await self._give_up(work, outcome, f"more than {self._router._window} events waiting")
            return
        self._parked.append((work, outcome))

    async def _sleep_until_deadline(self) -> None:
        self._wake.clear()
        if self._inbox:
            return
        delay = min(w.parked_until for w, _ in self._parked) - time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.0))

    async def _expire_overdue(self) -> None:
        now = time.monotonic()
        overdue: list[tuple[Work, Outcome]] = []
        waiting: list[tuple[Work, Outcome]] = []
        for work, outcome in self._parked:
            if work.parked_until > now:
                waiting.append((work, outcome))
            elif not self._router._log_waited(work, outcome):
                work.parked_until = now + LOG_RECHECK_S
                waiting.append((work, outcome))
            else:
                overdue.append((work, outcome))
        if not overdue:
            return
        self._parked = waiting
        for work, outcome in sorted(overdue, key=lambda p: p[0].order()):
            await self._give_up(work, outcome, "waited too long")

    async def _give_up(self, work: Work, outcome: Outcome, why: str) -> None:
        try:
            await self._router._handler.expire(work, outcome, why)
        finally:
            self._router._slots.release()


def _continues(last: PromptEvent | TokenChunkEvent, nxt: PromptEvent | TokenChunkEvent) -> bool:
    """Whether ``nxt`` is the chunk right after ``last`` in the same message."""
    return (
        isinstance(last, TokenChunkEvent)
        and isinstance(nxt, TokenChunkEvent)
        and not last.final
        and nxt.message_id == last.message_id
        and nxt.seq == last.seq + 1
    )
