"""The engine core: a scheduler over a loaded model, in the worker's process or in its own.

``build_scheduler`` loads the model and wraps it in a ``Scheduler``; ``StreamBackend`` calls it
directly when ``engine.isolation`` is ``thread``. With ``process`` (the default) the worker starts
``python -m workers.engine.host``, which runs ``serve``: it reads a ``start`` message (the engine
settings and the resolved checkpoint), builds the same scheduler (with the checkpoint's own
response scaffold), and answers requests over its
stdin/stdout (``workers.engine.wire``) until its stdin closes. The model, its forwards and their
Python overhead then hold this process's interpreter lock, not the worker's: the worker's event
loop and Kafka threads no longer make every torch call of a forward wait for the lock, and the
engine no longer stalls them (``docs/benchmarks.md``, "The engine in its own process").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from workers.engine.jobs import PromptJob, ResponseJob
from workers.engine.loading import load_in_thread
from workers.engine.scheduler import Scheduler
from workers.engine.scores import Head, HeadScores
from workers.engine.wire import Message, encode_error, encode_scores, frame, read_message

if TYPE_CHECKING:
    from workers.engine.checkpoint import Checkpoint
    from workers.engine.runner import BatchRunner
    from workers.settings import EngineSettings

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0


def load_runner(checkpoint: Checkpoint, engine: EngineSettings) -> BatchRunner:
    """The checkpoint's model on ``engine.device`` in ``engine.dtype``, ready for forwards (blocking)."""
    from workers.engine.model import load_guard_model
    from workers.engine.quantize import quantize_backbone
    from workers.engine.runner import BatchRunner, resolve_device, resolve_dtype

    device = resolve_device(engine.device)
    dtype = resolve_dtype(engine.dtype, device)
    if device.type == "cpu" and engine.cpu_threads:
        import torch

        torch.set_num_threads(engine.cpu_threads)
    model = quantize_backbone(load_guard_model(checkpoint, device=device, dtype=dtype), engine.quantize)
    return BatchRunner(
        model, kv_budget_bytes=engine.kv_budget_bytes, page_size=engine.page_size, attention=engine.attention
    )


async def build_scheduler(checkpoint: Checkpoint, engine: EngineSettings, response_prefix: Sequence[int]) -> Scheduler:
    """A started scheduler over the loaded model (the load runs in a thread)."""
    runner = await load_in_thread(load_runner, checkpoint, engine)
    scheduler = Scheduler(
        runner,
        max_batch_tokens=engine.max_batch_tokens,
        max_batch_rows=engine.max_batch_rows,
        max_wait_s=engine.max_wait_ms / 1000.0,
        response_prefix=response_prefix,
    )
    await scheduler.start()
    return scheduler


def scheduler_stats(scheduler: Scheduler) -> dict[str, float]:
    """The counters ``GuardBackend.engine_stats`` reports."""
    stats, pool = scheduler.stats, scheduler.pool
    return {
        "forwards": stats.steps,
        "rows": stats.rows,
        "tokens": stats.tokens,
        "forward_seconds": stats.forward_s,
        "rebuilds": stats.rebuilds,
        "kv_evictions": pool.stats.evictions,
        "kv_bytes_used": pool.used_pages * pool.layout.bytes_per_page,
    }


