"""Single hostile records: valid events broken field by field, and bytes that are no event at all.

Every strategy builds one record on a conversation id of its own and states the dead-letter
reason (and, where the contract fixes it, the field) the worker must answer it with. The reasons
are those of the wire contract (``topics.errors``) and of the worker's own checks (policy names,
prompt token ids, record keys); the strategies encode what the contract says, not what the codec
happens to do, so a codec that disagrees is caught.

Strategies draw from a seeded ``random.Random`` (see ``workers.fuzz`` for why not hypothesis).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from topics import codec
from topics.events import MAX_ID_LENGTH, Message, PromptEvent, Role, TokenChunkEvent
from topics.names import Topic
from workers.fuzz.records import Record

MAX_DEPTH = 1020
"""Deepest nesting drawn below orjson's parse limit (1024): such documents parse, and the codec
must still answer with a dead letter rather than fail on them."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What the worker under test accepts: its message size bound and the guard's vocabulary."""

    max_message_bytes: int
    vocab_size: int
    end_of_turn_id: int


@dataclass(slots=True)
class Draw:
    """The random source and id counter shared by every strategy of one run."""

    rng: random.Random
    limits: Limits
    run: str
    counter: int = 0
    last: str = ""  # the id drawn last: the conversation of the record a strategy just built

    def identity(self) -> dict[str, Any]:
        """``event_id`` and ``ts_ms`` of a new event, drawn too, so that a seed fixes every byte."""
        return {"event_id": self.rng.randbytes(16).hex(), "ts_ms": 1_700_000_000_000 + self.counter}

    def conversation_id(self, kind: str) -> str:
        self.counter += 1
        self.last = f"fz-{self.run}-{kind}-{self.counter}"
        return self.last


Strategy = Callable[[Draw], Record]

BEYOND_64_BITS = "<2**64>"
"""Stands for the integer 2**64 in a drawn field (the parser reads it as a float; orjson cannot
write it, so it is spliced into the bytes)."""


def _chunk(d: Draw, cid: str, **fields: Any) -> dict[str, Any]:
    event = TokenChunkEvent(conversation_id=cid, message_id="m1", seq=0, text="hello there", **d.identity())
    obj: dict[str, Any] = orjson.loads(codec.encode(event))
    obj.update(fields)
    return obj


def _prompt(d: Draw, cid: str, **fields: Any) -> dict[str, Any]:
    event = PromptEvent(
        conversation_id=cid,
        message_id="m1",
        messages=(Message(role=Role.USER, content="Tell me about bread."),),
        **d.identity(),
    )
    obj: dict[str, Any] = orjson.loads(codec.encode(event))
    obj.update(fields)
    return obj


def _base(d: Draw, cid: str) -> tuple[Topic, dict[str, Any]]:
    if d.rng.random() < 0.5:
        return Topic.TOKENS, _chunk(d, cid)
    return Topic.PROMPTS, _prompt(d, cid)


def _record(
    strategy: str, topic: Topic, cid: str, value: bytes | dict[str, Any], reason: str, field: str | None
) -> Record:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    raw = raw.replace(f'"{BEYOND_64_BITS}"'.encode(), str(1 << 64).encode())
    return Record(topic, cid.encode(), raw, strategy, dead_letter=reason, field=field)


def _nested(d: Draw, depth: int | None = None) -> str:
    n = depth if depth is not None else d.rng.randint(3, MAX_DEPTH)
    open_, close = ("[", "]") if d.rng.random() < 0.5 else ('{"a":', "}")
    return open_ * n + "1" + close * n


# -- bytes that are not an event --------------------------------------------------------------------


def not_json(d: Draw) -> Record:
    cid = d.conversation_id("notjson")
    # A leading 0xff byte is neither JSON nor UTF-8, whatever the random tail is.
    raw = b"\xff" + d.rng.randbytes(d.rng.randint(0, 2048))
    return _record("not_json", d.rng.choice((Topic.PROMPTS, Topic.TOKENS)), cid, raw, "invalid_json", None)


