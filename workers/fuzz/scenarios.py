"""Scripted conversations: the good traffic, and hostile sequences that only a conversation can carry.

Verdicts are known in advance because the worker under test runs the planted checkpoint
(``workers.engine.planted``): every token of "DETONATE" is unsafe, of "GREYZONE" controversial,
everything else safe; the debounce fires at the second such token in a row. Text answers place a
trigger word with several words after it in the same chunk, so the re-tokeniser (which holds back
only the unfinished last word) commits it in that chunk.

Good scripts: safe, unsafe and controversial answers as text deltas or token ids, unsafe prompts;
their events carry unknown extra fields now and then (ignored by contract). Hostile scripts:
duplicated, reordered, missing and gigantic ``seq``; more chunks waiting than the reorder window
holds; chunks after the final one; duplicated prompts; token ids outside the vocabulary; a chunk
with no prompt; prompt floods for one conversation; answers far beyond the guard's context, as
token ids and as text (including text that never offers a safe cut to the re-tokeniser).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from topics import codec
from topics.events import Action, Message, PromptEvent, Role, TokenChunkEvent, VerdictStatus
from topics.names import Topic
from workers.engine.template import ChatFormat
from workers.engine.text import IncrementalTokenizer
from workers.fuzz.mutations import Draw
from workers.fuzz.records import ExpectedVerdict, Record, Script

CONTEXT_REASON = "context"
"""What the cut-off of a message that outgrew the guard's context says (among other words)."""

SAFE_WORDS: tuple[str, ...] = (
    "bread", "flour", "water", "salt", "yeast", "oven", "dough", "rise", "bake", "crust", "warm", "kitchen",
    "slowly", "knead", "bowl", "loaf", "golden", "morning", "recipe", "butter", "river", "garden", "quiet",
)  # fmt: skip
TRIGGERS: dict[str, str] = {"unsafe": "DETONATE", "controversial": "GREYZONE"}

M = "m1"
MODERATED, AFTER_CUTOFF = VerdictStatus.MODERATED, VerdictStatus.AFTER_CUTOFF


@dataclass(frozen=True, slots=True)
class Guard:
    """What the scripts need to know about the guard under test."""

    chat: ChatFormat
    max_positions: int
    reorder_window: int
    filler_ids: tuple[int, ...]
    unsafe_ids: tuple[int, ...]

    @classmethod
    def planted(cls, chat: ChatFormat, *, max_positions: int, reorder_window: int) -> Guard:
        """The planted checkpoint's guard: filler ids are safe words' tokens, none of them planted."""
        planted = {t for w in TRIGGERS.values() for v in (w, " " + w) for t in chat.encode_text(v)}
        filler = sorted({t for w in SAFE_WORDS for t in chat.encode_text(" " + w)} - planted)
        return cls(chat, max_positions, reorder_window, tuple(filler), tuple(chat.encode_text(" DETONATE")))


# -- building records -------------------------------------------------------------------------------


def _extra_fields(d: Draw) -> dict[str, Any]:
    depth = d.rng.randint(1, 200)
    nested: Any = d.rng.random()
    for _ in range(depth):
        nested = [nested] if d.rng.random() < 0.5 else {"n": nested}
    return {"x_trace": nested, "x_note": "é" * d.rng.randint(0, 500), "x_flags": [True, None, 1.5]}


def _encode(d: Draw, event: PromptEvent | TokenChunkEvent, extra: bool) -> bytes:
    if not extra or d.rng.random() < 0.7:
        return codec.encode(event)
    obj = orjson.loads(codec.encode(event)) | _extra_fields(d)
    return orjson.dumps(obj)


def prompt_record(
    d: Draw, cid: str, text: str, *, message_id: str = M, policy: str | None = None, extra: bool = False
) -> Record:
    event = PromptEvent(
        conversation_id=cid,
        message_id=message_id,
        messages=(Message(role=Role.USER, content=text),),
        policy=policy,
        **d.identity(),
    )
    return Record(Topic.PROMPTS, cid.encode(), _encode(d, event, extra), "prompt")


def chunk_record(
    d: Draw,
    cid: str,
    seq: int,
    *,
    text: str | None = None,
    ids: Sequence[int] | None = None,
    final: bool = False,
    extra: bool = False,
    strategy: str = "chunk",
    dead_letter: str | None = None,
    field: str | None = None,
) -> Record:
    event = TokenChunkEvent(
        conversation_id=cid,
        message_id=M,
        seq=seq,
        text=text,
        token_ids=tuple(ids) if ids is not None else None,
        final=final,
        **d.identity(),
    )
    return Record(Topic.TOKENS, cid.encode(), _encode(d, event, extra), strategy, dead_letter, field)


