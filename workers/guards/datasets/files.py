"""Readers for the file formats the datasets were released in (UTF-8, some with a BOM)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def csv_rows(
    path: Path, *, delimiter: str = ",", quoted: bool = True, encoding: str = "utf-8-sig"
) -> Iterator[dict[str, str]]:
    """Rows of a CSV/TSV file with a header line, as dicts (a leading UTF-8 BOM is dropped).

    ``quoted=False`` reads quote characters as text (files released without CSV quoting);
    ``encoding`` names another codec for files released in one (e.g. ``gb18030``).
    """
    csv.field_size_limit(1 << 24)
    with path.open(encoding=encoding, newline="") as handle:
        if quoted:
            yield from csv.DictReader(handle, delimiter=delimiter)
        else:
            yield from csv.DictReader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Objects of a JSON-lines file, skipping blank lines."""
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def json_document(path: Path) -> Any:
    with path.open(encoding="utf-8-sig") as handle:
        return json.load(handle)


def text_lines(path: Path) -> Iterator[str]:
    """Non-empty lines of a one-text-per-line file, stripped of surrounding whitespace."""
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if text := line.strip():
                yield text


def first_column(path: Path) -> Iterator[str]:
    """Non-empty first cells of a header-less CSV file (quoted cells may span lines)."""
    csv.field_size_limit(1 << 24)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.reader(handle):
            if row and (text := row[0].strip()):
                yield text
