"""What the scheduler is asked to do and what it asks of the device: jobs, step plans, errors, protocols."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from workers.engine.scores import Head

if TYPE_CHECKING:
    from workers.engine.kv import KVPool
    from workers.engine.scores import HeadScores


@dataclass(frozen=True, slots=True)
class StepRow:
    """One conversation's part of a forward."""

    key: str
    start: int
    ids: Sequence[int]
    head: Head
    outputs: int
    """Head outputs are wanted at the last ``outputs`` positions of ``ids`` (0 for none)."""
    pages: tuple[int, ...]
    """The conversation's page list, covering positions ``0 .. start+len(ids)``."""


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Rows of one forward; at most one row per conversation."""

    rows: tuple[StepRow, ...]
    fresh_pages: tuple[int, ...] = ()
    """Pages used for the first time: the executor zeroes them before the forward."""

    @property
    def tokens(self) -> int:
        return sum(len(row.ids) for row in self.rows)


class SchedulerClosed(RuntimeError):
    """The scheduler was closed before the request was scored."""


class SchedulerFailed(RuntimeError):
    """The scheduler's loop died; every pending and later request fails with this."""


class SequenceTooLong(ValueError):
    """A request would go past the model's ``max_position_embeddings``: ``tokens`` positions
    asked for, ``limit`` available. Raised before anything is queued or cached."""

    def __init__(self, key: str, tokens: int, limit: int) -> None:
        super().__init__(f"{key!r}: {tokens} tokens exceed the model's {limit} positions")
        self.key = key
        self.tokens = tokens
        self.limit = limit


class HistoryMismatch(ValueError):
    """The token history returned for a request does not have ``offset`` ids."""


@dataclass(frozen=True, slots=True)
class PromptJob:
    """Prefill ``ids`` (the rendered prompt through its end-of-turn) from scratch; query heads at the end."""

    key: str
    ids: Sequence[int]


@dataclass(frozen=True, slots=True)
class ResponseJob:
    """Score ``new_ids`` at positions ``offset ..``; ``history()`` returns the ids before ``offset``."""

    key: str
    offset: int
    new_ids: Sequence[int]
    history: Callable[[], Awaitable[Sequence[int]]]


class LaunchedStep(Protocol):
    """A forward that has been started; ``wait`` blocks until its scores are on the host."""

    def wait(self) -> list[HeadScores | None]: ...


class StepExecutor(Protocol):
    """What the scheduler drives: a KV page table and forwards (``runner.BatchRunner``).

    ``launch`` may return before the device has finished (CUDA runs asynchronously); the scheduler
    then plans the next forward, over other conversations, while this one runs, keeping up to
    ``pipeline_depth`` forwards in flight.
    """

    pool: KVPool
    max_positions: int
    pipeline_depth: int

    def num_categories(self, head: Head) -> int: ...

    def launch(self, plan: StepPlan) -> LaunchedStep: ...


@dataclass(slots=True)
class SchedulerStats:
    steps: int = 0
    rows: int = 0
    tokens: int = 0
    rebuilds: int = 0
    forward_s: float = 0.0
