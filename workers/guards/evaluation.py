"""The evaluation harness: score any ``GuardBackend`` on the evaluation-only prompt and response sets.

Every guard is driven through the ``GuardBackend`` protocol exactly as a worker drives it: a
``PromptRequest`` per prompt (the stream and cascade guards get the prompt rendered with their own
chat format), concurrently, so the backend batches as it would in production. Predictions are the
argmax of the returned risk probabilities, mapped by policy (``metrics``).

Responses (``evaluate_responses``) are streamed exactly as a worker streams them: the prompt
(``PromptRequest``, which also primes the guard's cache), then the answer in chunks of
``chunk_tokens`` ids (the response scaffold in front of the first, the suffix after the last),
each ``ResponseRequest`` at its offset in the conversation's token log, with the debounce
(``decide_chunk``) carried across chunks. The examples come from the evaluation-only response
sets, built as ``stream_heads.streams`` documents (whole answers, and a safe prefix spliced onto a
harmful answer), so the first harmful token of every harmful answer is known. Reported per set
and kind of example, per policy: response-level precision/recall/F1/FPR (flagged = cut off) and,
for harmful answers, where the cut-off fell (``metrics.stream_timing``). The answer is scored to
its end whatever the verdict, so one pass serves both policies; the cut-off a worker would emit is
the first trigger, which does not depend on what follows it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from rich.progress import Progress

from topics.events import Message, Risk, Role
from workers.backends.base import GuardBackend, PromptRequest, ResponseRequest
from workers.engine.debounce import DebounceCarry, decide_chunk
from workers.engine.debounce import Policy as DebouncePolicy
from workers.guards.datasets.corpus import fingerprint
from workers.guards.datasets.records import Record
from workers.guards.metrics import (
    Policy,
    StreamOutcome,
    confusion,
    grouped,
    is_flagged,
    predicted_risk,
    summarise_streams,
)
from workers.guards.stream_heads.streams import StreamedResponse
from workers.guards.stream_heads.tokens import tokenize_response

if TYPE_CHECKING:
    import numpy.typing as npt

    from workers.engine.template import ChatFormat
    from workers.settings import Settings

logger = logging.getLogger(__name__)

GuardKind = Literal["prefilter", "stream", "cascade"]
GUARDS: tuple[GuardKind, ...] = ("prefilter", "stream", "cascade")

Renderer = Callable[[str], Sequence[int]]
T = TypeVar("T")


class GuardUnavailable(RuntimeError):
    """The requested guard cannot be built in this installation."""


def _stream_backend(settings: Settings) -> GuardBackend:
    try:
        module = importlib.import_module("workers.backends.stream")
    except ModuleNotFoundError as exc:
        if exc.name != "workers.backends.stream":
            raise
        raise GuardUnavailable(
            "the stream guard (workers.backends.stream.StreamBackend) is not available in this installation"
        ) from exc
    backend: GuardBackend = module.StreamBackend(settings)
    return backend


def build_guard(kind: GuardKind, settings: Settings) -> GuardBackend:
    """The backend to evaluate, configured by ``settings`` (checkpoint, prefilter head, device).

    Raises:
        GuardUnavailable: ``stream``/``cascade`` without the stream backend module.
    """
    from workers.backends.prefilter import PrefilterBackend

    if kind == "prefilter":
        return PrefilterBackend(settings)
    stream = _stream_backend(settings)
    if kind == "stream":
        return stream
    from workers.backends.cascade import CascadeBackend

    return CascadeBackend(PrefilterBackend(settings), stream)


def renderer_for(kind: GuardKind, backend: GuardBackend) -> Renderer:
    """How a record's text becomes ``PromptRequest.token_ids`` for this guard.

    The prefilter reads text only; the others render a one-turn conversation with their chat format.
    """
    if kind == "prefilter":
        return lambda text: ()
    chat = backend.chat_format
    return lambda text: chat.render_prompt((Message(role=Role.USER, content=text),))


@dataclass(frozen=True, slots=True)
class Scored:
    """One record and what the guard said about it."""

    record: Record
    risk: npt.NDArray[np.float32]
    category: str
    tier: str
    decided: bool


async def score_records(
    backend: GuardBackend,
    records: Sequence[Record],
    render: Renderer,
    *,
    concurrency: int = 64,
    progress: bool = True,
) -> list[Scored]:
    """Score every record's text as a prompt, ``concurrency`` requests in flight, in record order."""
    categories = backend.info.query_categories
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, record: Record) -> tuple[int, Scored]:
        async with gate:
            key = f"eval:{index}:{record.uid}"
            request = PromptRequest(key=key, token_ids=tuple(render(record.text)), text=record.text)
            try:
                scores = await backend.score_prompt(request)
            finally:
                backend.release(key)  # a stream guard primes a response cache we never use
        risk = np.asarray(scores.risk, dtype=np.float32)
        return index, Scored(record, risk, categories[scores.category], scores.tier, scores.decided)

    results: list[tuple[int, Scored]] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("scoring", total=len(records))
        for coro in asyncio.as_completed([one(i, r) for i, r in enumerate(records)]):
            results.append(await coro)
            bar.advance(task)
    return [scored for _, scored in sorted(results, key=lambda pair: pair[0])]


