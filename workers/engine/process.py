"""The worker's side of the engine process (``engine.isolation: process``).

``EngineProcess`` has the scheduler's interface (``score_prompt``, ``score_response``,
``release``, ``close``, ``stats``) and forwards each call to ``python -m workers.engine.host``
over a pipe (``workers.engine.wire``). It reads the engine's messages on the event loop, so no
thread of the worker touches the model. A response job's ``history`` is called here, in the
worker, when the engine asks for it (it has no KV for the conversation at that offset), and its
errors (a Redis outage, say) reach the caller as they are.

If the engine process dies, every request in flight fails with ``SchedulerFailed`` (the
moderator gives each its explicit ``guard.on_error`` outcome) and a new engine process starts at
once, which rebuilds each conversation's KV from its history on first use; requests meanwhile wait
for it. If that start fails too, the next request tries again. ``down`` says why the engine cannot
score now (``GET /healthz`` reports it) until a process is ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.engine.jobs import PromptJob, ResponseJob, SchedulerClosed, SchedulerFailed, SequenceTooLong
from workers.engine.scores import HeadScores
from workers.engine.wire import Message, ProtocolError, decode_error, decode_scores, frame, read_message
from workers.infra.processes import dies_with_parent

logger = logging.getLogger(__name__)

HOST_MODULE = "workers.engine.host"


class EngineStartError(RuntimeError):
    """The engine process could not load the model (the reason is its own error message)."""


@dataclass(slots=True)
class _Request:
    future: asyncio.Future[HeadScores]
    job: PromptJob | ResponseJob
    history: asyncio.Task[None] | None = field(default=None)


class EngineProcess:
    """A scheduler in a child process. ``start_message`` is the ``start`` op's payload (engine
    settings, checkpoint path, log level); it is resent to every new process."""

    def __init__(self, start_message: Mapping[str, Any], *, stop_timeout_s: float = 10.0) -> None:
        self._start_message = {"op": "start", **start_message}
        self._stop_timeout_s = stop_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._spawn_lock = asyncio.Lock()
        self._closed = False
        self._restart: asyncio.Task[None] | None = None
        self.down: str | None = "the engine process is not started"
        self._stats: dict[str, float] = {}
        self._stats_base: dict[str, float] = {}
        self.max_positions = 1 << 30
        self.response_categories = 0
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def stats(self) -> dict[str, float]:
        """The engine's counters, cumulative over every engine process this worker started
        (``kv_bytes_used``: the current process's)."""
        merged = {name: self._stats_base.get(name, 0.0) + value for name, value in self._stats.items()}
        if "kv_bytes_used" in self._stats:
            merged["kv_bytes_used"] = self._stats["kv_bytes_used"]
        merged["engine_restarts"] = float(max(0, self.starts - 1))
        return merged

    async def start(self) -> None:
        """Start the engine process and wait until its model is loaded; idempotent.

        Raises:
            EngineStartError: the process failed to load the model or exited.
        """
        async with self._spawn_lock:
            if self._closed:
                raise SchedulerClosed("engine process is closed")
            if self._alive():
                return
            try:
                await self._spawn()
            except EngineStartError as exc:
                self.down = str(exc)
                raise

    def _alive(self) -> bool:
        proc, reader = self._proc, self._reader
        return proc is not None and proc.returncode is None and reader is not None and not reader.done()

    async def _spawn(self) -> None:
        began = time.monotonic()
        # Started from the event loop's thread: the kernel's parent-death signal follows that thread.
        proc = await asyncio.create_subprocess_exec(
            *dies_with_parent([sys.executable, "-m", HOST_MODULE]),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame(self._start_message))
        try:
            reply = await read_message(proc.stdout)
        except ProtocolError as exc:
            reply = {"op": "failed", "error": str(exc)}
        if reply is None or reply["op"] != "ready":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            reason = reply["error"] if reply is not None and "error" in reply else f"exited with {code}"
            raise EngineStartError(f"the engine process failed to start: {reason}")
        self._stats_base = self.stats
        self._stats = {}
        self.max_positions = int(reply["max_positions"])
        self.response_categories = int(reply["response_categories"])
        self._proc = proc
        self._reader = asyncio.get_running_loop().create_task(self._read(proc), name="streamwarden-engine-reader")
        self.starts += 1
        self.down = None
        logger.info(
            "engine process %s ready in %.1f s (model loaded in %.1f s)",
            proc.pid,
            time.monotonic() - began,
            float(reply.get("load_s", 0.0)),
        )

    async def close(self) -> None:
        """Stop the engine process (it finishes nothing), failing pending requests with ``SchedulerClosed``."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
            await asyncio.gather(self._restart, return_exceptions=True)
        async with self._spawn_lock:
            proc, self._proc = self._proc, None
            if proc is not None and proc.returncode is None:
                assert proc.stdin is not None
                with contextlib.suppress(ConnectionError, RuntimeError):
                    proc.stdin.write(frame({"op": "close"}))
                    proc.stdin.close()
                try:
                    await asyncio.wait_for(proc.wait(), self._stop_timeout_s)
                except TimeoutError:
                    logger.warning(
                        "engine process %s did not stop in %.0f s; killing it", proc.pid, self._stop_timeout_s
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            self._fail_all(SchedulerClosed("engine process closed before the request was scored"))

    async def score_prompt(self, job: PromptJob) -> HeadScores:
        if not job.ids:
            raise ValueError("a prompt needs at least one token")
        self._check_length(job.key, 0, len(job.ids))
        return await self._submit(job, {"op": "prompt", "key": job.key, "ids": list(job.ids)})

    async def score_response(self, job: ResponseJob) -> HeadScores:
        if job.offset < 0:
            raise ValueError(f"offset must be >= 0, got {job.offset}")
        if not job.new_ids:
            return HeadScores.empty(self.response_categories)
        self._check_length(job.key, job.offset, len(job.new_ids))
        message = {"op": "response", "key": job.key, "offset": job.offset, "new": list(job.new_ids)}
        return await self._submit(job, message)

    def release(self, key: str) -> None:
        self._send({"op": "release", "key": key})

    def _check_length(self, key: str, offset: int, count: int) -> None:
        if offset + count > self.max_positions:
            raise SequenceTooLong(key, offset + count, self.max_positions)

    async def _submit(self, job: PromptJob | ResponseJob, message: Message) -> HeadScores:
        if not self._alive():
            await self.start()  # the first request, or the one after the engine process died
        request_id = next(self._ids)
        future: asyncio.Future[HeadScores] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = _Request(future, job)
        self._send({**message, "id": request_id})
        try:
            return await future
        finally:
            request = self._requests.pop(request_id, None)
            if request is not None and request.history is not None:
                request.history.cancel()

    def _send(self, message: Message) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None or proc.stdin.is_closing():
            return  # a dead engine: the reader fails what is pending, and a release has nothing to do
        proc.stdin.write(frame(message))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        problem = ""
        try:
            while (message := await read_message(proc.stdout)) is not None:
                self._dispatch(message)
        except ProtocolError as exc:
            problem = f" ({exc})"
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        code = await proc.wait()
        if self._closed:
            return
        logger.error(
            "engine process %s exited with %s%s; failing %d requests in flight",
            proc.pid,
            code,
            problem,
            len(self._requests),
        )
        self.down = f"the engine process exited with {code}{problem}; restarting it"
        self._fail_all(SchedulerFailed(f"the engine process exited with {code}{problem}"))
        self._restart = asyncio.get_running_loop().create_task(self._restart_now(), name="streamwarden-engine-restart")

    async def _restart_now(self) -> None:
        """Start the next engine process at once rather than on the next request."""
        try:
            await self.start()
        except (EngineStartError, SchedulerClosed) as exc:
            # The engine's own message says why; a traceback of this task would add nothing.
            logger.error("engine process restart failed (the next request tries again): %s", exc)  # noqa: TRY400

    def _dispatch(self, message: Message) -> None:
        op = message["op"]
        if "stats" in message:
            self._stats = {name: float(value) for name, value in message["stats"].items()}
        if op == "stats":
            return
        request = self._requests.get(int(message["id"]))
        if request is None:
            return  # its caller gave up (cancelled) or already has its outcome
        if op == "scores":
            if not request.future.done():
                request.future.set_result(decode_scores(message))
        elif op == "error":
            if not request.future.done():
                request.future.set_exception(decode_error(message["error"]))
        elif op == "history":
            request.history = asyncio.get_running_loop().create_task(self._history(int(message["id"]), request))
        else:
            logger.error("engine process sent an unknown op %r", op)

    async def _history(self, request_id: int, request: _Request) -> None:
        job = request.job
        assert isinstance(job, ResponseJob)
        try:
            ids = [int(i) for i in await job.history()]
        except Exception as exc:  # noqa: BLE001  # the caller gets the store's own error; the engine drops the job
            if not request.future.done():
                request.future.set_exception(exc)
            self._send({"op": "history", "id": request_id, "error": f"{type(exc).__name__}: {exc}"})
            return
        self._send({"op": "history", "id": request_id, "ids": ids})

    def _fail_all(self, error: SchedulerClosed | SchedulerFailed) -> None:
        for request in list(self._requests.values()):
            if not request.future.done():
                # One instance per future: a shared one would collect every awaiter's traceback.
                request.future.set_exception(type(error)(str(error)))
