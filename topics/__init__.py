"""streamwarden's wire contract: event types, the codec, topic names and specs.

Importable by any producer: it needs only the standard library and orjson.
"""

from __future__ import annotations

from topics.codec import DEFAULT_MAX_BYTES, decode, decode_any, encode
from topics.errors import (
    DecodeError,
    FieldError,
    InvalidJson,
    InvalidValue,
    MissingField,
    PayloadTooLarge,
    UnknownKind,
    UnsupportedSchemaVersion,
    WrongType,
)
from topics.events import (
    SCHEMA_VERSION,
    Action,
    ControlAction,
    ControlEvent,
    DeadLetter,
    Event,
    Message,
    PromptEvent,
    Risk,
    RiskProbs,
    Role,
    Stage,
    TokenChunkEvent,
    VerdictEvent,
    VerdictStatus,
)
from topics.names import DEFAULT_PREFIX, Topic
from topics.specs import TOPIC_SPECS, TopicSpec, build_specs

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_PREFIX",
    "SCHEMA_VERSION",
    "TOPIC_SPECS",
    "Action",
    "ControlAction",
    "ControlEvent",
    "DeadLetter",
    "DecodeError",
    "Event",
    "FieldError",
    "InvalidJson",
    "InvalidValue",
    "Message",
    "MissingField",
    "PayloadTooLarge",
    "PromptEvent",
    "Risk",
    "RiskProbs",
    "Role",
    "Stage",
    "TokenChunkEvent",
    "Topic",
    "TopicSpec",
    "UnknownKind",
    "UnsupportedSchemaVersion",
    "VerdictEvent",
    "VerdictStatus",
    "WrongType",
    "build_specs",
    "decode",
    "decode_any",
    "encode",
]
