"""The uniform record every dataset loader yields, and the text key used to dedupe across sets."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from topics.events import Risk


class Purpose(StrEnum):
    """What a dataset split may be used for (``shared/datasets/README.md``, "THE SPLIT")."""

    TRAIN = "train"
    """Training and validation (thresholds are chosen on a part carved from these)."""
    EVAL = "eval"
    """Evaluation only: never trained on, never used to pick a threshold."""


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled text from a public safety dataset.

    ``text`` is what a prompt guard judges. Response records also carry the user ``prompt`` and the
    assistant ``response`` (then ``text`` is the response). ``category`` is one of
    ``taxonomy.QUERY_CATEGORIES`` or ``None`` when the dataset gives none that maps cleanly.
    ``group`` names records that are variants of one another (translations, paraphrases, attacks
    on one goal); a validation split keeps a group on one side. It defaults to ``uid``.
    """

    uid: str
    text: str
    label: Risk
    category: str | None
    language: str
    dataset: str
    split: str
    subset: str = ""
    prompt: str | None = None
    response: str | None = None
    group: str = ""

    @property
    def split_group(self) -> str:
        return self.group or self.uid

    @property
    def is_unsafe(self) -> bool:
        return self.label is Risk.UNSAFE


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def text_key(text: str) -> str:
    """Normalised text used to detect the same record in two sets.

    NFKC, case-folded, every run of punctuation/whitespace collapsed to one space, so that
    ``"How do I kill a process?"`` and ``"how do i kill a process"`` collide.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


class UnseenTexts:
    """Stripped texts not taken before from this instance: one reader's pass over a file or set.

    Blank texts, and the ``skip`` texts given up front (e.g. cells a spreadsheet export destroyed),
    count as seen. The corpus builder dedupes across sets; this keeps one set from yielding a
    prompt twice.
    """

    def __init__(self, skip: Iterable[str] = ()) -> None:
        self._seen: set[str] = set(skip)

    def take(self, raw: str) -> str | None:
        """``raw`` stripped, or ``None`` when it is blank or was taken (or skipped) before."""
        text = raw.strip()
        if not text or text in self._seen:
            return None
        self._seen.add(text)
        return text
