"""Assertions shared by the dataset-reader tests."""

from __future__ import annotations

from collections.abc import Sequence

from topics.events import Risk
from workers.backends.taxonomy import QUERY_CATEGORIES
from workers.guards.datasets.records import Record


def assert_prompt_records(records: Sequence[Record], name: str, languages: set[str]) -> None:
    """``records`` read from the ``full`` split of ``name`` are well-formed prompt records.

    Non-empty stripped texts in one of ``languages``, uids unique and under ``<name>/full/``, a
    known category or none (none for safe records), no prompt/response fields.
    """
    assert records
    for record in records:
        assert record.text.strip(), record.uid
        assert record.text == record.text.strip(), record.uid
        assert record.language in languages, record.uid
        assert record.dataset == name
        assert record.split == "full"
        assert record.uid.startswith(f"{name}/full/")
        assert record.category is None or record.category in QUERY_CATEGORIES
        if record.label is Risk.SAFE:
            assert record.category is None, record.uid
        assert record.prompt is None
        assert record.response is None
    assert len({r.uid for r in records}) == len(records)
