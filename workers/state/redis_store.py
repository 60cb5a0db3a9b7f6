"""The Redis implementation of ``ConversationStore``.

Each mutation is one Lua script (registered once, run with EVALSHA), so the compare-and-set on
``message_id`` / ``epoch`` / ``seq``, the log append and the TTL refresh are one atomic step. The
token log is a Redis string of little-endian uint32 ids grown with ``APPEND``, so a rebuild reads
it with one ``GETRANGE``. Connection and timeout errors are retried with jittered backoff; the
scripts are idempotent under retry (a re-applied chunk reports DUPLICATE). What still fails after
those retries is raised as ``StoreUnavailable``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, fields
from typing import Any, ParamSpec, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.state import keys
from workers.state.base import ApplyStatus, ChunkUpdate, StoreUnavailable, TurnState

_P = ParamSpec("_P")
_R = TypeVar("_R")
_TRANSPORT_ERRORS = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)


def _reachable(method: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Turn Redis transport errors (after the client's own retries) into ``StoreUnavailable``."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except _TRANSPORT_ERRORS as exc:
            raise StoreUnavailable(f"Redis unreachable: {type(exc).__name__}: {exc}") from exc

    return wrapper


_OPEN_TURN = """
local cur = redis.call('HMGET', KEYS[1], 'message_id', 'epoch')
if cur[1] == ARGV[2] then return 'duplicate' end
if cur[2] and tonumber(cur[2]) > tonumber(ARGV[1]) then return 'fenced' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'ok'
"""

_APPLY_CHUNK = """
local rec = redis.call('HMGET', KEYS[1], 'message_id', 'epoch', 'next_seq')
if not rec[1] then return 'missing' end
if rec[1] ~= ARGV[2] then return 'stale_message' end
if tonumber(rec[2]) > tonumber(ARGV[1]) then return 'fenced' end
local nxt = tonumber(rec[3])
local seq = tonumber(ARGV[3])
if seq < nxt then return 'duplicate' end
if seq > nxt then return 'gap' end
local len = redis.call('APPEND', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[1], 'next_seq', tonumber(ARGV[4]) + 1, 'epoch', ARGV[1], 'log_len', len / 4, unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 'ok'
"""

_INT_FIELDS = {"epoch", "prompt_len", "log_len", "next_seq", "response_tokens", "prompt_offset", "chunk_offset"}


def pack_ids(ids: Sequence[int]) -> bytes:
    return np.asarray(ids, dtype="<u4").tobytes()


def unpack_ids(raw: bytes) -> list[int]:
    return np.frombuffer(raw, dtype="<u4").astype(np.int64).tolist()  # type: ignore[no-any-return]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode_field(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


class RedisStore:
    """``ConversationStore`` on Redis >= 6.2 (Lua scripting; no module needed)."""

    def __init__(self, url: str, *, namespace: str, ttl_s: int, finished_ttl_s: int | None = None) -> None:
        """``ttl_s``: how long an open turn lives without a write; ``finished_ttl_s`` (default
        ``ttl_s``): how long a turn lives after its final chunk or its cut-off, long enough to
        recognise records read again and chunks sent after the end."""
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=False,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._ns = namespace
        self._ttl_ms = ttl_s * 1000
        self._finished_ttl_ms = (finished_ttl_s if finished_ttl_s is not None else ttl_s) * 1000
        self._open_turn = self._redis.register_script(_OPEN_TURN)
        self._apply_chunk = self._redis.register_script(_APPLY_CHUNK)

    @_reachable
    async def ping(self) -> bool:
        """Check the server, and load the scripts into it so the first writes find them."""
        # Unloaded, the first burst of writes all fail EVALSHA with NOSCRIPT and load them at once.
        for script in (self._open_turn, self._apply_chunk):
            await self._redis.script_load(script.script)
        return bool(await self._redis.ping())

    @_reachable
    async def load(self, conversation_id: str) -> TurnState | None:
        raw = await self._redis.hgetall(keys.conv_key(self._ns, conversation_id))
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        values: dict[str, object] = {}
        for f in fields(TurnState):
            text = data.get(f.name, "")
            if f.name in _INT_FIELDS:
                # A field the record predates reads as its default (the offsets' -1: nothing known).
                values[f.name] = int(text) if text else (f.default if isinstance(f.default, int) else 0)
            elif f.name == "final":
                values[f.name] = text == "1"
            else:
                values[f.name] = text
        return TurnState(**values)  # type: ignore[arg-type]

    @_reachable
    async def open_turn(self, state: TurnState, prompt_ids: Sequence[int]) -> ApplyStatus:
        if state.log_len != len(prompt_ids):
            raise ValueError(f"log_len {state.log_len} != {len(prompt_ids)} prompt ids")
        pairs: list[str] = []
        for name, value in asdict(state).items():
            pairs += [name, _encode_field(value)]
        cid = state.conversation_id
        result = await self._open_turn(
            keys=[keys.conv_key(self._ns, cid), keys.log_key(self._ns, cid)],
            args=[state.epoch, state.message_id, self._ttl_ms, pack_ids(prompt_ids), *pairs],
        )
        return ApplyStatus(_text(result))

    @_reachable
    async def apply_chunk(
        self,
        conversation_id: str,
        message_id: str,
        *,
        epoch: int,
        seq: int,
        new_ids: Sequence[int],
        update: ChunkUpdate,
        last_seq: int | None = None,
    ) -> ApplyStatus:
        last = seq if last_seq is None else last_seq
        if last < seq:
            raise ValueError(f"last_seq {last} is below seq {seq}")
        pairs: list[str] = []
        for name, value in asdict(update).items():
            pairs += [name, _encode_field(value)]
        result = await self._apply_chunk(
            keys=[keys.conv_key(self._ns, conversation_id), keys.log_key(self._ns, conversation_id)],
            args=[epoch, message_id, seq, last, self._ttl_ms_after(update), pack_ids(new_ids), *pairs],
        )
        return ApplyStatus(_text(result))

    def _ttl_ms_after(self, update: ChunkUpdate) -> int:
        return self._finished_ttl_ms if update.final or update.cutoff else self._ttl_ms

    @_reachable
    async def read_log(self, conversation_id: str, end: int | None = None) -> list[int]:
        key = keys.log_key(self._ns, conversation_id)
        raw = await self._redis.getrange(key, 0, -1 if end is None else end * 4 - 1) if end != 0 else b""
        return unpack_ids(raw if isinstance(raw, bytes) else raw.encode())

    @_reachable
    async def bump_epoch(self, partition: int) -> int:
        return int(await self._redis.incr(keys.epoch_key(self._ns, partition)))

    async def aclose(self) -> None:
        await self._redis.aclose()
