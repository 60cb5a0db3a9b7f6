"""Reading one conversation out of the archive: every table, each record once, nothing of others."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.audit.archive import CID, chunk, cut_off_conversation, prompt, verdict, write_archive
from topics.events import PromptEvent, TokenChunkEvent, VerdictEvent
from workers.archive.layout import Table
from workers.audit import ConversationNotArchived, read_conversation


def test_a_conversation_is_read_from_every_table_as_the_events_archived(tmp_path: Path) -> None:
    events = cut_off_conversation()
    other = replace(prompt(), conversation_id="someone-else")
    write_archive(tmp_path, [*events, other])

    found = read_conversation(tmp_path, CID)

    assert found.prompts == (events[0],)
    assert found.chunks == tuple(e for e in events if isinstance(e, TokenChunkEvent))
    assert found.verdicts == tuple(e for e in events if isinstance(e, VerdictEvent))
    assert [c.token_index for c in found.cutoffs] == [4]
    assert found.has_text and found.undecodable == 0


def test_each_record_is_taken_once_as_the_worker_took_it(tmp_path: Path) -> None:
    first, again = chunk(0, "first "), chunk(0, "second copy ")
    judged = verdict(0, span=(0, 1))
    reemitted = replace(judged, latency_ms=99.0)  # a redelivery published the same verdict again
    write_archive(tmp_path, [prompt(), prompt("a second send"), first, again, judged, reemitted, b"\x00 garbage"])

    found = read_conversation(tmp_path, CID)

    assert [p.messages[-1].content for p in found.prompts] == ["Tell me a story."]
    assert [c.text for c in found.chunks] == ["first "]
    assert [v.latency_ms for v in found.verdicts] == [2.5]
    assert found.undecodable == 1


def test_an_archive_without_text_still_gives_its_verdicts(tmp_path: Path) -> None:
    write_archive(tmp_path, [e for e in cut_off_conversation() if not isinstance(e, PromptEvent | TokenChunkEvent)])
    assert not (tmp_path / Table.PROMPTS.value).exists()

    found = read_conversation(tmp_path, CID)

    assert not found.has_text and found.prompts == () and found.chunks == ()
    assert len(found.verdicts) == 4


def test_a_conversation_not_in_the_archive_is_an_error(tmp_path: Path) -> None:
    write_archive(tmp_path, cut_off_conversation())
    with pytest.raises(ConversationNotArchived, match="'nobody' is not in the archive"):
        read_conversation(tmp_path, "nobody")
    with pytest.raises(ConversationNotArchived, match="is not an archive"):
        read_conversation(tmp_path / "elsewhere", CID)
