"""The report of a conversation: each message's decisions and who made them, from archived events only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.unit.audit.archive import (
    CID,
    chunk,
    cut_off_conversation,
    prompt,
    verdict,
    words,
    write_archive,
)
from topics.events import Action, Risk, Stage, VerdictStatus
from workers.audit import build_report, read_conversation
from workers.audit.report import Cutoff, FlaggedToken, ModelRef, PolicyRef


def test_a_cut_off_answer_is_reconstructed_message_by_message(tmp_path: Path) -> None:
    write_archive(tmp_path, cut_off_conversation())

    (message,) = build_report(read_conversation(tmp_path, CID), words).messages

    assert message.message_id == "m1" and message.prompt_text == "Tell me a story."
    assert message.prompt is not None
    assert (message.prompt.judgement.risk, message.prompt.judgement.action) == (Risk.SAFE, Action.ALLOW)
    assert (message.prompt.tier, message.prompt.latency_ms) == ("stream", 2.5)
    assert [s.judgement and s.judgement.p_unsafe for s in message.chunks] == [0.25, 0.75, 0.0]
    assert message.prompt.judgement.p_unsafe == 0.125  # float32 in Parquet: the values are exact in it
    trajectory = [(s.seq, s.token_start, s.token_end, s.judgement and s.judgement.risk) for s in message.chunks]
    assert trajectory == [(0, 0, 3, Risk.SAFE), (1, 3, 5, Risk.UNSAFE), (2, 5, 5, Risk.UNSAFE)]
    assert [s.text for s in message.chunks] == ["Once upon a ", "time BAD ", "things "]
    assert message.chunks[2].judgement is not None and message.chunks[2].judgement.status is VerdictStatus.AFTER_CUTOFF
    assert message.flagged == (FlaggedToken(index=4, seq=1, action=Action.CUTOFF, category="Violent", text="BAD"),)
    assert message.cutoff == Cutoff(
        stage=Stage.RESPONSE,
        seq=1,
        token_index=4,
        risk=Risk.UNSAFE,
        category="Violent",
        policy="strict",
        reason="response judged unsafe under the strict policy",
    )
    assert message.cut_step is not None and message.cut_step.seq == 1
    assert message.models == (ModelRef(model_id="planted", revision="r1"),)
    assert message.policies == (PolicyRef(name="strict", version=1),)
    assert message.workers == ("w1", "w2")  # the conversation moved to another worker mid-answer


def test_without_a_tokenizer_the_flagged_token_is_reported_by_index_only(tmp_path: Path) -> None:
    write_archive(tmp_path, cut_off_conversation())

    (message,) = build_report(read_conversation(tmp_path, CID)).messages

    assert [(f.index, f.seq, f.text) for f in message.flagged] == [(4, 1, None)]


def test_messages_come_in_the_order_their_turns_began_and_unjudged_chunks_show(tmp_path: Path) -> None:
    second = [
        prompt("And then?", message_id="m2"),
        verdict(None, message_id="m2", model="planted-v2"),
        chunk(0, "Nothing ", message_id="m2"),  # the archive caught it before any verdict of it
    ]
    write_archive(tmp_path, [*cut_off_conversation(), *second])

    first, later = build_report(read_conversation(tmp_path, CID), words).messages

    assert (first.message_id, later.message_id) == ("m1", "m2")
    assert later.cutoff is None and later.flagged == () and later.cut_step is None
    assert [(s.seq, s.text, s.judgement) for s in later.chunks] == [(0, "Nothing ", None)]
    assert later.models == (ModelRef(model_id="planted-v2", revision="r1"),)


def test_a_message_known_only_by_its_verdicts_is_reported(tmp_path: Path) -> None:
    events = [e for e in cut_off_conversation() if not hasattr(e, "messages") and not hasattr(e, "final")]
    write_archive(tmp_path, [*events, replace(verdict(None), event_id="other", message_id="m0", ts_ms=1)])

    report = build_report(read_conversation(tmp_path, CID), words)

    assert [m.message_id for m in report.messages] == ["m0", "m1"]
    assert report.messages[1].prompt_text is None and report.messages[1].chunks[1].text is None
    assert report.messages[1].flagged[0].text is None  # no text archived, nothing to tokenise
    assert not report.has_text
