"""One labelled answer (``ResponseRecord``) and the signature of a dataset's answer reader.

Every response set's reader (``responses``, ``answers_dialogue``, ``answers_lookalike``) yields
these records; ``responses.RESPONSE_READERS`` names the reader of each set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from workers.guards.datasets.records import Record


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One model answer to one prompt, labelled harmful or not (as a whole).

    ``group`` names the prompt the answer belongs to (answers of one prompt share it and stay on
    one side of a validation split; spliced examples pair answers within a group). ``category`` is
    one of ``taxonomy.QUERY_CATEGORIES`` or None.
    """

    uid: str
    dataset: str
    split: str
    prompt: str
    response: str
    harmful: bool
    category: str | None
    language: str
    group: str
    source: str
    """The model (and attack) that wrote the answer."""
    harmful_from: int | None = None
    """Character offset where a harmful answer turns harmful, when a dataset says (else 0)."""


PromptIndex = Mapping[str, Record]
ResponseReader = Callable[[Path, str, PromptIndex], Iterator[ResponseRecord]]