def sample(records: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """A seeded sample of ``limit`` items in their original order (all when ``limit`` is None)."""
    if limit is None or limit >= len(records):
        return list(records)
    chosen = np.random.default_rng(seed).choice(len(records), size=limit, replace=False)
    return [records[i] for i in sorted(chosen.tolist())]


def _flags(scored: Sequence[Scored], policy: Policy) -> tuple[list[bool], list[bool]]:
    gold = [is_flagged(s.record.label, policy) for s in scored]
    predicted = [is_flagged(predicted_risk(s.risk), policy) for s in scored]
    return gold, predicted


def _category_table(scored: Sequence[Scored], predicted: Sequence[bool]) -> dict[str, dict[str, Any]]:
    """Per gold category of unsafe records: recall and, among the caught, category accuracy."""
    table: dict[str, dict[str, Any]] = {}
    for s, flagged in zip(scored, predicted, strict=True):
        if s.record.category is None or not s.record.is_unsafe:
            continue
        row = table.setdefault(s.record.category, {"n": 0, "caught": 0, "category_correct": 0})
        row["n"] += 1
        row["caught"] += int(flagged)
        row["category_correct"] += int(flagged and s.category == s.record.category)
    for row in table.values():
        row["recall"] = row["caught"] / row["n"]
        row["category_accuracy"] = row["category_correct"] / row["caught"] if row["caught"] else None
    return dict(sorted(table.items()))


def summarise(results: Mapping[str, Sequence[Scored]], policy: Policy) -> dict[str, Any]:
    """Metrics of one policy: per set, per language (pooled over sets), per category, overall."""
    everything = [s for scored in results.values() for s in scored]
    gold, predicted = _flags(everything, policy)
    sets = {}
    for name, scored in results.items():
        set_gold, set_predicted = _flags(scored, policy)
        sets[name] = confusion(set_gold, set_predicted).as_dict()
    languages = grouped([s.record.language for s in everything], gold, predicted)
    return {
        "sets": sets,
        "languages": {language: c.as_dict() for language, c in languages.items()},
        "categories": _category_table(everything, predicted),
        "overall": confusion(gold, predicted).as_dict(),
    }


def tier_shares(results: Mapping[str, Sequence[Scored]]) -> dict[str, dict[str, int]]:
    """How many prompts of each set each tier decided."""
    return {name: dict(Counter(s.tier for s in scored)) for name, scored in results.items()}


def confident_decisions(results: Mapping[str, Sequence[Scored]]) -> dict[str, dict[str, int]]:
    """Per set, the prompts the guard marked ``decided`` and how many of those it got wrong.

    For the prefilter these are exactly the prompts a cascade would settle without the stream
    guard, so their errors are errors the cascade inherits. ``blocked_not_unsafe`` counts decided
    unsafe verdicts on prompts whose gold label is not unsafe; ``allowed_not_safe`` decided safe
    verdicts on prompts whose gold label is not safe.
    """
    table: dict[str, dict[str, int]] = {}
    for name, scored in results.items():
        row = {"prompts": len(scored), "decided": 0, "blocked": 0, "blocked_not_unsafe": 0}
        row |= {"allowed": 0, "allowed_not_safe": 0}
        for s in scored:
            if not s.decided:
                continue
            row["decided"] += 1
            if predicted_risk(s.risk) is Risk.UNSAFE:
                row["blocked"] += 1
                row["blocked_not_unsafe"] += int(s.record.label is not Risk.UNSAFE)
            elif predicted_risk(s.risk) is Risk.SAFE:
                row["allowed"] += 1
                row["allowed_not_safe"] += int(s.record.label is not Risk.SAFE)
        table[name] = row
    return table


def _history(ids: Sequence[int]) -> Callable[[], Awaitable[Sequence[int]]]:
    """The token log up to a request's offset, for a guard that must rebuild its cache."""
    snapshot = tuple(ids)

    async def read() -> Sequence[int]:
        return snapshot

    return read


async def stream_response(
    backend: GuardBackend,
    chat: ChatFormat,
    example: StreamedResponse,
    key: str,
    *,
    chunk_tokens: int,
    max_response_tokens: int | None = None,
) -> StreamOutcome:
    """Stream ``example`` through ``backend`` as a worker does (module docstring)."""
    tokens = tokenize_response(chat, example, max_response_tokens=max_response_tokens)
    log = list(tokens.prompt_ids)
    await backend.score_prompt(PromptRequest(key=key, token_ids=tuple(log), text=example.prompt))
    judged_all = [*tokens.content_ids, *tokens.suffix_ids]
    carry = DebounceCarry()
    for start in range(0, len(judged_all), chunk_tokens):
        judged = judged_all[start : start + chunk_tokens]
        prefix = list(chat.response_prefix) if start == 0 else []
        new_ids = prefix + judged
        request = ResponseRequest(key=key, offset=len(log), new_ids=new_ids, history=_history(log))
        scores = await backend.score_response(request)
        log.extend(new_ids)
        # The carry does not depend on the policy; the cut-off of either policy is read from it.
        carry, _ = decide_chunk(
            carry,
            scores.risk[len(prefix) :],
            scores.category[len(prefix) :],
            start=start,
            policy=DebouncePolicy.STRICT,
        )
    return StreamOutcome(harmful_from=tokens.harmful_from, sentence_end=tokens.sentence_end, carry=carry)


async def evaluate_responses(
    backend: GuardBackend,
    sets: Mapping[str, Sequence[StreamedResponse]],
    policies: Sequence[Policy],
    *,
    chunk_tokens: int = 16,
    max_response_tokens: int | None = None,
    concurrency: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream every example of every set through the started ``backend``; summarise per policy.

    Returns a JSON-ready dict: ``sets`` (size, harmful count, kinds per set) and, per policy, per
    set, per kind of example (and ``all``), ``summarise_streams``'s response-level confusion and
    cut-off timing.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    chat = backend.chat_format
    gate = asyncio.Semaphore(concurrency)
    jobs = [(name, i, example) for name, examples in sets.items() for i, example in enumerate(examples)]

    async def one(name: str, index: int, example: StreamedResponse) -> tuple[str, str, StreamOutcome]:
        async with gate:
            key = f"eval-response:{name}:{index}"
            try:
                outcome = await stream_response(
                    backend, chat, example, key, chunk_tokens=chunk_tokens, max_response_tokens=max_response_tokens
                )
            finally:
                backend.release(key)
        return name, example.kind, outcome

    # Outcomes arrive in completion order; every summary of them (counts, median, p90) ignores order.
    grouped_outcomes: dict[str, dict[str, list[StreamOutcome]]] = {name: {} for name in sets}
    with Progress(disable=not progress) as bar:
        task = bar.add_task("streaming responses", total=len(jobs))
        for coro in asyncio.as_completed([one(*job) for job in jobs]):
            name, kind, outcome = await coro
            grouped_outcomes[name].setdefault(kind, []).append(outcome)
            grouped_outcomes[name].setdefault("all", []).append(outcome)
            bar.advance(task)
    return {
        "measured": True,
        "chunk_tokens": chunk_tokens,
        "max_response_tokens": max_response_tokens,
        "sets": {
            name: {
                "n": len(examples),
                "harmful": sum(e.harmful for e in examples),
                "kinds": dict(Counter(e.kind for e in examples)),
                "languages": sorted({e.language for e in examples}),
            }
            for name, examples in sets.items()
        },
        "policies": {
            policy: {
                name: {kind: summarise_streams(outcomes, policy) for kind, outcomes in kinds.items()}
                for name, kinds in grouped_outcomes.items()
            }
            for policy in policies
        },
    }


async def evaluate(
    kind: GuardKind,
    backend: GuardBackend,
    sets: Mapping[str, Sequence[Record]],
    policies: Sequence[Policy],
    *,
    responses: Mapping[str, Sequence[StreamedResponse]] | None = None,
    chunk_tokens: int = 16,
    max_response_tokens: int | None = None,
    concurrency: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Start ``backend``, score every prompt set (and stream every response set), close it.

    Raises:
        ValueError: response sets were given for the prefilter, which judges prompts only.
    """
    if responses and kind == "prefilter":
        raise ValueError("the prefilter judges prompts only; evaluate responses with --guard stream or cascade")
    await backend.start()
    try:
        render = renderer_for(kind, backend)
        results: dict[str, list[Scored]] = {}
        for name, records in sets.items():
            logger.info("scoring %s (%s prompts)", name, len(records))
            results[name] = await score_records(backend, records, render, concurrency=concurrency, progress=progress)
        streamed: dict[str, Any] = {"measured": False, "reason": "no response sets were requested"}
        if responses:
            streamed = await evaluate_responses(
                backend,
                responses,
                policies,
                chunk_tokens=chunk_tokens,
                max_response_tokens=max_response_tokens,
                concurrency=concurrency,
                progress=progress,
            )
        info = backend.info
    finally:
        await backend.close()
    return {
        "guard": kind,
        "model": {
            "model_id": info.model_id,
            "revision": info.revision,
            "tier": info.tier,
            "is_test_checkpoint": info.is_test_checkpoint,
        },
        "sets": {
            name: {
                "n": len(scored),
                "languages": sorted({s.record.language for s in scored}),
                "labels": dict(Counter(s.record.label.value for s in scored)),
                # Order-free (scoring may finish in any order): results compare only when equal.
                "fingerprint": fingerprint(sorted((s.record for s in scored), key=lambda r: r.uid))[:16],
            }
            for name, scored in results.items()
        },
        "tiers": tier_shares(results),
        "decisions": confident_decisions(results),
        "policies": {policy: summarise(results, policy) for policy in policies},
        "responses": streamed,
    }