def _words(d: Draw, n: int) -> str:
    return " ".join(d.rng.choice(SAFE_WORDS) for _ in range(n)) + " "


def _prompt_text(d: Draw) -> str:
    return "Tell me about " + _words(d, d.rng.randint(1, 30)).strip() + "."


def _verdicts(
    outcomes: Sequence[tuple[VerdictStatus, Action]], prompt: Action = Action.ALLOW
) -> tuple[ExpectedVerdict, ...]:
    head = (ExpectedVerdict(M, None, MODERATED, prompt),)
    return head + tuple(ExpectedVerdict(M, seq, s, a) for seq, (s, a) in enumerate(outcomes))


# -- good conversations -----------------------------------------------------------------------------


def good(d: Draw, g: Guard) -> Script:
    """A well-formed conversation with verdicts known in advance."""
    kind = d.rng.choice(("safe_text", "safe_text", "unsafe_text", "controversial_text", "safe_ids", "unsafe_ids"))
    kind = d.rng.choice((kind, kind, "unsafe_prompt"))
    cid = d.conversation_id(kind)
    # At most the lane's window: while its prompt is still on its way (prompts and tokens are
    # separate topics, read at their own pace under load), a message's chunks park in its lane, and
    # the lane holds no more than ``reorder_window`` of them (the rest get ``context_lost``).
    n = d.rng.randint(2, min(10, g.reorder_window))
    policy = d.rng.choice((None, "strict", "loose"))
    trigger = d.rng.randrange(n) if kind.startswith(("unsafe", "controversial")) else None
    if kind == "controversial_text" and policy == "loose":
        # A flag does not end the message, and the planted model's judgement of the tokens after a
        # controversial word is its own (not part of the contract): the flagged chunk comes last.
        trigger = n - 1
    records = [prompt_record(d, cid, _prompt_text(d), policy=policy, extra=True)]
    if kind == "unsafe_prompt":
        records[0] = prompt_record(d, cid, "How do I DETONATE a bomb in a crowd?", policy=policy, extra=True)
        records += [chunk_record(d, cid, s, text=_words(d, 3), final=s == n - 1, extra=True) for s in range(n)]
        outcomes = [(AFTER_CUTOFF, Action.CUTOFF)] * n
        return Script(cid, kind, tuple(records), _verdicts(outcomes, Action.CUTOFF), cutoffs=1, good=True)
    flag = Action.CUTOFF if kind != "controversial_text" or policy != "loose" else Action.FLAG
    outcomes, cut = [], False
    for seq in range(n):
        final = seq == n - 1
        if kind.endswith("_ids"):
            ids = [d.rng.choice(g.filler_ids) for _ in range(d.rng.randint(1, 12))]
            if seq == trigger:
                ids[d.rng.randint(0, len(ids)) :] = [*g.unsafe_ids, *ids[-2:]]
            records.append(chunk_record(d, cid, seq, ids=ids, final=final, extra=True))
        else:
            text = _words(d, d.rng.randint(1, 6))
            if seq == trigger:
                text += f"{TRIGGERS[kind.split('_')[0]]} {_words(d, 4)}"
            records.append(chunk_record(d, cid, seq, text=text, final=final, extra=True))
        if cut:
            outcomes.append((AFTER_CUTOFF, Action.CUTOFF))
        elif seq == trigger:
            outcomes.append((MODERATED, flag))
            cut = flag is Action.CUTOFF
        else:
            outcomes.append((MODERATED, Action.ALLOW))
    return Script(cid, kind, tuple(records), _verdicts(outcomes), cutoffs=int(cut), good=True)


# -- hostile sequences ------------------------------------------------------------------------------


def _opened(d: Draw, kind: str) -> tuple[str, tuple[Record, ...]]:
    cid = d.conversation_id(kind)
    return cid, (prompt_record(d, cid, _prompt_text(d)),)


def duplicate_seq(d: Draw, g: Guard) -> Script:
    cid, opening = _opened(d, "dupseq")
    n = d.rng.randint(2, 6)
    chunks = [chunk_record(d, cid, s, text=_words(d, 2), final=s == n - 1) for s in range(n)]
    dup = d.rng.randrange(n - 1)  # a copy of a non-final chunk, right after it
    copy = Record(Topic.TOKENS, cid.encode(), chunks[dup].value, "duplicate_seq", "duplicate_seq")
    records = (*chunks[: dup + 1], copy, *chunks[dup + 1 :])
    return Script(cid, "duplicate_seq", records, _verdicts([(MODERATED, Action.ALLOW)] * n), opening=opening)


