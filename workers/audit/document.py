"""``audit --json``: the audit as one JSON document, for tools.

The document is the ``Audit`` dataclass tree as orjson writes it: every field by name, enums as
their values, tuples as arrays, absent values as null. Its ``format`` names the shape
(``streamwarden.audit/1``); fields are only ever added within one format.
"""

from __future__ import annotations

import orjson

from workers.audit.run import Audit


def to_json(audit: Audit) -> bytes:
    """``audit`` as indented JSON, ending with a newline."""
    return orjson.dumps(audit, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