def truncated_json(d: Draw) -> Record:
    cid = d.conversation_id("trunc")
    topic, obj = _base(d, cid)
    raw = orjson.dumps(obj)
    return _record("truncated_json", topic, cid, raw[: d.rng.randint(1, len(raw) - 1)], "invalid_json", None)


def invalid_utf8(d: Draw) -> Record:
    cid = d.conversation_id("utf8")
    topic, obj = _base(d, cid)
    bad = d.rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"))
    raw = orjson.dumps(obj).replace(b"hello there" if topic is Topic.TOKENS else b"bread", b"x" + bad + b"y", 1)
    return _record("invalid_utf8", topic, cid, raw, "invalid_json", None)


def lone_surrogate(d: Draw) -> Record:
    cid = d.conversation_id("surrogate")
    topic, obj = _base(d, cid)
    raw = orjson.dumps(obj).replace(b"hello there" if topic is Topic.TOKENS else b"bread", b"\\ud800", 1)
    return _record("lone_surrogate", topic, cid, raw, "invalid_json", None)


def not_an_object(d: Draw) -> Record:
    cid = d.conversation_id("notobj")
    raw = d.rng.choice((b"[]", b"[1,2,3]", b"42", b'"prompt"', b"null", b"true", b"-0.5e3"))
    return _record("not_an_object", d.rng.choice((Topic.PROMPTS, Topic.TOKENS)), cid, raw, "invalid_json", None)


def too_deep(d: Draw) -> Record:
    cid = d.conversation_id("toodeep")
    topic, obj = _base(d, cid)
    raw = orjson.dumps(obj)[:-1] + b',"extra":' + _nested(d, d.rng.randint(1100, 5000)).encode() + b"}"
    return _record("nesting_beyond_parser_limit", topic, cid, raw, "invalid_json", None)


def deep_in_field(d: Draw) -> Record:
    """Nesting the parser accepts, in a field whose type it is not."""
    cid = d.conversation_id("deep")
    topic, obj = _base(d, cid)
    choices = [("kind", "unknown_kind"), ("schema_version", "unsupported_schema_version")]
    choices += [("seq", "wrong_type"), ("final", "wrong_type")] if topic is Topic.TOKENS else [("tenant", "wrong_type")]
    name, reason = d.rng.choice(choices)
    raw = orjson.dumps(obj)[:-1] + f',"{name}":{_nested(d)}}}'.encode()
    # A repeated key: the parser keeps the last value, so the nested one replaces the valid one.
    return _record("deep_nesting_in_field", topic, cid, raw, reason, name)


def number_overflow(d: Draw) -> Record:
    cid = d.conversation_id("bignum")
    raw = orjson.dumps(_chunk(d, cid))[:-1] + b',"seq":1e400}'
    return _record("number_overflow", Topic.TOKENS, cid, raw, "invalid_json", None)


# -- fields of the wrong type, missing, or out of contract ------------------------------------------

_CHUNK_WRONG_TYPES: tuple[tuple[str, Any, str], ...] = (
    ("conversation_id", 17, "conversation_id"),
    ("conversation_id", None, "conversation_id"),
    ("message_id", ["m1"], "message_id"),
    ("seq", "1", "seq"),
    ("seq", 1.5, "seq"),
    ("seq", True, "seq"),
    ("seq", None, "seq"),
    ("seq", BEYOND_64_BITS, "seq"),
    ("text", 5, "text"),
    ("text", {"t": "x"}, "text"),
    ("token_ids", "1,2,3", "token_ids"),
    ("final", "yes", "final"),
    ("final", None, "final"),
    ("ts_ms", "now", "ts_ms"),
    ("event_id", 5, "event_id"),
)
_PROMPT_WRONG_TYPES: tuple[tuple[str, Any, str], ...] = (
    ("messages", "hi", "messages"),
    ("messages", {"role": "user"}, "messages"),
    ("messages", ["hi"], "messages[0]"),
    ("messages", [{"role": 1, "content": "hi"}], "messages[0].role"),
    ("messages", [{"role": "user", "content": 5}], "messages[0].content"),
    ("tenant", 5, "tenant"),
    ("policy", ["strict"], "policy"),
    ("token_ids", {"0": 1}, "token_ids"),
)