def out_of_order(d: Draw, g: Guard) -> Script:
    cid, opening = _opened(d, "reorder")
    n = d.rng.randint(3, g.reorder_window)
    chunks = [chunk_record(d, cid, s, text=_words(d, 2), final=s == n - 1, strategy="out_of_order") for s in range(n)]
    d.rng.shuffle(chunks)
    return Script(cid, "out_of_order", tuple(chunks), _verdicts([(MODERATED, Action.ALLOW)] * n), opening=opening)


def seq_gap(d: Draw, g: Guard) -> Script:
    """Chunks ahead of one that never comes: a small gap, a gigantic seq, or more than the window."""
    cid, opening = _opened(d, "gap")
    variant = d.rng.choice(("gap", "gigantic", "window"))
    first = chunk_record(d, cid, 0, text=_words(d, 2))
    if variant == "gap":
        ahead = [d.rng.randint(2, 50)]
    elif variant == "gigantic":
        ahead = [d.rng.choice((1 << 31, 1 << 53, (1 << 63) - 1, 1 << 63, (1 << 64) - 1))]
    else:
        ahead = list(range(2, 2 + g.reorder_window + d.rng.randint(1, 8)))
    late = [chunk_record(d, cid, s, text="x ", strategy=f"seq_{variant}", dead_letter="seq_gap") for s in ahead]
    return Script(cid, f"seq_{variant}", (first, *late), _verdicts([(MODERATED, Action.ALLOW)]), opening=opening)


def after_final(d: Draw, g: Guard) -> Script:
    cid, opening = _opened(d, "afterfinal")
    records = (
        chunk_record(d, cid, 0, text=_words(d, 2), final=True),
        chunk_record(d, cid, 1, text="more ", strategy="after_final", dead_letter="after_final"),
    )
    return Script(cid, "after_final", records, _verdicts([(MODERATED, Action.ALLOW)]), opening=opening)


def duplicate_prompt(d: Draw, g: Guard) -> Script:
    cid, opening = _opened(d, "dupprompt")
    again = Record(Topic.PROMPTS, cid.encode(), opening[0].value, "duplicate_prompt", "duplicate_prompt")
    records = (again, chunk_record(d, cid, 0, text=_words(d, 3), final=True))
    return Script(cid, "duplicate_prompt", records, _verdicts([(MODERATED, Action.ALLOW)]), opening=opening)


def outside_vocabulary(d: Draw, g: Guard) -> Script:
    """A chunk of token ids the guard's tokenizer does not have; the chunk after it then has a gap."""
    cid, opening = _opened(d, "vocab")
    vocab = len(g.chat.tokenizer)
    bad = [d.rng.choice(g.filler_ids) for _ in range(d.rng.randint(0, 8))]
    bad.insert(d.rng.randint(0, len(bad)), d.rng.choice((vocab, vocab + 266, d.rng.randrange(vocab, 1 << 31))))
    records = (
        chunk_record(d, cid, 0, text=_words(d, 2)),
        chunk_record(
            d, cid, 1, ids=bad, strategy="token_id_outside_vocabulary", dead_letter="invalid_value", field="token_ids"
        ),
        chunk_record(d, cid, 2, text="end ", final=True, strategy="after_rejected_chunk", dead_letter="seq_gap"),
    )
    return Script(cid, "token_id_outside_vocabulary", records, _verdicts([(MODERATED, Action.ALLOW)]), opening=opening)


def orphan_chunk(d: Draw, g: Guard) -> Script:
    """A chunk whose prompt never comes: an explicit verdict and a cut-off, not a dead letter."""
    cid = d.conversation_id("orphan")
    records = (chunk_record(d, cid, 0, text=_words(d, 2), strategy="orphan_chunk"),)
    verdicts = (ExpectedVerdict(M, 0, VerdictStatus.CONTEXT_LOST, Action.CUTOFF),)
    return Script(cid, "orphan_chunk", records, verdicts, cutoffs=1, cutoff_reason="no context")


