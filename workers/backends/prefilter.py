"""The prefilter as a ``GuardBackend``: judges prompt text with the embedding classifier.

Configured by ``guard.prefilter_model`` (a head directory, ``default`` = the shipped one),
``guard.prefilter_encoder`` (``default`` = the encoder the head was trained with) and
``guard.prefilter_dtype`` (``auto``: the head's training precision on CUDA and on CPUs with
bfloat16 instructions; float32 on other CPUs, which emulate bfloat16 6x slower, with the same
scores to three decimals; ``workers.engine.precision``). Requests that
arrive while a batch is being scored are scored together in the next batch (no added wait), and
the model runs in a worker thread, never on the event loop.

``PromptScores.decided`` is True when the head is confident (``prefilter_meta.is_decided``): the
cascade skips the stream guard then. The prefilter judges prompts only: ``score_response``
raises ``PromptOnlyError``, and it has no chat format of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from workers.backends.base import ModelInfo, PromptRequest, PromptScores, ResponseRequest, ResponseScores
from workers.backends.prefilter_meta import (
    HEAD_FILE,
    META_FILE,
    PrefilterMeta,
    Thresholds,
    is_decided,
    resolve_model_dir,
)
from workers.engine.loading import load_in_thread
from workers.settings import Settings

if TYPE_CHECKING:
    from workers.backends.encoder import EncoderDtype
    from workers.backends.prefilter_model import TextScores
    from workers.engine.template import ChatFormat

logger = logging.getLogger(__name__)

TIER = "prefilter"


class PromptOnlyError(RuntimeError):
    """The prefilter was asked for something only a stream guard does (responses, rendering)."""


class TextScorer(Protocol):
    """What the backend needs of a model: ``workers.backends.prefilter_model.Prefilter`` in production."""

    def score(self, texts: Sequence[str]) -> TextScores: ...


_Pending = tuple[str, "asyncio.Future[PromptScores]"]


def _revision(directory: Path) -> str:
    """First 12 hex digits of the head file's SHA-256 (meta.json's when there is no head file)."""
    path = directory / HEAD_FILE
    return hashlib.sha256((path if path.is_file() else directory / META_FILE).read_bytes()).hexdigest()[:12]


def _device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class PrefilterBackend:
    """Prompt-only guard backend around a ``TextScorer``.

    Args:
        settings: reads ``guard.prefilter_model``, ``guard.prefilter_encoder`` and ``engine.device``.
        load: builds the scorer on ``start()``; defaults to loading ``Prefilter`` from the settings.
        max_batch: most prompts scored in one forward.
        thresholds: overrides the head's own (``meta.json``, chosen on its validation split), for a
            deployment that chose others on validation data of its own.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        load: Callable[[], TextScorer] | None = None,
        max_batch: int = 64,
        thresholds: Thresholds | None = None,
    ) -> None:
        self._directory = resolve_model_dir(settings.guard.prefilter_model)
        self.meta = PrefilterMeta.read(self._directory)
        self.thresholds = thresholds or self.meta.thresholds
        self._encoder = settings.guard.prefilter_encoder
        self._device_setting = settings.engine.device
        self._dtype_setting = settings.guard.prefilter_dtype
        self._load = load or self._load_prefilter
        self._max_batch = max_batch
        self._info = ModelInfo(
            model_id=f"streamwarden-prefilter/{self.meta.encoder}",
            revision=_revision(self._directory),
            tier=TIER,
            query_categories=self.meta.categories,
            response_categories=(),
        )
        self._scorer: TextScorer | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    def _load_prefilter(self) -> TextScorer:
        from workers.backends.prefilter_model import Prefilter
        from workers.engine.precision import cpu_has_native_bfloat16

        device = _device(self._device_setting)
        dtype: EncoderDtype | None = None  # the head's training precision
        if self._dtype_setting != "auto":
            dtype = self._dtype_setting
        elif device == "cpu" and not cpu_has_native_bfloat16():
            dtype = "float32"  # emulated bfloat16 is slower; the head's probe check still guards the embeddings
        return Prefilter.load(str(self._directory), encoder=self._encoder, device=device, dtype=dtype)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def chat_format(self) -> ChatFormat:
        raise PromptOnlyError(
            "the prefilter judges prompt text and has no chat format; use the stream or cascade guard"
        )

    async def start(self) -> None:
        if self._task is not None:
            return
        self._scorer = await load_in_thread(self._load)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._serve(self._scorer, self._queue), name="prefilter-batches")

    async def close(self) -> None:
        task, queue = self._task, self._queue
        self._task = self._queue = None
        self._scorer = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while queue is not None and not queue.empty():
            _, future = queue.get_nowait()
            if not future.done():
                future.set_exception(PromptOnlyError("the prefilter was closed before scoring this prompt"))

    def unavailable(self) -> str | None:
        task = self._task
        if task is None:
            return "the prefilter is not started"
        if task.done():
            error = None if task.cancelled() else task.exception()
            return f"the prefilter's batch task ended ({error!r})"
        return None

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        """Score ``request.text`` (the user's message); ``token_ids`` are not used.

        Raises:
            RuntimeError: ``start()`` was not awaited.
            ValueError: the request carries no text.
        """
        if self._queue is None:
            raise RuntimeError("PrefilterBackend.start() must be awaited before scoring")
        if not request.text.strip():
            raise ValueError(f"prompt {request.key!r} has no text; the prefilter judges prompt text")
        future: asyncio.Future[PromptScores] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request.text, future))
        return await future

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        raise PromptOnlyError("the prefilter judges prompts only; responses need the stream guard")

    def release(self, key: str) -> None:
        """Nothing to release: the prefilter keeps no per-conversation state."""

    def engine_stats(self) -> Mapping[str, float]:
        """No engine: the encoder has no per-conversation cache or forwards to count."""
        return {}

    async def _serve(self, scorer: TextScorer, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            live = [(text, future) for text, future in batch if not future.done()]
            if not live:
                continue
            try:
                scores = await asyncio.to_thread(scorer.score, [text for text, _ in live])
            except Exception as exc:  # task boundary: fail this batch's prompts, keep serving
                logger.exception("prefilter batch of %s prompts failed", len(live))
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for row, (_, future) in enumerate(live):
                if not future.done():
                    future.set_result(self._prompt_scores(scores, row))

    def _prompt_scores(self, scores: TextScores, row: int) -> PromptScores:
        risk = scores.risk[row]
        return PromptScores(
            risk=risk,
            category=int(scores.category[row]),
            category_prob=float(scores.category_prob[row]),
            tier=TIER,
            decided=is_decided(risk, self.thresholds),
        )
