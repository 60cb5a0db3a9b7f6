"""``audit``: read a conversation from the archive, report it, and replay it when asked.

Flagged tokens' text needs the guard's tokenizer: that of ``tokenizer`` (a checkpoint, named as
``guard.checkpoint`` names one) when given, else the replay guard's; without either, a flagged
token is reported by index and chunk only. Both load transformers, lazily, as does the replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.audit.compare import ReplayReport, compare
from workers.audit.read import ArchivedConversation, read_conversation
from workers.audit.report import ConversationReport, TokenTexts, build_report
from workers.engine.debounce import Policy
from workers.settings import Settings

FORMAT = "streamwarden.audit/1"
"""The ``format`` of the JSON document; a breaking change to its shape bumps the number."""


class NothingToReplay(LookupError):
    """The archive holds no prompt of the conversation: it was archived without its text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """What ``audit`` found: the archived decisions, and the replay when one was asked for.

    ``tokenizer``: the checkpoint whose tokenizer resolved flagged tokens' text (None: not resolved).
    """

    format: str
    archive: str
    report: ConversationReport
    tokenizer: str | None
    replay: ReplayReport | None


async def audit(
    archive: Path,
    conversation_id: str,
    settings: Settings,
    *,
    replay_checkpoint: str | None = None,
    policy: Policy | None = None,
    tokenizer: str | None = None,
) -> Audit:
    """Audit ``conversation_id`` in the archive at ``archive``; with ``replay_checkpoint``, re-judge
    it with the configured guard backend over that checkpoint, under ``policy`` when given.

    Raises:
        ConversationNotArchived: the archive holds nothing of the conversation.
        NothingToReplay: a replay was asked for, and the archive holds no prompt of it.
    """
    conversation = read_conversation(archive, conversation_id)
    if replay_checkpoint is None:
        tokens = None if tokenizer is None else _tokens_of(settings, tokenizer)
        report = build_report(conversation, tokens)
        return Audit(format=FORMAT, archive=str(archive), report=report, tokenizer=tokenizer, replay=None)
    if not conversation.prompts:
        why = "its text was not archived (--no-text)" if not conversation.has_text else "no prompt was archived"
        raise NothingToReplay(f"conversation {conversation_id!r} cannot be re-judged: {why}")
    report, replayed = await _replay(conversation, settings, replay_checkpoint, policy, tokenizer)
    return Audit(
        format=FORMAT,
        archive=str(archive),
        report=report,
        tokenizer=tokenizer or replay_checkpoint,
        replay=replayed,
    )


async def _replay(
    conversation: ArchivedConversation,
    settings: Settings,
    checkpoint: str,
    policy: Policy | None,
    tokenizer: str | None,
) -> tuple[ConversationReport, ReplayReport]:
    from workers.audit.replay import guard_backend, replay
    from workers.audit.tokens import ChatFormatTokens

    async with guard_backend(settings, checkpoint) as backend:
        replayed = await replay(backend, conversation, settings, policy=policy)
        tokens = ChatFormatTokens(backend.chat_format) if tokenizer is None else _tokens_of(settings, tokenizer)
        original = build_report(conversation, tokens)
        again = build_report(replayed.conversation, tokens)
    policy_name = None if policy is None else policy.value
    return original, compare(original, again, checkpoint=checkpoint, policy=policy_name, notes=replayed.notes)


def _tokens_of(settings: Settings, checkpoint: str) -> TokenTexts:
    from workers.audit.tokens import ChatFormatTokens, checkpoint_chat_format

    return ChatFormatTokens(checkpoint_chat_format(settings, checkpoint))
