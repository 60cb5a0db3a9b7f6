"""What was decided for each message of a conversation, and why: the report ``audit`` prints.

A message is one ``message_id``: its prompt verdict, the risk trajectory of its answer chunk by
chunk, the tokens where the debounce fired (``flagged_token``, with the token's text when a
tokenizer is at hand), its cut-off, and who decided: model and revision, policy and version,
worker. Everything comes from archived events; nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from topics.events import (
    Action,
    ControlEvent,
    PromptEvent,
    Risk,
    Role,
    Stage,
    TokenChunkEvent,
    VerdictEvent,
    VerdictStatus,
)
from workers.audit.read import ArchivedConversation

T = TypeVar("T")

TokenTexts = Callable[[Sequence[TokenChunkEvent]], Sequence[str]]
"""The text of every response token of a message's chunks (in ``seq`` order), numbered as the
worker numbered them, so ``flagged_token`` and the token ranges index into it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """What one verdict said."""

    risk: Risk
    category: str | None
    action: Action
    status: VerdictStatus
    p_unsafe: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptVerdict:
    """The prompt's verdict: its judgement, the tier that decided, and how long the worker took."""

    judgement: Judgement
    tier: str
    latency_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkStep:
    """One chunk of the answer: what was sent (None where the archive holds no text) and what was
    judged (``judgement`` None: no verdict was archived for it)."""

    seq: int
    text: str | None
    token_ids: tuple[int, ...] | None
    final: bool
    token_start: int | None
    token_end: int | None
    judgement: Judgement | None
    flagged_token: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FlaggedToken:
    """A response token where the debounce fired: its index in the answer, the chunk whose verdict
    flagged it, the action it led to, and its text (None without a tokenizer, or beyond the archived
    text). The worker judges a word once the text after it shows the word complete, so the token's
    text may have come in a chunk before ``seq``."""

    index: int
    seq: int
    action: Action
    category: str | None
    text: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cutoff:
    """Where and why the message was cut off (the ``ControlEvent``)."""

    stage: Stage
    seq: int | None
    token_index: int | None
    risk: Risk
    category: str | None
    policy: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRef:
    model_id: str
    revision: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRef:
    name: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReport:
    """One message's decisions. ``models``, ``policies`` and ``workers`` are the distinct ones of
    its verdicts, in order: more than one means the message moved (a rebalance, a rolling upgrade)."""

    message_id: str
    prompt_text: str | None
    prompt: PromptVerdict | None
    chunks: tuple[ChunkStep, ...]
    flagged: tuple[FlaggedToken, ...]
    cutoff: Cutoff | None
    models: tuple[ModelRef, ...]
    policies: tuple[PolicyRef, ...]
    workers: tuple[str, ...]

    @property
    def cut_step(self) -> ChunkStep | None:
        """The chunk whose verdict cut the answer off, if one did."""
        return next((c for c in self.chunks if _cuts(c)), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationReport:
    """Every message of one conversation, in the order its turns began."""

    conversation_id: str
    messages: tuple[MessageReport, ...]
    has_text: bool
    undecodable: int


def build_report(conversation: ArchivedConversation, tokens: TokenTexts | None = None) -> ConversationReport:
    """The report of ``conversation``; ``tokens`` resolves flagged tokens' text (None: not resolved)."""
    order = _distinct(
        [p.message_id for p in conversation.prompts]
        + [v.message_id for v in sorted(conversation.verdicts, key=lambda v: v.ts_ms)]
        + [c.message_id for c in conversation.chunks]
        + [c.message_id for c in conversation.cutoffs]
    )
    messages = tuple(_message(conversation, message_id, tokens) for message_id in order)
    return ConversationReport(
        conversation_id=conversation.conversation_id,
        messages=messages,
        has_text=conversation.has_text,
        undecodable=conversation.undecodable,
    )


def _message(conversation: ArchivedConversation, message_id: str, tokens: TokenTexts | None) -> MessageReport:
    prompt_event = next((p for p in conversation.prompts if p.message_id == message_id), None)
    verdicts = [v for v in conversation.verdicts if v.message_id == message_id]
    prompt = next((v for v in verdicts if v.stage is Stage.PROMPT), None)
    responses = {v.seq: v for v in verdicts if v.stage is Stage.RESPONSE and v.seq is not None}
    chunks = {c.seq: c for c in conversation.chunks if c.message_id == message_id}
    steps = tuple(_step(seq, chunks.get(seq), responses.get(seq)) for seq in sorted(chunks.keys() | responses.keys()))
    control = next((c for c in conversation.cutoffs if c.message_id == message_id), None)
    texts = tokens(_in_order(chunks)) if tokens is not None and chunks else None
    return MessageReport(
        message_id=message_id,
        prompt_text=_prompt_text(prompt_event),
        prompt=None if prompt is None else _prompt_verdict(prompt),
        chunks=steps,
        flagged=tuple(_flagged(step, texts) for step in steps if step.flagged_token is not None),
        cutoff=None if control is None else _cutoff(control),
        models=_distinct(ModelRef(model_id=v.model_id, revision=v.model_revision) for v in verdicts),
        policies=_distinct(PolicyRef(name=v.policy, version=v.policy_version) for v in verdicts),
        workers=_distinct(v.worker_id for v in verdicts),
    )


def judgement_of(verdict: VerdictEvent) -> Judgement:
    return Judgement(
        risk=verdict.risk,
        category=verdict.category,
        action=verdict.action,
        status=verdict.status,
        p_unsafe=None if verdict.probs is None else verdict.probs.unsafe,
    )


def _prompt_verdict(verdict: VerdictEvent) -> PromptVerdict:
    return PromptVerdict(judgement=judgement_of(verdict), tier=verdict.tier, latency_ms=verdict.latency_ms)


def _step(seq: int, chunk: TokenChunkEvent | None, verdict: VerdictEvent | None) -> ChunkStep:
    return ChunkStep(
        seq=seq,
        text=None if chunk is None else chunk.text,
        token_ids=None if chunk is None else chunk.token_ids,
        final=chunk is not None and chunk.final,
        token_start=None if verdict is None else verdict.token_start,
        token_end=None if verdict is None else verdict.token_end,
        judgement=None if verdict is None else judgement_of(verdict),
        flagged_token=None if verdict is None else verdict.flagged_token,
    )


def _flagged(step: ChunkStep, texts: Sequence[str] | None) -> FlaggedToken:
    assert step.flagged_token is not None and step.judgement is not None
    index = step.flagged_token
    return FlaggedToken(
        index=index,
        seq=step.seq,
        action=step.judgement.action,
        category=step.judgement.category,
        text=texts[index] if texts is not None and 0 <= index < len(texts) else None,
    )


def _cutoff(control: ControlEvent) -> Cutoff:
    return Cutoff(
        stage=control.stage,
        seq=control.seq,
        token_index=control.token_index,
        risk=control.risk,
        category=control.category,
        policy=control.policy,
        reason=control.reason,
    )


def _prompt_text(prompt: PromptEvent | None) -> str | None:
    """The judged user turn (the last user message); None for a prompt sent as token ids."""
    if prompt is None:
        return None
    return next((m.content for m in reversed(prompt.messages) if m.role is Role.USER), None)


def _in_order(chunks: dict[int, TokenChunkEvent]) -> list[TokenChunkEvent]:
    """The chunks from seq 0 up to the first gap: the worker judged nothing past a missing one."""
    ordered: list[TokenChunkEvent] = []
    while len(ordered) in chunks:
        ordered.append(chunks[len(ordered)])
    return ordered


def _cuts(step: ChunkStep) -> bool:
    judged = step.judgement
    return judged is not None and judged.action is Action.CUTOFF and judged.status is not VerdictStatus.AFTER_CUTOFF


def _distinct(items: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(items))
