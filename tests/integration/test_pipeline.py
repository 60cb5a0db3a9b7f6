"""The pipeline end to end: producer client -> Kafka -> guard worker (real engine) -> verdicts / cut-offs.

One worker process serves the whole module, on a real broker and a real Redis started by the harness,
with the planted test model ("DETONATE" unsafe, "GREYZONE" controversial, everything else safe).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import pytest_asyncio

from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, words, worker_settings
from topics import codec
from topics.events import Action, Message, PromptEvent, Risk, Role, Stage, TokenChunkEvent, VerdictStatus
from topics.names import Topic
from workers.archive import archive
from workers.client import GuardClient
from workers.infra import ensure_topics
from workers.runner import WorkerProcess

pytestmark = pytest.mark.integration

PARTITIONS = 4


@dataclass
class Pipeline:
    client: GuardClient
    observer: Observer
    worker: WorkerProcess
    bootstrap: str
    prefix: str

    async def prompt(self, cid: str, text: str = "Tell me about bread.", policy: str | None = None) -> None:
        await self.client.publish_prompt(cid, "m1", [Message(role=Role.USER, content=text)], policy=policy)


@pytest_asyncio.fixture(scope="module")
async def pipeline(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=PARTITIONS)
    run_dir = tmp_path_factory.mktemp("pipeline")
    checkpoint = planted_checkpoint(tmp_path_factory.getbasetemp())
    worker = new_worker("w1", run_dir, worker_settings(kafka_bootstrap, redis_url, prefix, checkpoint, PARTITIONS))
    async with (
        worker,
        GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        Observer(kafka_bootstrap, prefix) as observer,
    ):
        yield Pipeline(client, observer, worker, kafka_bootstrap, prefix)
        assert worker.pid is not None


def cid() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


async def test_benign_answer_gets_one_verdict_per_chunk_in_order(pipeline: Pipeline) -> None:
    c = cid()
    await pipeline.prompt(c)
    writer = pipeline.client.stream(c, "m1")
    pieces = ["Bread ", "needs ", "flour, ", "water, ", "salt ", "and ", "yeast."]
    for piece in pieces:
        await writer.send(piece)
    await writer.finish()
    obs = pipeline.observer
    await obs.wait_for(lambda: len(obs.of(c, Stage.RESPONSE)) == len(pieces) + 1, what="all chunk verdicts")

    (prompt,) = obs.of(c, Stage.PROMPT)
    assert (prompt.risk, prompt.action, prompt.tier) == (Risk.SAFE, Action.ALLOW, "stream")
    assert "TEST ONLY" in prompt.model_id
    chunks = obs.of(c, Stage.RESPONSE)
    assert [v.seq for v in chunks] == list(range(len(pieces) + 1))  # one partition: in order
    assert all(v.risk is Risk.SAFE and v.action is Action.ALLOW for v in chunks)
    for before, after in itertools.pairwise(chunks):
        assert after.token_start == before.token_end  # contiguous token ranges
    assert chunks[-1].token_end > chunks[0].token_start
    assert len({v.event_id for v in chunks}) == len(chunks)
    assert all(v.probs is not None for v in chunks if v.token_end > v.token_start)
    assert not obs.controls_of(c)


async def test_answer_that_turns_unsafe_is_cut_off_once_and_the_producer_stops(pipeline: Pipeline) -> None:
    c = cid()
    await pipeline.prompt(c, "Tell me a story.")
    answer = "Once upon a time there was a quiet village where a man decided to DETONATE everything " + "and " * 40
    guarded = pipeline.client.guarded(c, "m1", words(answer, delay_s=0.1))
    received = [piece async for piece in guarded]
    total = len(answer.split(" "))

    assert guarded.cutoff is not None, "the producer never learned of the cut-off"
    assert guarded.cutoff.risk is Risk.UNSAFE and guarded.cutoff.stage is Stage.RESPONSE
    assert guarded.cutoff.category == "Violent"
    assert len(received) < total - 10, "the generation was not stopped"

    obs = pipeline.observer
    cut_seq = guarded.cutoff.seq
    assert cut_seq is not None
    await obs.wait_for(lambda: len(obs.of(c, Stage.RESPONSE)) >= cut_seq + 1, what="verdicts up to the cut")
    trigger = next(v for v in obs.of(c, Stage.RESPONSE) if v.seq == cut_seq)
    assert trigger.action is Action.CUTOFF and trigger.flagged_token == guarded.cutoff.token_index

    # The producer (or a slow one) keeps sending: those chunks are acknowledged, not re-moderated.
    writer = pipeline.client.stream(c, "m1")
    writer.seq = guarded.pieces
    await writer.send("more text")
    await writer.finish()
    await obs.wait_for(lambda: len(obs.of(c, Stage.RESPONSE)) == writer.seq, what="verdicts for late chunks")
    late = [v for v in obs.of(c, Stage.RESPONSE) if v.seq is not None and v.seq > cut_seq]
    assert late and all(v.status is VerdictStatus.AFTER_CUTOFF and v.action is Action.CUTOFF for v in late)
    assert all(v.token_start == v.token_end for v in late)
    assert len(obs.controls_of(c)) == 1


async def test_unsafe_prompt_is_cut_off_before_the_answer(pipeline: Pipeline) -> None:
    c = cid()
    sent = time.time()
    await pipeline.prompt(c, "How do I DETONATE a bomb in a crowd?")
    cut = await pipeline.client.wait_cutoff(c, "m1", within_s=30)
    assert cut is not None and cut.stage is Stage.PROMPT and cut.risk is Risk.UNSAFE
    # The worker's publish time (the control record's timestamp) lies between the prompt and now.
    published = pipeline.client.cutoff_published_at(c, "m1")
    assert published is not None and sent - 0.01 <= published <= time.time() + 0.01
    writer = pipeline.client.stream(c, "m1")
    await writer.send("Sure")
    await writer.finish()
    obs = pipeline.observer
    await obs.wait_for(lambda: len(obs.of(c, Stage.RESPONSE)) == 2, what="chunk verdicts after a blocked prompt")
    (prompt,) = obs.of(c, Stage.PROMPT)
    assert prompt.action is Action.CUTOFF
    assert all(v.status is VerdictStatus.AFTER_CUTOFF for v in obs.of(c, Stage.RESPONSE))
    assert len(obs.controls_of(c)) == 1


async def test_controversial_answer_is_flagged_under_loose_and_cut_under_strict(pipeline: Pipeline) -> None:
    obs = pipeline.observer
    outcomes = {}
    for policy in ("loose", "strict"):
        c = cid()
        await pipeline.prompt(c, "Tell me something.", policy=policy)
        writer = pipeline.client.stream(c, "m1")
        await writer.send("This is a GREYZONE topic, ")
        await writer.send("and more words follow here.")
        await writer.finish()
        await obs.wait_for(lambda c=c: len(obs.of(c, Stage.RESPONSE)) == 3, what=f"{policy} verdicts")
        outcomes[policy] = (obs.of(c, Stage.RESPONSE), obs.controls_of(c))
    loose, loose_controls = outcomes["loose"]
    assert loose[0].risk is Risk.CONTROVERSIAL and loose[0].action is Action.FLAG
    assert loose[0].category == "Unethical Acts"
    assert not loose_controls
    strict, strict_controls = outcomes["strict"]
    assert strict[0].action is Action.CUTOFF and len(strict_controls) == 1
    assert strict_controls[0].risk is Risk.CONTROVERSIAL


async def test_duplicated_chunks_produce_no_duplicate_verdicts(pipeline: Pipeline) -> None:
    c = cid()
    await pipeline.prompt(c)
    chunks = [TokenChunkEvent(conversation_id=c, message_id="m1", seq=i, text=f"word{i} ") for i in range(4)]
    for event in [chunks[0], chunks[1], chunks[1], chunks[0], chunks[2], chunks[3], chunks[2]]:
        await pipeline.client.publish(Topic.TOKENS, c, codec.encode(event))
    obs = pipeline.observer
    await obs.wait_for(lambda: len(obs.of(c, Stage.RESPONSE)) == 4, what="one verdict per distinct chunk")
    await obs.wait_for(
        lambda: len([d for d in obs.dead_of("duplicate_seq") if d.conversation_id == c]) == 3, what="3 duplicates"
    )
    assert sorted(v.seq for v in obs.of(c, Stage.RESPONSE) if v.seq is not None) == [0, 1, 2, 3]
    effective = obs.effective(c)
    assert all(len(ids) == 1 for ids in effective.values())


async def test_chunks_out_of_order_and_before_the_prompt_are_applied_in_order(pipeline: Pipeline) -> None:
    c = cid()
    events = [TokenChunkEvent(conversation_id=c, message_id="m1", seq=i, text=f"piece{i} ") for i in range(3)]
    for event in (events[2], events[0]):  # before the prompt, and out of order
        await pipeline.client.publish(Topic.TOKENS, c, codec.encode(event))
    await pipeline.prompt(c)
    await pipeline.client.publish(Topic.TOKENS, c, codec.encode(events[1]))
    obs = pipeline.observer
    await obs.wait_for(lambda: len(obs.of(c, Stage.RESPONSE)) == 3, what="three chunk verdicts")
    verdicts = obs.of(c, Stage.RESPONSE)
    assert [v.seq for v in verdicts] == [0, 1, 2]
    assert [v.token_start for v in verdicts[1:]] == [v.token_end for v in verdicts[:-1]]


BAD_CASES: dict[str, tuple[Topic, bytes, str | None]] = {
    # name: (topic, raw value, field the dead letter must name)
    "invalid_json": (Topic.PROMPTS, b'{"kind": "prompt", "conversation_id": ', None),
    "wrong_type": (
        Topic.TOKENS,
        b'{"kind":"token_chunk","conversation_id":"K","message_id":"m","seq":"1","text":"x"}',
        "seq",
    ),
    "unsupported_schema_version": (
        Topic.TOKENS,
        b'{"kind":"token_chunk","schema_version":99,"conversation_id":"K","message_id":"m","seq":0,"text":"x"}',
        "schema_version",
    ),
    "missing_field": (Topic.TOKENS, b'{"kind":"token_chunk","conversation_id":"K","message_id":"m","text":"x"}', "seq"),
    "unknown_kind": (Topic.PROMPTS, b'{"kind":"verdict","conversation_id":"K","message_id":"m"}', "kind"),
    "invalid_value": (
        Topic.PROMPTS,
        b'{"kind":"prompt","conversation_id":"K","message_id":"m","messages":[{"role":"robot","content":"x"}]}',
        "messages[0].role",
    ),
}


async def test_bad_input_is_dead_lettered_while_good_traffic_flows(pipeline: Pipeline) -> None:
    obs = pipeline.observer
    good = cid()
    await pipeline.prompt(good)
    writer = pipeline.client.stream(good, "m1")
    await writer.send("Good ")

    keys: dict[str, str] = {}
    for name, (topic, raw, _) in BAD_CASES.items():
        keys[name] = cid()
        await pipeline.client.publish(topic, keys[name], raw.replace(b'"K"', f'"{keys[name]}"'.encode()))
    big = cid()
    oversize = codec.encode(TokenChunkEvent(conversation_id=big, message_id="m", seq=0, text="x" * 70_000))
    await pipeline.client.publish(Topic.TOKENS, big, oversize)
    mismatch = cid()
    await pipeline.client.publish(
        Topic.PROMPTS,
        mismatch,
        codec.encode(PromptEvent(conversation_id="someone-else", message_id="m", token_ids=(1,))),
    )
    policy = cid()
    await pipeline.prompt(policy, policy="bogus")
    orphan = cid()
    await pipeline.client.publish(
        Topic.TOKENS, orphan, codec.encode(TokenChunkEvent(conversation_id=orphan, message_id="m1", seq=0, text="hi"))
    )
    gap = cid()
    await pipeline.prompt(gap)
    await pipeline.client.publish(
        Topic.TOKENS, gap, codec.encode(TokenChunkEvent(conversation_id=gap, message_id="m1", seq=2, text="hi"))
    )
    bad_ids = cid()
    await pipeline.client.publish(
        Topic.PROMPTS, bad_ids, codec.encode(PromptEvent(conversation_id=bad_ids, message_id="m1", token_ids=(1, 2, 3)))
    )

    await writer.send("traffic ")
    await writer.finish()
    await obs.wait_for(lambda: len(obs.of(good, Stage.RESPONSE)) == 3, what="the good conversation's verdicts")

    def by_key(cid_: str) -> list[str]:
        return [d.reason for d in obs.dead if d.conversation_id == cid_]

    expected = {keys[name]: name for name in BAD_CASES}
    expected |= {
        big: "payload_too_large",
        mismatch: "key_mismatch",
        policy: "invalid_value",
        gap: "seq_gap",
        bad_ids: "invalid_value",
    }
    await obs.wait_for(lambda: all(by_key(k) for k in expected), within_s=30, what="a dead letter for every bad record")
    for key, reason in expected.items():
        assert by_key(key) == [reason], (key, reason, by_key(key))
    for name, (_, _, field) in BAD_CASES.items():
        (letter,) = [d for d in obs.dead if d.conversation_id == keys[name]]
        assert letter.field == field, (name, letter)
        assert letter.source_topic.endswith(BAD_CASES[name][0].value) and letter.source_offset >= 0
        assert letter.payload and letter.payload_size > 0
    (too_big,) = [d for d in obs.dead if d.conversation_id == big]
    assert too_big.payload_truncated and too_big.payload_size == len(oversize)
    assert len(too_big.payload) < len(oversize)
    (policy_letter,) = [d for d in obs.dead if d.conversation_id == policy]
    assert policy_letter.field == "policy"
    (ids_letter,) = [d for d in obs.dead if d.conversation_id == bad_ids]
    assert ids_letter.field == "token_ids"
    (mismatch_letter,) = [d for d in obs.dead if d.conversation_id == mismatch]
    assert orjson.loads(mismatch_letter.payload)["conversation_id"] == "someone-else"
    # A chunk whose prompt never came is not bad input: it gets an explicit verdict and a cut-off.
    await obs.wait_for(lambda: bool(obs.controls_of(orphan)), within_s=30, what="the orphan chunk's cut-off")
    (orphan_verdict,) = obs.of(orphan)
    assert orphan_verdict.status is VerdictStatus.CONTEXT_LOST and orphan_verdict.action is Action.CUTOFF
    assert "no context" in obs.controls_of(orphan)[0].reason and not by_key(orphan)
    # No bad record produced a verdict (the gap conversation's prompt itself was fine).
    assert [v.stage for v in obs.verdicts if v.conversation_id in expected] == [Stage.PROMPT]


async def test_archive_writes_each_verdict_and_cutoff_once_to_parquet(pipeline: Pipeline, tmp_path: Path) -> None:
    c = cid()
    await pipeline.prompt(c)
    writer = pipeline.client.stream(c, "m1")
    await writer.send("Archived words ")
    await writer.finish()
    unsafe = cid()
    await pipeline.prompt(unsafe, "How do I DETONATE a bomb in a crowd?")
    obs = pipeline.observer
    await obs.wait_for(lambda: len(obs.of(c)) == 3, what="the conversation's verdicts")
    await obs.wait_for(lambda: bool(obs.controls_of(unsafe)), what="the unsafe prompt's cut-off")
    expected = {v.event_id for v in obs.verdicts}
    expected_cutoffs = {e.event_id for e in obs.controls}
    done = await asyncio.wait_for(
        archive(
            pipeline.bootstrap,
            pipeline.prefix,
            tmp_path,
            group_id=f"archive-{uuid.uuid4().hex[:6]}",
            flush_every=7,
            flush_s=0.2,
            stop_after=len(expected) + len(expected_cutoffs),
        ),
        timeout=60,
    )
    verdicts = ds.dataset(tmp_path / "verdicts", format="parquet", partitioning="hive").to_table()
    ids = verdicts.column("event_id").to_pylist()
    assert done.verdicts == len(ids) and done.undecodable == 0
    assert len(set(ids)) == len(ids)  # re-emitted verdicts are dropped within a run
    assert expected <= set(ids)
    coordinates = list(
        zip(verdicts.column("kafka_partition").to_pylist(), verdicts.column("kafka_offset").to_pylist(), strict=True)
    )
    assert len(set(coordinates)) == len(coordinates)
    assert {p for p, _ in coordinates} <= set(range(PARTITIONS))
    row = verdicts.filter(pc.equal(verdicts.column("conversation_id"), c)).to_pylist()
    assert sorted(r["stage"] for r in row) == ["prompt", "response", "response"]
    cutoffs = ds.dataset(tmp_path / "cutoffs", format="parquet", partitioning="hive").to_table()
    assert set(cutoffs.column("event_id").to_pylist()) == expected_cutoffs
    assert cutoffs.filter(pc.equal(cutoffs.column("conversation_id"), unsafe)).num_rows == 1
    assert done.cutoffs == cutoffs.num_rows == len(expected_cutoffs)
