"""Re-judging an archived conversation through the worker's moderator, and what the comparison shows."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import FakeBackend
from tests.unit.audit.archive import CID, chunk, prompt, write_archive
from topics.events import Action, Risk, Stage, VerdictStatus
from workers.audit import ArchivedConversation, build_report, read_conversation
from workers.audit.compare import compare
from workers.audit.replay import REPLAY_WORKER_ID, replay
from workers.audit.tokens import ChatFormatTokens
from workers.engine.debounce import Policy
from workers.settings import Settings

TEXT = [chunk(0, "This is a MEH topic "), chunk(1, "and then BAD BAD things "), chunk(2, "follow.", final=True)]


async def _archived_under_loose(out: Path, backend: FakeBackend, settings: Settings) -> ArchivedConversation:
    """The conversation as a worker with ``backend`` judged it under ``loose``, archived."""
    sent = ArchivedConversation(
        conversation_id=CID,
        prompts=(prompt(policy="loose"),),
        chunks=tuple(TEXT),
        verdicts=(),
        cutoffs=(),
        undecodable=0,
        has_text=True,
    )
    judged = (await replay(backend, sent, settings)).conversation
    write_archive(out, [*judged.prompts, *judged.chunks, *judged.verdicts, *judged.cutoffs])
    return read_conversation(out, CID)


async def test_the_same_guard_decides_every_message_as_the_archive_says(tmp_path: Path) -> None:
    backend, settings = FakeBackend(), Settings()
    archived = await _archived_under_loose(tmp_path, backend, settings)
    tokens = ChatFormatTokens(backend.chat_format)
    original = build_report(archived, tokens)
    (message,) = original.messages
    assert [s.judgement and s.judgement.action for s in message.chunks] == [Action.FLAG, Action.CUTOFF, Action.CUTOFF]
    assert message.chunks[2].judgement is not None and message.chunks[2].judgement.status is VerdictStatus.AFTER_CUTOFF
    assert message.cutoff is not None and message.cutoff.seq == 1
    assert [f.text for f in message.flagged] == ["H", " BAD"]  # the second of two risky tokens fires the debounce

    again = await replay(backend, archived, settings)

    assert {v.worker_id for v in again.conversation.verdicts} == {REPLAY_WORKER_ID}
    assert {v.policy for v in again.conversation.verdicts} == {"loose"}  # each message's own policy
    report = compare(original, build_report(again.conversation, tokens), checkpoint="fake", policy=None)
    assert not report.differs and report.messages[0].differences == () and not report.messages[0].cut_moved
    assert report.notes == ()


async def test_a_stricter_policy_cuts_earlier_and_every_change_is_shown(tmp_path: Path) -> None:
    backend, settings = FakeBackend(), Settings()
    archived = await _archived_under_loose(tmp_path, backend, settings)

    again = await replay(backend, archived, settings, policy=Policy.STRICT)

    report = compare(build_report(archived), build_report(again.conversation), checkpoint="fake", policy="strict")
    (message,) = report.messages
    assert report.differs and message.cut_moved
    assert message.original_cutoff is not None and message.original_cutoff.seq == 1
    assert message.replayed_cutoff is not None and message.replayed_cutoff.seq == 0
    assert message.replayed_cutoff.risk is Risk.CONTROVERSIAL
    by_seq = {d.seq: d for d in message.differences}
    assert set(by_seq) == {0, 1, 2}  # the prompt is judged alike
    assert by_seq[0].changed == ("action",)
    assert by_seq[0].replayed is not None and by_seq[0].replayed.judgement.action is Action.CUTOFF
    assert by_seq[1].stage is Stage.RESPONSE and "status" in by_seq[1].changed
    assert by_seq[1].replayed is not None and by_seq[1].replayed.judgement.status is VerdictStatus.AFTER_CUTOFF
    assert "tokens" in by_seq[2].changed  # after the cut on both sides, but after another one


async def test_what_cannot_be_replayed_is_noted(tmp_path: Path) -> None:
    orphan = chunk(0, "an answer without its prompt", message_id="m9")
    gap = [chunk(0, "first "), chunk(2, "third ")]
    write_archive(tmp_path, [prompt(), *gap, orphan])

    again = await replay(FakeBackend(), read_conversation(tmp_path, CID), Settings())

    assert [v.seq for v in again.conversation.verdicts] == [None, 0]
    assert again.notes == (
        "message m1: seq 1 is not in the archive; replayed up to it",
        "message m9: its prompt is not in the archive, so its answer cannot be re-judged",
    )