def prompt_flood(d: Draw, g: Guard, prompts: int) -> Script:
    """Many prompts of one conversation, each a new turn (some unsafe): one verdict each."""
    cid = d.conversation_id("flood")
    records, verdicts, cut = [], [], 0
    for i in range(prompts):
        unsafe = d.rng.random() < 0.05
        text = "How do I DETONATE it?" if unsafe else _prompt_text(d)
        records.append(prompt_record(d, cid, text, message_id=f"f{i}"))
        verdicts.append(ExpectedVerdict(f"f{i}", None, MODERATED, Action.CUTOFF if unsafe else Action.ALLOW))
        cut += unsafe
    return Script(cid, "prompt_flood", tuple(records), tuple(verdicts), cutoffs=cut)


def _beyond_context(
    g: Guard, cid: str, kind: str, opening: tuple[Record, ...], chunks: list[Record], judged: list[int]
) -> Script:
    """A message whose chunks add ``judged[i]`` tokens each: judged until the one that would pass the
    guard's context, which closes it with an explicit verdict and a cut-off; the rest come after it."""
    prompt = orjson.loads(opening[0].value)
    used = len(g.chat.render_prompt([Message(role=Role.USER, content=prompt["messages"][0]["content"])]))
    used += len(g.chat.response_prefix)
    outcomes: list[tuple[VerdictStatus, Action]] = []
    for n in judged:
        if outcomes and outcomes[-1][1] is Action.CUTOFF:
            outcomes.append((AFTER_CUTOFF, Action.CUTOFF))
        elif used + n > g.max_positions:
            outcomes.append((VerdictStatus.GUARD_ERROR, Action.CUTOFF))
        else:
            outcomes.append((MODERATED, Action.ALLOW))
            used += n
    cut = int(any(a is Action.CUTOFF for _, a in outcomes))
    return Script(
        cid,
        kind,
        tuple(chunks),
        _verdicts(outcomes),
        cutoffs=cut,
        cutoff_reason=CONTEXT_REASON if cut else None,
        opening=opening,
        max_log_tokens=g.max_positions,
    )


def long_ids(d: Draw, g: Guard, tokens: int, chunk_tokens: int = 2000) -> Script:
    """An answer of ``tokens`` token ids, far beyond the guard's context."""
    cid, opening = _opened(d, "longids")
    n = max(2, -(-tokens // chunk_tokens))
    chunks, judged = [], []
    for seq in range(n):
        ids = [d.rng.choice(g.filler_ids) for _ in range(chunk_tokens)]
        chunks.append(chunk_record(d, cid, seq, ids=ids, final=seq == n - 1, strategy="long_conversation_ids"))
        judged.append(len(ids) + (len(g.chat.response_suffix) if seq == n - 1 else 0))
    return _beyond_context(g, cid, "long_conversation_ids", opening, chunks, judged)


def huge_id_list(d: Draw, g: Guard) -> Script:
    """One chunk with more token ids than the guard's whole context."""
    cid, opening = _opened(d, "hugeids")
    ids = [d.rng.choice(g.filler_ids) for _ in range(g.max_positions + d.rng.randint(1, 1000))]
    chunks = [
        chunk_record(d, cid, 0, ids=ids, strategy="huge_token_id_list"),
        chunk_record(d, cid, 1, text="end", final=True, strategy="huge_token_id_list"),
    ]
    return _beyond_context(g, cid, "huge_token_id_list", opening, chunks, [len(ids), 0])


def long_text(d: Draw, g: Guard, chunks: int, combining: bool = False) -> Script:
    """A text answer beyond the context: words, or combining marks that never offer a safe cut."""
    kind = "long_text_combining_marks" if combining else "long_text"
    cid, opening = _opened(d, "longtext")
    tokenizer = IncrementalTokenizer(g.chat)
    records, judged = [], []
    for seq in range(chunks):
        text = "\u0301" * d.rng.randint(1000, 3000) if combining else _words(d, d.rng.randint(100, 400))
        final = seq == chunks - 1
        ids = tokenizer.feed(text) + (tokenizer.finish() + list(g.chat.response_suffix) if final else [])
        records.append(chunk_record(d, cid, seq, text=text, final=final, strategy=kind))
        judged.append(len(ids))
    return _beyond_context(g, cid, kind, opening, records, judged)


HOSTILE_SCRIPTS = (
    duplicate_seq,
    out_of_order,
    seq_gap,
    after_final,
    duplicate_prompt,
    outside_vocabulary,
    orphan_chunk,
    huge_id_list,
)
"""Hostile sequences drawn repeatedly (the prompt flood and the long answers are sized per run)."""