def wrong_type(d: Draw) -> Record:
    cid = d.conversation_id("type")
    if d.rng.random() < 0.6:
        name, value, field = d.rng.choice(_CHUNK_WRONG_TYPES)
        if name == "text":
            obj = _chunk(d, cid, text=value)
        elif name == "token_ids":
            obj = _chunk(d, cid, text=None, token_ids=value)
        else:
            obj = _chunk(d, cid, **{name: value})
        topic = Topic.TOKENS
    else:
        name, value, field = d.rng.choice(_PROMPT_WRONG_TYPES)
        obj = _prompt(d, cid, **{name: value})
        if name == "token_ids":
            obj["messages"] = []
        topic = Topic.PROMPTS
    return _record("wrong_type", topic, cid, obj, "wrong_type", field)


def token_id_of_wrong_type(d: Draw) -> Record:
    cid = d.conversation_id("idtype")
    ids: list[Any] = [d.rng.randrange(1000, 100_000) for _ in range(d.rng.randint(1, 2000))]
    at = d.rng.randrange(len(ids))
    ids[at] = d.rng.choice(("7", 7.5, None, True, [7], {"id": 7}))
    return _record(
        "token_id_of_wrong_type",
        Topic.TOKENS,
        cid,
        _chunk(d, cid, text=None, token_ids=ids),
        "wrong_type",
        f"token_ids[{at}]",
    )


def missing_field(d: Draw) -> Record:
    cid = d.conversation_id("missing")
    if d.rng.random() < 0.6:
        obj, topic = _chunk(d, cid), Topic.TOKENS
        name = d.rng.choice(("conversation_id", "message_id", "seq"))
        del obj[name]
        return _record("missing_field", topic, cid, obj, "missing_field", name)
    obj, topic = _prompt(d, cid), Topic.PROMPTS
    name = d.rng.choice(("conversation_id", "message_id", "messages[0].role", "messages[0].content"))
    if name.startswith("messages"):
        del obj["messages"][0][name.rsplit(".", 1)[1]]
    else:
        del obj[name]
    return _record("missing_field", topic, cid, obj, "missing_field", name)


def invalid_value(d: Draw) -> Record:
    cid = d.conversation_id("value")
    long_id = "x" * d.rng.randint(MAX_ID_LENGTH + 1, 4 * MAX_ID_LENGTH)
    cases: tuple[tuple[Topic, dict[str, Any], str], ...] = (
        (Topic.TOKENS, _chunk(d, cid, seq=-d.rng.randint(1, 1 << 63)), "seq"),
        (Topic.TOKENS, _chunk(d, cid, conversation_id=""), "conversation_id"),
        (Topic.TOKENS, _chunk(d, cid, conversation_id=long_id), "conversation_id"),
        (Topic.TOKENS, _chunk(d, cid, message_id=""), "message_id"),
        (Topic.TOKENS, _chunk(d, cid, text=None, token_ids=[5, -d.rng.randint(1, 1 << 40)]), "token_ids"),
        (Topic.TOKENS, _chunk(d, cid, text=None, token_ids=[5, (1 << 31) + d.rng.randint(0, 1 << 40)]), "token_ids"),
        (Topic.TOKENS, _chunk(d, cid, token_ids=[5, 6]), "text"),  # text and token_ids
        (Topic.TOKENS, _chunk(d, cid, text=None), "text"),  # neither, and not final
        (Topic.PROMPTS, _prompt(d, cid, messages=[{"role": "robot", "content": "hi"}]), "messages[0].role"),
        (Topic.PROMPTS, _prompt(d, cid, messages=[{"role": "assistant", "content": "hi"}]), "messages"),
        (Topic.PROMPTS, _prompt(d, cid, messages=[]), "messages"),
        (Topic.PROMPTS, _prompt(d, cid, token_ids=[1, 2, 3]), "messages"),  # messages and token_ids
        (Topic.PROMPTS, _prompt(d, cid, message_id=long_id), "message_id"),
    )
    topic, obj, field = d.rng.choice(cases)
    # The record key stays the conversation's (a too-long or empty id in the event is the defect).
    return _record("invalid_value", topic, cid, obj, "invalid_value", field)


