"""Errors raised while turning wire bytes into events.

Hierarchy::

    DecodeError                 a message that cannot become an event (never retriable)
    ├── PayloadTooLarge         raw size above the configured limit
    ├── InvalidJson             not parseable JSON, or not a JSON object
    ├── UnknownKind             ``kind`` names no event, or the wrong event for the topic
    ├── UnsupportedSchemaVersion
    └── FieldError
        ├── MissingField        a required field is absent
        ├── WrongType           a field has the wrong JSON type
        └── InvalidValue        right type, but outside what the contract allows

Every error carries a stable ``reason`` code (what dead-letter consumers group by) and, where it
applies, the dotted ``field`` path of the offending value (``messages[2].role``).
"""

from __future__ import annotations

from typing import ClassVar


class DecodeError(ValueError):
    """A message that cannot be decoded into an event."""

    reason: ClassVar[str] = "decode_error"
    retriable: ClassVar[bool] = False

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.detail = detail
        self.field = field


class PayloadTooLarge(DecodeError):
    reason = "payload_too_large"


class InvalidJson(DecodeError):
    reason = "invalid_json"


class UnknownKind(DecodeError):
    reason = "unknown_kind"


class UnsupportedSchemaVersion(DecodeError):
    reason = "unsupported_schema_version"


class FieldError(DecodeError):
    """A field is missing, mistyped or out of range (see the subclasses)."""

    reason = "invalid_field"

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail, field=field)


class MissingField(FieldError):
    reason = "missing_field"


class WrongType(FieldError):
    reason = "wrong_type"


class InvalidValue(FieldError):
    reason = "invalid_value"
