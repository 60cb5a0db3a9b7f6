"""``audit`` reconstructs a cut-off conversation from the archive, and ``--replay`` re-judges it.

Real broker, real Redis, a guard worker running the planted model ("DETONATE" unsafe, "GREYZONE"
controversial). One answer is flagged at GREYZONE under the ``loose`` policy and cut off at
DETONATE; the real archiver copies every topic to Parquet; then ``audit`` (the function, and the
command in a child process with ``--json``) must give back where it was cut, why and by which
model. Replayed with the same checkpoint nothing differs; replayed under ``strict`` the answer is
cut at GREYZONE instead, and the report says so chunk by chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, words, worker_settings
from topics.events import Action, ControlEvent, Message, Risk, Role, Stage, VerdictEvent, VerdictStatus
from workers.archive import archive
from workers.audit import ConversationNotArchived, audit, read_conversation
from workers.client import GuardClient
from workers.engine.debounce import Policy
from workers.infra import ensure_topics
from workers.runner import REPO_ROOT, settings_env
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 2
ANSWER = "Once upon a time a GREYZONE plan grew in a quiet village until a man chose to DETONATE it " + "and " * 30


@dataclass(frozen=True)
class Archived:
    """The conversation as it happened (seen on the topics) and the archive it was copied to."""

    conversation_id: str
    cutoff: ControlEvent
    verdicts: list[VerdictEvent]
    model_id: str
    worker_id: str
    out: Path
    checkpoint: Path
    overrides: dict[str, object]


@pytest_asyncio.fixture(scope="module")
async def archived(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Archived]:
    prefix = f"a{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=PARTITIONS)
    run_dir = tmp_path_factory.mktemp("audit")
    checkpoint = planted_checkpoint(tmp_path_factory.getbasetemp())
    settings = worker_settings(kafka_bootstrap, redis_url, prefix, checkpoint, PARTITIONS)
    cid = f"c-{uuid.uuid4().hex[:10]}"
    async with (
        new_worker("w1", run_dir, settings) as worker,
        GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        Observer(kafka_bootstrap, prefix) as observer,
    ):
        await client.publish_prompt(cid, "m1", [Message(role=Role.USER, content="Tell me a story.")], policy="loose")
        guarded = client.guarded(cid, "m1", words(ANSWER, delay_s=0.05))
        _ = [piece async for piece in guarded]
        assert guarded.cutoff is not None, "the answer was not cut off"
        await observer.wait_for(
            lambda: len(observer.of(cid, Stage.RESPONSE)) == guarded.pieces, what="a verdict for every chunk sent"
        )
        out = run_dir / "archive"
        await _archive_until(kafka_bootstrap, prefix, out, cid, observer)
        yield Archived(
            conversation_id=cid,
            cutoff=guarded.cutoff,
            verdicts=observer.of(cid),
            model_id=worker.announcement()["model_id"],
            worker_id=worker.announcement()["worker_id"],
            out=out,
            checkpoint=checkpoint,
            overrides={
                "kafka.bootstrap_servers": kafka_bootstrap,
                "kafka.topic_prefix": prefix,
                "guard.backend": "stream",
                "guard.allow_test_checkpoint": True,
                "engine.dtype": "float32",  # the planted weights are exact in float32
            },
        )


async def _archive_until(bootstrap: str, prefix: str, out: Path, cid: str, observer: Observer) -> None:
    """Run the archiver (text included) until the archive holds the whole conversation as observed."""
    expected = (1, len(observer.of(cid, Stage.RESPONSE)), len(observer.of(cid)), 1)
    task = asyncio.create_task(
        archive(bootstrap, prefix, out, group_id=f"archive-{prefix}", flush_every=50, flush_s=0.2, with_text=True)
    )
    try:
        for _ in range(600):
            assert not task.done(), task.result()
            with contextlib.suppress(ConversationNotArchived):
                found = read_conversation(out, cid)
                if (len(found.prompts), len(found.chunks), len(found.verdicts), len(found.cutoffs)) == expected:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the archive never held the whole conversation ({expected})")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _settings() -> Settings:
    settings = Settings()
    guard = settings.guard.model_copy(update={"backend": "stream", "allow_test_checkpoint": True})
    engine = settings.engine.model_copy(update={"dtype": "float32"})  # the planted weights are exact in float32
    return settings.model_copy(update={"guard": guard, "engine": engine})


async def _cli(archived: Archived, *args: str) -> dict[str, Any]:
    """``python -m workers audit CONVERSATION --archive OUT --json ARGS``, its document."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "audit",
        archived.conversation_id,
        "--archive",
        str(archived.out),
        "--json",
        *args,
        cwd=REPO_ROOT,
        env={**os.environ, **settings_env(archived.overrides)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    document: dict[str, Any] = orjson.loads(stdout)
    return document


async def test_audit_reconstructs_where_why_and_by_whom_the_answer_was_cut(archived: Archived) -> None:
    found = await audit(archived.out, archived.conversation_id, _settings(), tokenizer=str(archived.checkpoint))

    (message,) = found.report.messages
    assert message.prompt_text == "Tell me a story."
    assert message.prompt is not None and message.prompt.judgement.risk is Risk.SAFE
    assert message.prompt.tier == "stream"
    cut = message.cutoff
    assert cut is not None and (cut.stage, cut.risk, cut.category) == (Stage.RESPONSE, Risk.UNSAFE, "Violent")
    assert (cut.seq, cut.token_index) == (archived.cutoff.seq, archived.cutoff.token_index)
    assert [m.model_id for m in message.models] == [archived.model_id] and "TEST ONLY" in archived.model_id
    assert message.workers == (archived.worker_id,)
    assert [(p.name, p.version) for p in message.policies] == [("loose", 1)]
    seen = {v.seq: v for v in archived.verdicts if v.stage is Stage.RESPONSE}
    assert [(s.seq, s.token_start, s.token_end) for s in message.chunks] == [
        (seq, seen[seq].token_start, seen[seq].token_end) for seq in sorted(seen)
    ]
    assert "".join(s.text or "" for s in message.chunks) == " ".join(ANSWER.split(" ")[: len(message.chunks)]) + " "
    grey, detonate = message.flagged
    assert (grey.action, grey.category) == (Action.FLAG, "Unethical Acts")
    assert (detonate.action, detonate.index, detonate.seq) == (Action.CUTOFF, cut.token_index, cut.seq)
    # The flagged token is the second token of the planted word (the debounce needs two in a row).
    assert grey.text and grey.text.strip() in "GREYZONE" and not grey.text.startswith(" ")
    assert detonate.text and detonate.text.strip() in "DETONATE" and not detonate.text.startswith(" ")
    cut_step = message.cut_step
    assert cut_step is not None and cut_step.seq == cut.seq
    assert cut_step.token_start is not None and cut_step.token_end is not None
    assert cut_step.token_start <= detonate.index < cut_step.token_end
    assert all(s.judgement and s.judgement.status is VerdictStatus.AFTER_CUTOFF for s in message.chunks[cut.seq + 1 :])


async def test_the_command_prints_the_same_as_json(archived: Archived) -> None:
    document = await _cli(archived, "--tokenizer", str(archived.checkpoint))

    (message,) = document["report"]["messages"]
    assert message["cutoff"]["seq"] == archived.cutoff.seq
    assert message["cutoff"]["token_index"] == archived.cutoff.token_index
    assert message["cutoff"]["category"] == "Violent"
    assert message["models"][0]["model_id"] == archived.model_id
    assert message["flagged"][-1]["text"].strip() in "DETONATE"
    assert document["replay"] is None


async def test_a_replay_with_the_same_checkpoint_changes_nothing(archived: Archived) -> None:
    document = await _cli(archived, "--replay", str(archived.checkpoint))

    replay = document["replay"]
    assert replay["differs"] is False and replay["notes"] == []
    assert [m["differences"] for m in replay["messages"]] == [[]]
    assert replay["models"][0]["model_id"] == archived.model_id
    replayed = replay["replayed"]["messages"][0]
    assert replayed["cutoff"]["seq"] == archived.cutoff.seq and replayed["workers"] == ["audit-replay"]


async def test_a_replay_under_strict_cuts_at_the_controversial_word(archived: Archived) -> None:
    found = await audit(
        archived.out,
        archived.conversation_id,
        _settings(),
        replay_checkpoint=str(archived.checkpoint),
        policy=Policy.STRICT,
    )

    assert found.replay is not None and found.replay.differs and found.replay.policy == "strict"
    (message,) = found.replay.messages
    grey_seq = found.report.messages[0].flagged[0].seq
    assert message.cut_moved and message.original_cutoff is not None and message.replayed_cutoff is not None
    assert message.original_cutoff.seq == archived.cutoff.seq
    assert message.replayed_cutoff.seq == grey_seq < archived.cutoff.seq
    assert (message.replayed_cutoff.risk, message.replayed_cutoff.category) == (Risk.CONTROVERSIAL, "Unethical Acts")
    by_seq = {d.seq: d for d in message.differences}
    assert None not in by_seq  # the prompt is safe under either policy
    assert by_seq[grey_seq].changed == ("action",)
    assert by_seq[grey_seq].replayed is not None and by_seq[grey_seq].replayed.judgement.action is Action.CUTOFF
    # Every chunk after it up to the original cut was judged in the archive and is after the cut in the replay.
    for seq in range(grey_seq + 1, archived.cutoff.seq + 1):
        replayed = by_seq[seq].replayed
        assert replayed is not None and replayed.judgement.status is VerdictStatus.AFTER_CUTOFF, seq