def invalid_for_the_guard(d: Draw) -> Record:
    """Well-formed events the worker refuses: an unknown policy, prompt ids it cannot judge."""
    cid = d.conversation_id("guard")
    lim = d.limits
    cases: tuple[tuple[dict[str, Any], str], ...] = (
        (_prompt(d, cid, policy=d.rng.choice(("bogus", "STRICT", "", "lenient"))), "policy"),
        (_prompt(d, cid, messages=[], token_ids=[1, 2, 3]), "token_ids"),  # does not end the user's turn
        (
            _prompt(d, cid, messages=[], token_ids=[d.rng.randrange(lim.vocab_size, 1 << 31), lim.end_of_turn_id]),
            "token_ids",
        ),
    )
    obj, field = d.rng.choice(cases)
    return _record("invalid_for_the_guard", Topic.PROMPTS, cid, obj, "invalid_value", field)


def unknown_kind(d: Draw) -> Record:
    cid = d.conversation_id("kind")
    topic, obj = _base(d, cid)
    other = "prompt" if topic is Topic.TOKENS else "token_chunk"
    obj["kind"] = d.rng.choice(("nonsense", "verdict", "dead_letter", "control", other, None, 5, ""))
    return _record("unknown_kind", topic, cid, obj, "unknown_kind", "kind")


def unsupported_schema_version(d: Draw) -> Record:
    cid = d.conversation_id("version")
    topic, obj = _base(d, cid)
    obj["schema_version"] = d.rng.choice((0, 2, 99, -1, 1 << 63, "1", 1.0, None, True))
    return _record("unsupported_schema_version", topic, cid, obj, "unsupported_schema_version", "schema_version")


# -- size and keys ----------------------------------------------------------------------------------


def oversized(d: Draw) -> Record:
    cid = d.conversation_id("big")
    over = d.limits.max_message_bytes + d.rng.randint(1, 64 << 10)
    if d.rng.random() < 0.5:
        obj = _chunk(d, cid, text="x" * over)
    else:
        obj = _chunk(d, cid, text=None, token_ids=[d.rng.randrange(1000, 100_000) for _ in range(over // 5)])
    return _record("oversized_payload", Topic.TOKENS, cid, obj, "payload_too_large", None)


def wrong_key(d: Draw) -> Record:
    cid = d.conversation_id("key")
    topic, obj = _base(d, cid)
    key = d.rng.choice((None, b"", b"\xff\xfe", f"{cid}-other".encode(), cid.upper().encode()))
    return Record(topic, key, orjson.dumps(obj), "wrong_key", dead_letter="key_mismatch", field="conversation_id")


STRATEGIES: tuple[tuple[Strategy, float], ...] = (
    (not_json, 1.0),
    (truncated_json, 1.0),
    (invalid_utf8, 1.0),
    (lone_surrogate, 0.5),
    (not_an_object, 0.5),
    (too_deep, 0.5),
    (deep_in_field, 1.0),
    (number_overflow, 0.3),
    (wrong_type, 2.0),
    (token_id_of_wrong_type, 0.5),
    (missing_field, 1.5),
    (invalid_value, 2.0),
    (invalid_for_the_guard, 1.0),
    (unknown_kind, 1.0),
    (unsupported_schema_version, 1.0),
    (oversized, 0.3),
    (wrong_key, 1.0),
)
"""Every single-record strategy with its relative weight (oversized records are few: they are
large, and one of each kind proves the bound)."""


def single(d: Draw) -> Record:
    """One record from a strategy drawn by weight."""
    strategies, weights = zip(*STRATEGIES, strict=True)
    strategy: Strategy = d.rng.choices(strategies, weights=weights)[0]
    return strategy(d)
