"""What ``audit`` prints: the JSON document for tools, the terminal report, and its exit codes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from rich.console import Console

from tests.unit.audit.archive import CID, cut_off_conversation, write_archive
from workers.audit import audit
from workers.audit.document import to_json
from workers.audit.render import render
from workers.cli import main
from workers.settings import Settings


async def test_the_json_document_names_every_decision(tmp_path: Path) -> None:
    write_archive(tmp_path, cut_off_conversation())

    document = orjson.loads(to_json(await audit(tmp_path, CID, Settings())))

    assert document["format"] == "streamwarden.audit/1" and document["replay"] is None
    (message,) = document["report"]["messages"]
    assert message["cutoff"]["seq"] == 1 and message["cutoff"]["token_index"] == 4
    assert message["cutoff"]["category"] == "Violent" and message["cutoff"]["stage"] == "response"
    assert message["models"] == [{"model_id": "planted", "revision": "r1"}]
    assert message["prompt"]["judgement"] == {
        "risk": "safe",
        "category": None,
        "action": "allow",
        "status": "moderated",
        "p_unsafe": 0.125,
    }
    assert [c["token_start"] for c in message["chunks"]] == [0, 3, 5]
    assert message["flagged"] == [{"index": 4, "seq": 1, "action": "cutoff", "category": "Violent", "text": None}]


async def test_the_terminal_report_shows_the_trajectory_and_the_cut(tmp_path: Path) -> None:
    write_archive(tmp_path, cut_off_conversation())
    console = Console(record=True, width=160)

    render(await audit(tmp_path, CID, Settings()), console)

    shown = console.export_text()
    assert "Conversation conv-1" in shown and "Message m1" in shown
    assert "'Tell me a story.'" in shown
    assert "response at seq 1, token 4: unsafe, Violent" in shown
    assert "token 4 (its text: pass --tokenizer or --replay) in seq 1 -> cutoff, Violent" in shown
    assert "planted @ r1" in shown and "strict v1" in shown and "w1, w2" in shown
    assert "after_cutoff" in shown and "0.7500" in shown


def test_a_conversation_not_in_the_archive_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_archive(tmp_path, cut_off_conversation())
    assert main(["audit", "nobody", "--archive", str(tmp_path)]) == 1
    assert "'nobody' is not in the archive" in capsys.readouterr().err
    assert main(["audit", CID, "--archive", str(tmp_path), "--policy", "loose"]) == 2


def test_the_cli_prints_json(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    write_archive(tmp_path, cut_off_conversation())
    assert main(["audit", CID, "--archive", str(tmp_path), "--json"]) == 0
    assert orjson.loads(capsysbinary.readouterr().out)["report"]["conversation_id"] == CID
