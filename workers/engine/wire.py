"""The engine process's protocol: length-prefixed orjson messages over a pipe (no pickle).

Each message is a 4-byte big-endian length followed by one orjson object with an ``op``. The
worker (``workers.engine.process``) sends ``start`` once, then ``prompt``, ``response``,
``history`` (the ids a response job asked for), ``release`` and ``close``; the engine process
(``workers.engine.host``) answers ``ready`` or ``failed`` once, then ``scores`` or ``error`` per
request (matched by ``id``), ``history`` requests, and ``stats`` every second. Scores travel as
numbers, errors as their type name and fields, rebuilt on the worker's side into the same
exception types the in-process scheduler raises.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import orjson

from workers.engine.jobs import HistoryMismatch, SchedulerClosed, SchedulerFailed, SequenceTooLong
from workers.engine.scores import HeadScores

Message = dict[str, Any]

_LENGTH = struct.Struct(">I")
MAX_MESSAGE_BYTES = 64 << 20
"""A larger frame means a corrupt stream (the largest real one, a long prompt's ids, is ~1 MB)."""


class EngineError(RuntimeError):
    """The engine process failed a request with an error of a type the worker does not know."""


class ProtocolError(RuntimeError):
    """A frame on the engine pipe is malformed."""


def frame(message: Message) -> bytes:
    """One message as bytes on the pipe."""
    body = orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
    return _LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or ``None`` at the end of the stream.

    Raises:
        ProtocolError: a frame is cut short, too large, or not a JSON object.
    """
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the engine pipe closed inside a frame header") from exc
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"a frame of {length} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"the engine pipe closed inside a frame ({len(exc.partial)} of {length} bytes)") from exc
    message = orjson.loads(body)
    if not isinstance(message, dict) or "op" not in message:
        raise ProtocolError("a frame is not an object with an 'op'")
    return message


def encode_scores(scores: HeadScores) -> Message:
    return {
        "risk": scores.risk,
        "risk_logits": scores.risk_logits,
        "category": scores.category,
        "category_prob": scores.category_prob,
        "category_logits": scores.category_logits,
        "categories": int(scores.category_logits.shape[1]),
    }


def decode_scores(message: Message) -> HeadScores:
    n, categories = len(message["category"]), int(message["categories"])
    return HeadScores(
        risk=np.asarray(message["risk"], dtype=np.float32).reshape(n, 3),
        risk_logits=np.asarray(message["risk_logits"], dtype=np.float32).reshape(n, 3),
        category=np.asarray(message["category"], dtype=np.int64).reshape(n),
        category_prob=np.asarray(message["category_prob"], dtype=np.float32).reshape(n),
        category_logits=np.asarray(message["category_logits"], dtype=np.float32).reshape(n, categories),
    )


_KNOWN: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (HistoryMismatch, SchedulerClosed, SchedulerFailed, ValueError)
}


def encode_error(exc: BaseException) -> Message:
    error: Message = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, SequenceTooLong):
        error.update(key=exc.key, tokens=exc.tokens, limit=exc.limit)
    return error


def decode_error(error: Message) -> Exception:
    """The exception the in-process scheduler would have raised (``EngineError`` for others)."""
    kind, text = str(error.get("type", "")), str(error.get("message", ""))
    if kind == SequenceTooLong.__name__:
        return SequenceTooLong(str(error["key"]), int(error["tokens"]), int(error["limit"]))
    known = _KNOWN.get(kind)
    if known is not None:
        return known(text)
    return EngineError(f"engine process: {kind}: {text}")
