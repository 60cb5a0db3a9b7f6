"""A user's own labelled policy data for ``train stream-heads`` (``--prompts`` / ``--responses``).

Both are JSON-lines files, one object per line (blank lines skipped):

- prompts: ``{"text": str, "label": "safe" | "unsafe" | "controversial", "category": str?,
  "language": str?, "group": str?}``. ``category`` is one of the nine query categories
  (``taxonomy.QUERY_CATEGORIES``, any spelling ``canonical_category`` accepts).
- responses: ``{"prompt": str, "response": str, "harmful": bool, "harmful_from": int?,
  "category": str?, "language": str?, "group": str?}``. ``harmful_from`` is the character offset
  in ``response`` where it turns harmful, when known (default 0 for a harmful answer: the whole
  answer, as in ``streams``). Answers sharing a ``group`` (default: the prompt text) answer the
  same prompt: they stay on one side of the validation split and are paired for spliced examples.

``language`` defaults to ``en``. Every malformed line raises ``UserDataError`` naming the file,
the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from topics.events import Risk
from workers.backends.taxonomy import canonical_category
from workers.guards.datasets.records import Record
from workers.guards.stream_heads.answers import ResponseRecord


class UserDataError(ValueError):
    """A line of a user data file that cannot be used."""


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserDataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserDataError(f"{path}:{number}: expected a JSON object")
            yield number, row


def _text(path: Path, number: int, row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserDataError(f"{path}:{number}: {key!r} must be a non-empty string")
    return value


def _optional(path: Path, number: int, row: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = row.get(key, default)
    if value is not None and not isinstance(value, str):
        raise UserDataError(f"{path}:{number}: {key!r} must be a string")
    return value


def _category(path: Path, number: int, row: Mapping[str, Any]) -> str | None:
    name = _optional(path, number, row, "category", None)
    if name is None:
        return None
    try:
        return canonical_category(name)
    except KeyError as exc:
        raise UserDataError(f"{path}:{number}: {exc.args[0]}") from None


def read_user_prompts(path: Path) -> list[Record]:
    """Prompt records of a user file (module docstring).

    Raises:
        UserDataError: a malformed line.
    """
    dataset = f"user:{path.name}"
    records = []
    for number, row in _lines(path):
        label = row.get("label")
        try:
            risk = Risk(str(label).lower())
        except ValueError:
            raise UserDataError(f"{path}:{number}: 'label' must be safe, unsafe or controversial") from None
        records.append(
            Record(
                uid=f"{dataset}/{number}",
                text=_text(path, number, row, "text"),
                label=risk,
                category=_category(path, number, row),
                language=_optional(path, number, row, "language", "en") or "en",
                dataset=dataset,
                split="train",
                group=_optional(path, number, row, "group", "") or "",
            )
        )
    return records


def read_user_responses(path: Path) -> list[ResponseRecord]:
    """Response records of a user file (module docstring).

    Raises:
        UserDataError: a malformed line, or ``harmful_from`` outside the answer.
    """
    dataset = f"user:{path.name}"
    records = []
    for number, row in _lines(path):
        prompt, response = _text(path, number, row, "prompt"), _text(path, number, row, "response")
        harmful = row.get("harmful")
        if not isinstance(harmful, bool):
            raise UserDataError(f"{path}:{number}: 'harmful' must be true or false")
        start = row.get("harmful_from")
        if start is not None and (not harmful or not isinstance(start, int) or not 0 <= start < len(response)):
            raise UserDataError(f"{path}:{number}: 'harmful_from' must be a character offset in a harmful response")
        records.append(
            ResponseRecord(
                uid=f"{dataset}/{number}",
                dataset=dataset,
                split="train",
                prompt=prompt,
                response=response,
                harmful=harmful,
                category=_category(path, number, row),
                language=_optional(path, number, row, "language", "en") or "en",
                group=_optional(path, number, row, "group", None) or f"{dataset}/prompt:{prompt}",
                source="user",
                harmful_from=start,
            )
        )
    return records