class _Host:
    """Serves one worker over a pipe: requests run concurrently on this process's event loop."""

    def __init__(self, scheduler: Scheduler, writer: asyncio.WriteTransport) -> None:
        self._scheduler = scheduler
        self._writer = writer
        self._histories: dict[int, asyncio.Future[list[int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, message: Message) -> None:
        self._writer.write(frame(message))

    def dispatch(self, message: Message) -> None:
        op = message["op"]
        if op == "prompt":
            self._spawn(self._prompt(message))
        elif op == "response":
            self._spawn(self._response(message))
        elif op == "history":
            future = self._histories.pop(int(message["id"]), None)
            if future is not None and not future.done():
                if "ids" in message:
                    future.set_result([int(i) for i in message["ids"]])
                else:
                    future.set_exception(RuntimeError(f"history unavailable: {message.get('error', '?')}"))
        elif op == "release":
            self._scheduler.release(str(message["key"]))
        else:
            logger.error("engine process: unknown op %r ignored", op)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prompt(self, message: Message) -> None:
        job = PromptJob(str(message["key"]), message["ids"])
        await self._answer(int(message["id"]), self._scheduler.score_prompt(job))

    async def _response(self, message: Message) -> None:
        request_id = int(message["id"])

        async def history() -> list[int]:
            future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            self._histories[request_id] = future
            self.send({"op": "history", "id": request_id})
            return await future

        job = ResponseJob(str(message["key"]), int(message["offset"]), message["new"], history)
        try:
            await self._answer(request_id, self._scheduler.score_response(job))
        finally:
            self._histories.pop(request_id, None)

    async def _answer(self, request_id: int, scoring: Awaitable[HeadScores]) -> None:
        """Send the request's scores, or its failure as data."""
        try:
            scores = await scoring
        except Exception as exc:  # noqa: BLE001  # every failure goes back to the worker as data
            self.send({"op": "error", "id": request_id, "error": encode_error(exc)})
            return
        # The counters ride along, so the worker's metrics are as fresh as its last verdict
        # (``report_stats`` covers what changes without a reply, such as a release).
        self.send(
            {"op": "scores", "id": request_id, "stats": scheduler_stats(self._scheduler), **encode_scores(scores)}
        )

    async def report_stats(self) -> None:
        last: dict[str, float] = {}
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            stats = scheduler_stats(self._scheduler)
            if stats != last:
                self.send({"op": "stats", "stats": stats})
                last = stats

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def serve(reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> int:
    """Run the engine for one worker: ``start``, then requests until the input ends or ``close``."""
    from workers.engine.checkpoint import open_checkpoint
    from workers.engine.template import ChatFormat
    from workers.settings import EngineSettings

    start = await read_message(reader)
    if start is None or start["op"] != "start":
        logger.error("engine process: expected a start message, got %r", start and start.get("op"))
        return 2
    logging.getLogger().setLevel(str(start.get("log_level", "WARNING")).upper())
    began = time.monotonic()
    try:
        checkpoint = open_checkpoint(start["checkpoint"], allow_test_checkpoint=bool(start["allow_test_checkpoint"]))
        engine = EngineSettings.model_validate(start["engine"])
        chat_format = await load_in_thread(ChatFormat.from_pretrained, checkpoint.path)
        scheduler = await build_scheduler(checkpoint, engine, chat_format.response_prefix)
    except Exception as exc:
        logger.exception("engine process: the model failed to load")
        writer.write(frame({"op": "failed", "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    gc.freeze()  # the model and libraries never become garbage: keep full collections short
    runner = scheduler.executor
    writer.write(
        frame(
            {
                "op": "ready",
                "pid": os.getpid(),
                "max_positions": runner.max_positions,
                "response_categories": runner.num_categories(Head.RESPONSE),
                "load_s": round(time.monotonic() - began, 3),
            }
        )
    )
    host = _Host(scheduler, writer)
    stats = asyncio.get_running_loop().create_task(host.report_stats())
    try:
        while (message := await read_message(reader)) is not None and message["op"] != "close":
            host.dispatch(message)
    finally:
        stats.cancel()
        await scheduler.close()
        await host.drain()
    return 0


async def _main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever a library prints goes to the worker's log, never into the protocol
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, out)
    try:
        return await serve(reader, transport)
    finally:
        transport.close()


def main() -> NoReturn:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [engine %(process)d] %(name)s: %(message)s",
    )
    code = asyncio.run(_main())
    logging.shutdown()
    sys.stderr.flush()
    # Skip interpreter teardown: the model's memory goes with the process, and extension modules'
    # shutdown checks would only print noise into the worker's log.
    os._exit(code)


if __name__ == "__main__":
    main()
