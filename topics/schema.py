"""JSON Schema (draft 2020-12) for every event, generated from the dataclasses.

Producers in other languages validate against ``topics/schemas/<kind>.json``; a test keeps those
files equal to what ``event_schema`` generates, so the types stay the single source of truth.
Run ``python -m topics.schema`` to rewrite them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any

from topics import events as ev

SCHEMA_DIR = Path(__file__).with_name("schemas")

# Constraints the dataclasses enforce in __post_init__, stated for other languages too.
_FIELD_EXTRAS: dict[str, dict[str, Any]] = {
    "conversation_id": {"minLength": 1, "maxLength": ev.MAX_ID_LENGTH},
    "message_id": {"minLength": 1, "maxLength": ev.MAX_ID_LENGTH},
    "seq": {"minimum": 0},
}
_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": (1 << 31) - 1}


def event_schema(cls: type[ev.Event]) -> dict[str, Any]:
    """The JSON Schema of one event type."""
    defs: dict[str, Any] = {}
    body = _object_schema(cls, defs)
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://streamwarden.dev/schemas/v{ev.SCHEMA_VERSION}/{ev.kind_of(cls)}.json",
        "title": cls.__name__,
        "description": (cls.__doc__ or "").strip().splitlines()[0],
        **body,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _object_schema(cls: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        props[f.name] = _type_schema(hints[f.name], defs) | _FIELD_EXTRAS.get(f.name, {})
        if f.name == "token_ids":
            props[f.name] = _nullable({"type": "array", "items": _TOKEN_ID})
        if f.name == "kind" or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            required.append(f.name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": True}


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _nullable(_type_schema(inner, defs))
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], defs)}
    if origin is typing.Literal:
        (value,) = typing.get_args(tp)
        return {"const": value}
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp):
        name = typing.cast(type, tp).__name__
        defs.setdefault(name, _object_schema(typing.cast(type, tp), defs))
        return {"$ref": f"#/$defs/{name}"}
    return {"type": {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def render(cls: type[ev.Event]) -> str:
    """The schema file's exact text."""
    return json.dumps(event_schema(cls), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write one schema file per event type; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for cls in ev.EVENT_TYPES:
        path = directory / f"{ev.kind_of(cls)}.json"
        path.write_text(render(cls), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_all():
        sys.stdout.write(f"wrote {written}\n")
