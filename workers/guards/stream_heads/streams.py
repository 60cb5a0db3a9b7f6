"""Streamed examples: answers to stream, each with the character where it turns harmful.

No response set marks where an answer becomes harmful, so the examples are built so that it is
known (``docs/stream_heads.md`` gives the reasons):

- ``natural``: an answer as written. A harmful answer is harmful from its first character (it is
  a compliance with a harmful request from its first word) unless its record says where it turns
  harmful (user data may); a safe one never is.
- ``spliced``: the first one to three sentences of a safe answer to the same prompt (a refusal, a
  caution), a blank line, then a harmful answer. It turns harmful at the first character of the
  harmful answer (the junction), or from where that answer turns harmful when its record says.
  This is the refuse-then-comply shape of many jailbroken answers.

Each harmful example also records where its first harmful sentence ends, so a cut-off can be
called a *hit* (within that sentence) as in Qwen3Guard's streaming evaluation. The same
construction serves training (the training response sets) and evaluation (the evaluation-only
ones). Choices (partner, sentence count) come from a seeded hash of the harmful answer's id, so
they do not depend on record order.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from workers.guards.stream_heads.answers import ResponseRecord

Kind = Literal["natural", "spliced"]
SPLICE_SEPARATOR = "\n\n"
MAX_PREFIX_SENTENCES = 3

# A sentence ends at terminal punctuation followed by whitespace, or at a line break.
_SENTENCE_END = re.compile(r"[.!?。！？…](?=\s)|\n")


@dataclass(frozen=True, slots=True)
class StreamedResponse:
    """One answer to stream after its prompt.

    ``harmful_from`` is the offset in ``text`` of the first harmful character (None for a safe
    answer); ``sentence_end`` the offset just past the first harmful sentence.
    """

    uid: str
    dataset: str
    group: str
    prompt: str
    text: str
    harmful_from: int | None
    sentence_end: int | None
    category: str | None
    language: str
    kind: Kind

    @property
    def harmful(self) -> bool:
        return self.harmful_from is not None


def sentence_end(text: str, start: int) -> int:
    """Offset just past the first sentence that starts at ``start`` (its terminator included).

    A sentence needs a letter before its terminator, so leading blank lines and list numbers
    (``"1. "``) do not end it; a text without a terminator is one sentence.
    """
    for match in _SENTENCE_END.finditer(text, start):
        if any(char.isalpha() for char in text[start : match.start()]):
            return match.end()
    return len(text)


def leading_sentences(text: str, count: int) -> str:
    """The first ``count`` sentences of ``text``, trailing whitespace removed."""
    end = 0
    for _ in range(count):
        if not any(char.isalpha() for char in text[end:]):
            break
        end = sentence_end(text, end)
    return text[:end].rstrip()


def natural(record: ResponseRecord) -> StreamedResponse:
    """The answer as written; a harmful one is harmful from its first character (or from
    ``record.harmful_from`` when the data says where)."""
    harmful_from = (record.harmful_from or 0) if record.harmful else None
    return StreamedResponse(
        uid=record.uid,
        dataset=record.dataset,
        group=record.group,
        prompt=record.prompt,
        text=record.response,
        harmful_from=harmful_from,
        sentence_end=None if harmful_from is None else sentence_end(record.response, harmful_from),
        category=record.category,
        language=record.language,
        kind="natural",
    )


def spliced(safe: ResponseRecord, harmful: ResponseRecord, sentences: int) -> StreamedResponse:
    """``sentences`` leading sentences of ``safe``, a blank line, then ``harmful`` (its prompt).

    Raises:
        ValueError: ``harmful`` is not harmful, ``safe`` is, or the two answer different prompts.
    """
    if not harmful.harmful or safe.harmful or safe.group != harmful.group:
        raise ValueError(f"cannot splice {safe.uid} (safe) onto {harmful.uid} (harmful)")
    prefix = leading_sentences(safe.response, sentences) + SPLICE_SEPARATOR
    text = prefix + harmful.response
    start = len(prefix) + (harmful.harmful_from or 0)
    return StreamedResponse(
        uid=f"{harmful.uid}+after+{safe.uid}",
        dataset=harmful.dataset,
        group=harmful.group,
        prompt=harmful.prompt,
        text=text,
        harmful_from=start,
        sentence_end=sentence_end(text, start),
        category=harmful.category,
        language=harmful.language,
        kind="spliced",
    )


def _draw(seed: int, uid: str, modulus: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % modulus


def spliced_examples(records: Sequence[ResponseRecord], *, seed: int) -> list[StreamedResponse]:
    """One spliced example per harmful answer that has a safe answer to the same prompt.

    The safe partner and the number of its sentences (1 to ``MAX_PREFIX_SENTENCES``) are drawn by
    a seeded hash of the harmful answer's id.
    """
    safe_by_group: dict[str, list[ResponseRecord]] = defaultdict(list)
    for record in records:
        if not record.harmful and record.response.strip():
            safe_by_group[record.group].append(record)
    examples = []
    for record in records:
        partners = sorted(safe_by_group.get(record.group, ()), key=lambda r: r.uid)
        if not record.harmful or not partners:
            continue
        partner = partners[_draw(seed, record.uid, len(partners))]
        sentences = 1 + _draw(seed + 1, record.uid, MAX_PREFIX_SENTENCES)
        examples.append(spliced(partner, record, sentences))
    return examples


def streamed_examples(records: Iterable[ResponseRecord], *, seed: int) -> list[StreamedResponse]:
    """Every answer as a natural example, then the spliced examples (``spliced_examples``)."""
    kept = list(records)
    return [natural(record) for record in kept] + spliced_examples(kept, seed=seed)
