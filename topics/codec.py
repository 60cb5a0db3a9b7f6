"""The one codec: events to JSON bytes and back, with validation that names the failing field.

``encode`` is orjson on the dataclass. ``decode`` checks, in order: the size bound, that the bytes
are a JSON object, the ``kind`` tag, the ``schema_version``, then every field's presence and type
(recursively, so a bad role reads ``messages[1].role``), and finally the event's own invariants
(``__post_init__``). Unknown fields are ignored so that older workers read newer producers.

Whatever the bytes, ``decode`` raises nothing but ``DecodeError``: an offending value is quoted in
the error through a bounded preview (``_preview``), never its full ``repr``, which for a value
nested near the parser's depth limit would exhaust the recursion limit, and for a huge string
would copy it into every dead letter and log line.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from topics import events as ev
from topics.errors import (
    DecodeError,
    InvalidJson,
    InvalidValue,
    MissingField,
    PayloadTooLarge,
    UnknownKind,
    UnsupportedSchemaVersion,
    WrongType,
)

E = TypeVar("E", bound=ev.Event)

DEFAULT_MAX_BYTES = 1 << 20
"""Messages above this size (1 MiB) are rejected before parsing."""

KIND_TO_TYPE: dict[str, type[ev.Event]] = {ev.kind_of(t): t for t in ev.EVENT_TYPES}

_Convert = Callable[[Any, str], Any]

_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother, _PREVIEW.maxlist, _PREVIEW.maxdict = 3, 60, 60, 6, 6


def encode(event: ev.Event) -> bytes:
    """Serialise an event to compact JSON bytes."""
    return orjson.dumps(event)


def decode(raw: bytes, expected: type[E], *, max_bytes: int = DEFAULT_MAX_BYTES) -> E:
    """Decode ``raw`` into an event of type ``expected``.

    Raises:
        DecodeError: a subclass whose ``reason`` and ``field`` say exactly what is wrong.
    """
    obj = _load_object(raw, max_bytes)
    want = ev.kind_of(expected)
    kind = obj.get("kind", want)
    if kind != want:
        raise UnknownKind(f"expected kind {want!r}, got {_preview(kind)}", field="kind")
    return _build(expected, obj)


def decode_any(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ev.Event:
    """Decode ``raw`` into whichever event its ``kind`` names."""
    obj = _load_object(raw, max_bytes)
    kind = obj.get("kind")
    cls = KIND_TO_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownKind(f"unknown kind {_preview(kind)}; expected one of {sorted(KIND_TO_TYPE)}", field="kind")
    return _build(cls, obj)


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"{len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidJson(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _build(cls: type[E], obj: dict[str, Any]) -> E:
    version = obj.get("schema_version", ev.SCHEMA_VERSION)
    if type(version) is not int or not 1 <= version <= ev.SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            f"schema_version {_preview(version)} is not supported (this reader knows 1..{ev.SCHEMA_VERSION})",
            field="schema_version",
        )
    return typing.cast(E, _dataclass_converter(cls)(obj, ""))


_CONVERTERS: dict[type[Any], _Convert] = {}


def _dataclass_converter(cls: type[Any]) -> _Convert:
    if cls not in _CONVERTERS:
        _CONVERTERS[cls] = _make_dataclass_converter(cls)
    return _CONVERTERS[cls]


def _make_dataclass_converter(cls: type[Any]) -> _Convert:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _converter(hints[f.name]), _is_required(f)) for f in dataclasses.fields(cls) if f.init]

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise WrongType(f"expected an object, got {_json_type(value)}", field=path or "$")
        kwargs = {}
        for name, conv, required in fields:
            sub = f"{path}.{name}" if path else name
            if name in value:
                kwargs[name] = conv(value[name], sub)
            elif required:
                raise MissingField("required field is missing", field=sub)
        try:
            return cls(**kwargs)
        except DecodeError as exc:
            if path and exc.field:
                exc.field = f"{path}.{exc.field}"
            raise

    return convert


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _converter(tp: Any) -> _Convert:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _optional(tp)
    if origin is tuple:
        return _tuple_of(_converter(typing.get_args(tp)[0]))
    if origin is typing.Literal:
        return _literal(typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return _enum(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass_converter(typing.cast(type[Any], tp))
    if tp in (str, int, float, bool):
        return _scalar(tp)
    raise TypeError(f"codec cannot handle field type {tp!r}")


def _optional(tp: Any) -> _Convert:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"codec supports only X | None unions, not {tp!r}")
    inner = _converter(args[0])
    return lambda v, path: None if v is None else inner(v, path)


def _tuple_of(item: _Convert) -> _Convert:
    def convert(value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise WrongType(f"expected an array, got {_json_type(value)}", field=path)
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return convert


def _literal(options: tuple[Any, ...]) -> _Convert:
    def convert(value: Any, path: str) -> Any:
        if value not in options:
            raise InvalidValue(f"expected one of {list(options)}, got {_preview(value)}", field=path)
        return value

    return convert


def _enum(tp: type[StrEnum]) -> _Convert:
    allowed = [m.value for m in tp]

    def convert(value: Any, path: str) -> StrEnum:
        if not isinstance(value, str):
            raise WrongType(f"expected a string, got {_json_type(value)}", field=path)
        try:
            return tp(value)
        except ValueError:
            raise InvalidValue(f"expected one of {allowed}, got {_preview(value)}", field=path) from None

    return convert


def _scalar(tp: type) -> _Convert:
    def convert(value: Any, path: str) -> Any:
        # bool is an int in Python but not in JSON; an int is an acceptable float.
        ok = (
            isinstance(value, tp) and not (tp is int and isinstance(value, bool))
            if tp is not float
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok:
            raise WrongType(f"expected {_JSON_NAMES[tp]}, got {_json_type(value)}", field=path)
        return float(value) if tp is float else value

    return convert


_JSON_NAMES: dict[type, str] = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _preview(value: Any) -> str:
    """A short ``repr`` of a decoded JSON value: nesting, long strings and long arrays are elided."""
    return _PREVIEW.repr(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
