"""Where a replay's verdicts differ from the archived ones, message by message and chunk by chunk.

Two decisions of one prompt or chunk differ when their risk, category, action, status, token range
or flagged token differ; the probabilities are shown, not compared (a batch of other shape moves
them in the last digits). A chunk one side judged and the other did not (a cut-off earlier on one
side answers the rest ``after_cutoff``, or the archive holds a chunk the original never judged)
differs by its status. The cut-offs are compared by where they cut: stage, seq, token, category.
"""

from __future__ import annotations

from dataclasses import dataclass

from topics.events import Stage
from workers.audit.report import ConversationReport, Cutoff, Judgement, MessageReport, ModelRef

COMPARED = ("risk", "category", "action", "status")
"""The ``Judgement`` fields two decisions must share to agree."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One verdict's decision, as compared: its judgement, the tokens it covered, its flagged token."""

    judgement: Judgement
    token_start: int | None
    token_end: int | None
    flagged_token: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDifference:
    """A prompt (``seq`` None) or chunk on which the two sides decided differently; ``changed``
    names what differs (``COMPARED`` fields, ``tokens``, ``flagged_token``, or ``judged``)."""

    stage: Stage
    seq: int | None
    original: Decision | None
    replayed: Decision | None
    changed: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageComparison:
    """One message: both cut-offs, whether they cut in different places, and every step where the
    decisions differ; ``differs``: either."""

    message_id: str
    original_cutoff: Cutoff | None
    replayed_cutoff: Cutoff | None
    cut_moved: bool
    differences: tuple[StepDifference, ...]
    differs: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    """The replay of a conversation against its archive."""

    checkpoint: str
    models: tuple[ModelRef, ...]
    policy: str | None
    """The policy the replay judged every message under; None: each message's original one."""
    messages: tuple[MessageComparison, ...]
    differs: bool
    """Some message's decisions or cut-off differ."""
    replayed: ConversationReport
    notes: tuple[str, ...]


def compare(
    original: ConversationReport,
    replayed: ConversationReport,
    *,
    checkpoint: str,
    policy: str | None,
    notes: tuple[str, ...] = (),
) -> ReplayReport:
    """Compare every message of ``original`` with its replay in ``replayed``."""
    by_id = {m.message_id: m for m in replayed.messages}
    messages = tuple(_message(m, by_id.get(m.message_id)) for m in original.messages)
    models = tuple(dict.fromkeys(model for m in replayed.messages for model in m.models))
    return ReplayReport(
        checkpoint=checkpoint,
        models=models,
        policy=policy,
        messages=messages,
        differs=any(m.differs for m in messages),
        replayed=replayed,
        notes=notes,
    )


def _message(original: MessageReport, replayed: MessageReport | None) -> MessageComparison:
    theirs = _decisions(replayed) if replayed is not None else {}
    ours = _decisions(original)
    differences = []
    for step in sorted(ours.keys() | theirs.keys(), key=_step_order):
        changed = _changed(ours.get(step), theirs.get(step))
        if changed:
            stage, seq = step
            differences.append(
                StepDifference(
                    stage=stage, seq=seq, original=ours.get(step), replayed=theirs.get(step), changed=changed
                )
            )
    replayed_cutoff = None if replayed is None else replayed.cutoff
    cut_moved = _where(original.cutoff) != _where(replayed_cutoff)
    return MessageComparison(
        message_id=original.message_id,
        original_cutoff=original.cutoff,
        replayed_cutoff=replayed_cutoff,
        cut_moved=cut_moved,
        differences=tuple(differences),
        differs=cut_moved or bool(differences),
    )


def _decisions(message: MessageReport) -> dict[tuple[Stage, int | None], Decision]:
    decisions: dict[tuple[Stage, int | None], Decision] = {}
    if message.prompt is not None:
        decisions[(Stage.PROMPT, None)] = Decision(
            judgement=message.prompt.judgement, token_start=None, token_end=None, flagged_token=None
        )
    for step in message.chunks:
        if step.judgement is not None:
            decisions[(Stage.RESPONSE, step.seq)] = Decision(
                judgement=step.judgement,
                token_start=step.token_start,
                token_end=step.token_end,
                flagged_token=step.flagged_token,
            )
    return decisions


def _changed(ours: Decision | None, theirs: Decision | None) -> tuple[str, ...]:
    if ours is None or theirs is None:
        return () if ours is theirs else ("judged",)
    changed = [name for name in COMPARED if getattr(ours.judgement, name) != getattr(theirs.judgement, name)]
    if (ours.token_start, ours.token_end) != (theirs.token_start, theirs.token_end):
        changed.append("tokens")
    if ours.flagged_token != theirs.flagged_token:
        changed.append("flagged_token")
    return tuple(changed)


def _step_order(step: tuple[Stage, int | None]) -> tuple[int, int]:
    stage, seq = step
    return (0, 0) if stage is Stage.PROMPT else (1, seq if seq is not None else -1)


def _where(cutoff: Cutoff | None) -> tuple[object, ...] | None:
    if cutoff is None:
        return None
    return (cutoff.stage, cutoff.seq, cutoff.token_index, cutoff.risk, cutoff.category)
