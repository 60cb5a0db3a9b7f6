"""Sampling a worker's resident memory (psutil's RSS) while a run goes on.

A worker's memory is its own and its children's: the engine process holds the model and the KV.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType

import psutil


def rss_kib(pid: int) -> int | None:
    """The resident set of ``pid`` and its child processes in KiB, or None when ``pid`` is gone (or
    a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        family = [process, *process.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for member in family:
        with contextlib.suppress(psutil.Error):  # a child that exited meanwhile holds nothing
            total += member.memory_info().rss
    return total // 1024


@dataclass
class RssSampler:
    """``async with RssSampler(pid) as rss:`` samples every ``interval_s``; ``samples`` are KiB."""

    pid: int
    interval_s: float = 0.25
    samples: list[int] = field(default_factory=list)
    gone: bool = False
    _task: asyncio.Task[None] | None = None

    @property
    def first_mib(self) -> float:
        return self.samples[0] / 1024 if self.samples else 0.0

    @property
    def max_mib(self) -> float:
        return max(self.samples) / 1024 if self.samples else 0.0

    @property
    def last_mib(self) -> float:
        return self.samples[-1] / 1024 if self.samples else 0.0

    def sample(self) -> None:
        kib = rss_kib(self.pid)
        if kib is None:
            self.gone = True
        else:
            self.samples.append(kib)

    async def __aenter__(self) -> RssSampler:
        self.sample()
        self._task = asyncio.create_task(self._run(), name="rss-sampler")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()
