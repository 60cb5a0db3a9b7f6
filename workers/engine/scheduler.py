"""The batching scheduler: one asyncio task per device, forwards in one worker thread.

Requests are queued with a future. The loop waits for the first request, then collects until
``max_batch_tokens`` / ``max_batch_rows`` are pending or ``max_wait`` has passed since the first
one, plans a forward and runs it in the worker thread (the model never runs on the event loop),
then resolves the futures. Each step:

1. select: pending requests in arrival order, at most one per conversation (a conversation's
   chunks depend on each other, so its later requests wait for the next step);
2. resolve: decide which tokens each request must feed. A request continues the cached state
   when it sits exactly at ``offset``; a cache ending at the prompt is continued with the response
   prefix; a cache past ``offset`` is truncated (a chunk re-scored after a redelivery); otherwise
   (evicted, unknown, rebalanced) the token history is fetched here, on the async side, and the
   conversation is rebuilt from it;
3. fit: short rows (streamed chunks, at most ``SHORT_ROW_TOKENS``) first and whole, then long
   rows (prefills, rebuilds) in what is left of ``max_batch_tokens`` (at least a quarter of it,
   so prompts progress under any load), split over steps; reserve KV pages (evicting
   least-recently-active conversations outside this step), defer what does not fit;
4. launch the forward in the thread; once it is done, commit the new lengths and resolve the
   finished requests.

On CUDA a launch returns as soon as the work is queued on the device, and the executor allows two
forwards in flight (``pipeline_depth``): while one runs, the next is planned and launched over
other conversations (a conversation is in at most one forward in flight; its pages are protected
from eviction until that forward is done). On the CPU the depth is one.

A failed forward fails its own requests (their cached state is dropped); if the loop itself dies,
a done-callback fails every pending request, and ``close()`` fails pending requests cleanly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from workers.engine.jobs import (
    HistoryMismatch,
    LaunchedStep,
    PromptJob,
    ResponseJob,
    SchedulerClosed,
    SchedulerFailed,
    SchedulerStats,
    SequenceTooLong,
    StepExecutor,
    StepPlan,
    StepRow,
)
from workers.engine.kv import KVBudgetError, KVPool
from workers.engine.scores import Head, HeadScores

logger = logging.getLogger(__name__)

SHORT_ROW_TOKENS = 16
"""Rows of at most this many new tokens (streamed chunks) are served before longer ones (prefills)."""


@dataclass(eq=False, slots=True)
class _InFlight:
    plan: StepPlan
    pendings: list[_Pending]
    keys: set[str]
    launched: LaunchedStep
    began: float


@dataclass(eq=False, slots=True)
class _Pending:
    job: PromptJob | ResponseJob
    future: asyncio.Future[HeadScores]
    head: Head
    outputs_total: int
    enqueued_at: float
    feed: list[int] | None = None
    start: int = 0
    cursor: int = 0
    started: bool = False
    history: list[int] | None = None
    parts: list[HeadScores] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.job.key

    @property
    def estimate(self) -> int:
        if self.feed is not None:
            return len(self.feed) - self.cursor
        return len(self.job.ids) if isinstance(self.job, PromptJob) else len(self.job.new_ids)

    @property
    def done(self) -> bool:
        return self.future.done()


class Scheduler:
    """Batches requests of many conversations into forwards of one ``StepExecutor``."""

    def __init__(
        self,
        executor: StepExecutor,
        *,
        max_batch_tokens: int,
        max_batch_rows: int,
        max_wait_s: float,
        response_prefix: Sequence[int] = (),
    ) -> None:
        self._executor = executor
        self._max_tokens = max_batch_tokens
        self._max_rows = max_batch_rows
        self._max_wait = max_wait_s
        self._response_prefix = list(response_prefix)
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._queued_tokens = 0
        self._thread: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._in_flight_keys: set[str] = set()
        self._depth = max(1, executor.pipeline_depth)
        self._deferred_releases: set[str] = set()
        self._failure: BaseException | None = None
        self._closed = False
        self.stats = SchedulerStats()

    @property
    def pool(self) -> KVPool:
        return self._executor.pool

    @property
    def executor(self) -> StepExecutor:
        return self._executor

    @property
    def failure(self) -> str | None:
        """What killed the loop (every later request fails with ``SchedulerFailed``), or None."""
        return None if self._failure is None else f"the scheduler loop died: {self._failure!r}"

    async def start(self) -> None:
        """Start the loop task; idempotent."""
        if self._task is not None:
            return
        if self._closed:
            raise SchedulerClosed("scheduler is closed")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamwarden-engine")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="streamwarden-scheduler")
        self._task.add_done_callback(self._on_loop_done)

    async def close(self) -> None:
        """Stop the loop, fail pending requests with ``SchedulerClosed``, release the thread."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # a loop that died already reported its error
        self._fail_all(SchedulerClosed("scheduler closed before the request was scored"))
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)

    async def score_prompt(self, job: PromptJob) -> HeadScores:
        """Query-head scores at the last of ``job.ids``; the conversation's cache restarts there."""
        if not job.ids:
            raise ValueError("a prompt needs at least one token")
        self._check_length(job.key, 0, len(job.ids))
        return await self._submit(job, Head.QUERY, 1)

    async def score_response(self, job: ResponseJob) -> HeadScores:
        """Response-head scores at each of ``job.new_ids``."""
        if job.offset < 0:
            raise ValueError(f"offset must be >= 0, got {job.offset}")
        if not job.new_ids:
            return HeadScores.empty(self._executor.num_categories(Head.RESPONSE))
        self._check_length(job.key, job.offset, len(job.new_ids))
        return await self._submit(job, Head.RESPONSE, len(job.new_ids))

    def release(self, key: str) -> None:
        """Forget the cached state of ``key`` now, or right after the forward that is using it."""
        if key in self._in_flight_keys:
            self._deferred_releases.add(key)
        else:
            self.pool.drop(key)

    def _check_length(self, key: str, offset: int, count: int) -> None:
        limit = self._executor.max_positions
        if offset + count > limit:
            raise SequenceTooLong(key, offset + count, limit)

    async def _submit(self, job: PromptJob | ResponseJob, head: Head, outputs: int) -> HeadScores:
        if self._failure is not None:
            raise SchedulerFailed("scheduler loop died") from self._failure
        if self._closed or self._task is None:
            raise SchedulerClosed("scheduler is not running")
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop.create_future(), head, outputs, loop.time())
        self._queue.append(pending)
        self._queued_tokens += pending.estimate
        self._wakeup.set()
        if len(self._queue) >= self._max_rows or self._queued_tokens >= self._max_tokens:
            self._full.set()
        return await pending.future

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        stalled = False  # nothing could start beside the forwards in flight: let one finish first
        while True:
            if self._in_flight and (stalled or len(self._in_flight) >= self._depth or not self._schedulable()):
                await self._complete(self._in_flight.popleft())
                stalled = False
                continue
            await self._collect()
            launched = await self._launch()
            stalled = not launched and bool(self._in_flight)
            if not launched and not self._in_flight:
                # Everything was deferred to a re-resolution; yield so that this loop can never
                # hold the event loop (and the worker's heartbeats) even if that repeats.
                await asyncio.sleep(0)

    def _schedulable(self) -> bool:
        """Whether a request could join a forward now (its conversation is not in one)."""
        return any(not p.done and p.key not in self._in_flight_keys for p in self._queue)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._schedulable():
            if self._in_flight:
                return  # the loop completes a forward first
            self._wakeup.clear()
            await self._wakeup.wait()
        if len(self._queue) >= self._max_rows or self._queued_tokens >= self._max_tokens:
            return
        remaining = self._queue[0].enqueued_at + self._max_wait - loop.time()
        if remaining > 0:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), remaining)

    async def _launch(self) -> bool:
        """Plan a forward and start it (with a pipeline it runs while the next one is planned).

        Returns whether a forward started.
        """
        selected = self._select()
        await self._resolve(selected)
        plan, pendings = self._fit(selected)
        if not plan.rows:
            self._tidy()
            return False
        keys = {row.key for row in plan.rows}
        self._in_flight_keys |= keys
        began = time.perf_counter()
        try:
            assert self._thread is not None
            launched = await asyncio.get_running_loop().run_in_executor(self._thread, self._executor.launch, plan)
        except Exception as exc:  # the forward's failure is its requests' failure, not the loop's
            logger.exception("launching a forward of %d rows failed", len(plan.rows))
            self._fail_step(pendings, keys, exc)
            return True
        self._in_flight.append(_InFlight(plan, pendings, keys, launched, began))
        return True

    async def _complete(self, step: _InFlight) -> None:
        """Wait for a launched forward, then commit the new lengths and resolve its requests."""
        try:
            assert self._thread is not None
            results = await asyncio.get_running_loop().run_in_executor(self._thread, step.launched.wait)
        except Exception as exc:  # as in _launch: fail this forward's requests only
            logger.exception("a forward of %d rows failed", len(step.plan.rows))
            self._fail_step(step.pendings, step.keys, exc)
            return
        self._record(step.plan, time.perf_counter() - step.began)
        self._commit(step.plan, step.pendings, results)
        self._end_step(step.keys)

    def _fail_step(self, pendings: list[_Pending], keys: set[str], error: Exception) -> None:
        for pending in pendings:
            self.pool.drop(pending.key)  # its pages may be half written
            self._finish(pending, error)
        self._end_step(keys)

    def _end_step(self, keys: set[str]) -> None:
        self._in_flight_keys -= keys
        for key in keys & self._deferred_releases:
            self.pool.drop(key)
        self._deferred_releases -= keys
        self._tidy()

    def _tidy(self) -> None:
        self._queue = [p for p in self._queue if not p.done]
        self._queued_tokens = sum(p.estimate for p in self._queue)

    def _select(self) -> list[_Pending]:
        chosen: list[_Pending] = []
        keys: set[str] = set()
        tokens = 0
        for pending in self._queue:
            if pending.done:  # the caller gave up (cancelled): its partial cache is useless
                if pending.started:
                    self.release(pending.key)
                    pending.started = False
                continue
            if pending.key in keys or pending.key in self._in_flight_keys:
                continue
            keys.add(pending.key)
            chosen.append(pending)
            tokens += pending.estimate
            # Short rows behind a long prefill still join this step (``_fit`` serves them first).
            if len(chosen) >= self._max_rows or tokens >= self._max_tokens + SHORT_ROW_TOKENS * self._max_rows:
                break
        return chosen

    async def _resolve(self, selected: list[_Pending]) -> None:
        fetch = [p for p in selected if p.feed is None and not self._resolve_cached(p)]
        if not fetch:
            return
        histories = await asyncio.gather(*(self._fetch(p) for p in fetch), return_exceptions=True)
        for pending, history in zip(fetch, histories, strict=True):
            if isinstance(history, BaseException):
                self._finish(pending, history)
            else:
                pending.history = history
                self._resolve_cached(pending)

    async def _fetch(self, pending: _Pending) -> list[int]:
        job = pending.job
        assert isinstance(job, ResponseJob)
        history = list(await job.history())
        if len(history) != job.offset:
            raise HistoryMismatch(f"{job.key!r}: history has {len(history)} ids, the request sits at {job.offset}")
        return history

    def _resolve_cached(self, pending: _Pending) -> bool:
        """Set ``pending.feed`` from the cache (or a fetched history); False if history is needed."""
        job = pending.job
        if isinstance(job, PromptJob):
            pending.start, pending.feed = 0, list(job.ids)
            return True
        cached = self.pool.get(job.key)
        length = None if cached is None else cached.length
        prefix = self._response_prefix
        if cached is not None and length is not None and length >= job.offset:
            if length > job.offset:
                self.pool.truncate(job.key, job.offset)
            pending.start, pending.feed = job.offset, list(job.new_ids)
        elif (
            cached is not None
            and length is not None
            and prefix
            and cached.at_prompt_end
            and length + len(prefix) == job.offset
        ):
            pending.start, pending.feed = length, [*prefix, *job.new_ids]
        elif pending.history is not None:
            history = pending.history
            if cached is not None and length is not None and list(cached.ids) == history[:length]:
                pending.start, pending.feed = length, [*history[length:], *job.new_ids]
            else:
                self.stats.rebuilds += 1
                pending.start, pending.feed = 0, [*history, *job.new_ids]
        else:
            return False
        pending.cursor = 0
        return True

    def _fit(self, selected: list[_Pending]) -> tuple[StepPlan, list[_Pending]]:
        protected = {p.key for p in self._queue if p.started and not p.done} | self._in_flight_keys
        rows: list[StepRow] = []
        pendings: list[_Pending] = []
        budget = self._max_tokens
        # Once an older request waits for pages, younger ones must not preempt it: they would
        # restart it over and over while each one's own feed is cut short in turn (a livelock).
        older_waiting = False
        long_seen = False
        placed: set[str] = set()  # keys of this step's rows
        # Short rows (streamed chunks) first, and always whole; then the long ones (prefills) in what
        # is left of the token budget, at least a quarter of it, split over steps: a step's duration
        # stays bounded, so chunks never wait behind a whole long prompt, and a prompt progresses
        # however many chunks there are (chunked prefill, decode first). Arrival order within each.
        for pending in sorted(selected, key=lambda p: not _short(p)):
            if pending.done or pending.feed is None:
                continue
            remaining = len(pending.feed) - pending.cursor
            short = _short(pending)
            first_long = not short and not long_seen
            long_seen = long_seen or not short
            if first_long:
                budget = max(budget, self._max_tokens // 4, 1)
            if budget <= 0 and not short:
                self._defer(pending)
                continue
            start = pending.start + pending.cursor
            cached = self.pool.get(pending.key)
            if start and (cached is None or cached.length != start):
                # Evicted by an earlier row of this step, or released while partly fed: start over
                # from the cache or the history (a partial feed would wait for that cache forever).
                self._restart(pending)
                continue
            count = remaining if short else min(remaining, budget)
            # The oldest prefill may preempt as the step's first row could: short rows ahead of it
            # hold only a few pages each.
            may_preempt = (not rows or first_long) and not older_waiting
            try:
                pages = self._reserve(pending, start, count, protected, may_preempt=may_preempt, in_step=placed)
            except KVBudgetError as exc:
                if rows or self._in_flight or older_waiting:
                    self._defer(pending)  # pages free up when this step or the forwards in flight end
                    older_waiting = True
                    continue
                self.pool.drop(pending.key)
                self._finish(pending, exc)
                continue
            protected.add(pending.key)
            end = pending.cursor + count
            output_from = len(pending.feed) - pending.outputs_total
            outputs = max(0, end - max(pending.cursor, output_from))
            rows.append(StepRow(pending.key, start, pending.feed[pending.cursor : end], pending.head, outputs, pages))
            pendings.append(pending)
            placed.add(pending.key)
            budget -= count
        return StepPlan(tuple(rows), self.pool.take_fresh_pages()), pendings

    def _reserve(
        self,
        pending: _Pending,
        start: int,
        count: int,
        protected: set[str],
        *,
        may_preempt: bool,
        in_step: Set[str] = frozenset(),
    ) -> tuple[int, ...]:
        """Reserve pages; the oldest request of a step may preempt partially fed requests to fit.

        Partially fed requests (long prefills split over steps) pin their pages. When the oldest
        request that can run (``may_preempt``: the step's first, with no older one waiting for
        pages) cannot fit beside them, the youngest of them are preempted until it fits: their
        cache is dropped and they start over later (from the kept history, or a new fetch). So the
        oldest request always progresses, and no request is preempted by a younger one. Rows
        already placed in this step (``in_step``) are never preempted.
        """
        try:
            return self.pool.reserve(pending.key, start, count, protected)
        except KVBudgetError:
            if not may_preempt:
                raise
            victims = [
                p
                for p in self._queue
                if p.started
                and p is not pending
                and p.key in protected
                and p.key not in self._in_flight_keys
                and p.key not in in_step
            ]
            if not victims:
                raise
            for victim in reversed(victims):  # the queue is in arrival order: youngest first
                logger.debug("preempting the partial feed of %s", victim.key)
                self.pool.drop(victim.key)
                protected.discard(victim.key)
                self._restart(victim)
                with contextlib.suppress(KVBudgetError):
                    return self.pool.reserve(pending.key, start, count, protected)
            raise

    @staticmethod
    def _restart(pending: _Pending) -> None:
        """Forget how far ``pending`` was fed; it is resolved again, from the cache or its history."""
        pending.started, pending.feed, pending.cursor, pending.parts = False, None, 0, []

    def _defer(self, pending: _Pending) -> None:
        if not pending.started:
            pending.feed = None  # resolve again next step, from the cache or the kept history

    def _commit(self, plan: StepPlan, pendings: list[_Pending], results: list[HeadScores | None]) -> None:
        for row, pending, scores in zip(plan.rows, pendings, results, strict=True):
            assert pending.feed is not None
            pending.cursor += len(row.ids)
            finished = pending.cursor == len(pending.feed)
            self.pool.commit(row.key, row.ids, at_prompt_end=finished and pending.head is Head.QUERY)
            if scores is not None:
                pending.parts.append(scores)
            if finished:
                self._finish(pending, HeadScores.concat(pending.parts))
            else:
                pending.started = True

    def _finish(self, pending: _Pending, outcome: HeadScores | BaseException) -> None:
        pending.started = False
        if pending.future.done():
            return
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    def _record(self, plan: StepPlan, seconds: float) -> None:
        self.stats.steps += 1
        self.stats.rows += len(plan.rows)
        self.stats.tokens += plan.tokens
        self.stats.forward_s += seconds

    def _fail_all(self, error: BaseException) -> None:
        for pending in self._queue:
            self._finish(pending, error)
        self._queue = []

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._fail_all(SchedulerClosed("scheduler closed before the request was scored"))
            return
        error = task.exception()
        if error is not None:
            logger.error("scheduler loop died: %r", error)
            self._failure = error
            failure = SchedulerFailed("scheduler loop died")
            failure.__cause__ = error
            self._fail_all(failure)


def _short(pending: _Pending) -> bool:
    """A short row: a whole feed of at most ``SHORT_ROW_TOKENS`` (a chunk), not the tail of a long one."""
    return pending.feed is not None and len(pending.feed) <= SHORT_ROW_TOKENS
