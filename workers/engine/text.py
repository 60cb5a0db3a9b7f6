"""Incremental re-tokenisation of streamed text into the guard tokenizer's ids.

Producers that do not share the guard's tokenizer send the answer as text deltas. The guard must
judge exactly the ids of tokenising the whole answer at once, whatever the split of the text into
deltas. ``IncrementalTokenizer`` commits ids only where no later text can change them and holds
back the unfinished tail. Its state (the held-back text, incomplete UTF-8 bytes, counters) is a
small JSON object, so a worker can store it between chunks and another worker can resume it.

Invariant: for any split of ``text`` (``str`` pieces, or ``bytes`` pieces cut anywhere, including
inside a multi-byte character), ``concat(feed(d) for d in deltas) + finish()`` equals
``tokenizer.encode(text, add_special_tokens=False)``, also across ``state()``/``from_state()``.
The one exception is the overflow guard below.

Tokenisation runs: split out added tokens, normalise (NFC for Qwen3), pre-tokenise with a split
regex into pieces, byte-level BPE inside each piece. A cut at position ``c`` is safe, i.e. the
ids of ``text[:c]`` are final whatever follows, when:

1. no tail of the text is a proper prefix of an added token (``<|im_``): that tail is held back,
   since it may become an added token and end the text before it;
2. the character at ``c`` starts a normalisation unit (a starter that never composes with or
   reorders around what precedes it), and the last unit of the text, which may still compose
   with later characters, is held back;
3. ``c`` starts a pre-tokenizer piece, lies before the trailing whitespace run (the split regex
   decides a whitespace run only when it sees what ends it: ``\\s+(?!\\S)``, ``\\s*[\\r\\n]+``) and
   leaves at least two characters after it (contractions such as ``'ll`` are three characters:
   on two trailing characters the regex fails and splits differently once the third arrives).
   The last piece is never committed. BPE works inside a piece, so earlier pieces keep their ids.

Each ``feed`` re-tokenises the held-back tail plus the delta and commits everything before the
latest safe cut, so the work per delta is bounded by the tail (normally the last word), not by
the answer. The rules were derived for, are tested against, and are restricted to byte-level BPE
tokenizers with NFC or no normalizer and the Qwen2 or GPT-2 split pattern (Qwen3's and SmolLM2's
tokenizers); other tokenizers raise ``UnsupportedTokenizer``.

Overflow guard: a tail longer than ``max_pending_chars`` (one piece that never ends: thousands of
letters without a space or punctuation, or a huge whitespace run) is cut at a token boundary
anyway, with a warning and a count in the state (``forced_cuts``); the ids stay a lossless
tokenisation of the text but may differ from the whole-text ids around that cut. The cut starts a
normalisation unit where the tail has one; a tail without any (thousands of combining marks) is
cut at a token boundary all the same, so the held-back text, its re-tokenisation per delta and
the stored state stay bounded whatever the producer sends.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.engine.template import ChatFormat

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_MAX_PENDING_CHARS = 4096

_LOOKAHEAD_CHARS = 2
"""The pre-tokenizer's longest fixed pattern (a 3-character contraction) can fail on this many
trailing characters and match differently once more text arrives."""

_SUPPORTED_NORMALIZERS = frozenset({"NFC"})
_QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The split regex of Qwen2/Qwen3 tokenizers, the one the hold-back rules were derived for."""


class TextDecodeError(ValueError):
    """Byte deltas that are not UTF-8, or text and bytes mixed inside one character."""


class UnsupportedTokenizer(ValueError):
    """A tokenizer whose pipeline the incremental rules do not cover; the message says which part."""


@dataclass(frozen=True, slots=True)
class _Rules:
    """What the hold-back rules need from one tokenizer, computed once per tokenizer."""

    backend: Tokenizer
    added_prefixes: frozenset[str]
    added_ids: frozenset[int]
    longest_added: int
    nfc: bool


class IncrementalTokenizer:
    """Turns text deltas of one answer into final token ids (see the module docstring).

    Not thread-safe; one instance follows one answer. ``finish`` flushes and leaves an empty state,
    so the instance can go on (the ids then continue as if the text were tokenised in two parts).
    """

    def __init__(
        self,
        source: ChatFormat | PreTrainedTokenizerBase,
        *,
        max_pending_chars: int = DEFAULT_MAX_PENDING_CHARS,
    ) -> None:
        """Start an empty answer.

        Args:
            source: a ChatFormat or a fast tokenizer (byte-level BPE, NFC or no normalizer).
            max_pending_chars: overflow guard for the held-back text (see the module docstring).

        Raises:
            UnsupportedTokenizer: the tokenizer is not a fast tokenizer of a supported kind.
        """
        tokenizer = source.tokenizer if isinstance(source, ChatFormat) else source
        if max_pending_chars < 4 * _LOOKAHEAD_CHARS:
            raise ValueError(f"max_pending_chars must be at least {4 * _LOOKAHEAD_CHARS}, got {max_pending_chars}")
        self._rules = _rules_for(tokenizer)
        self._max_pending = max_pending_chars
        self._pending = ""
        self._partial = b""
        self._committed = 0
        self._forced = 0

    # -- state ------------------------------------------------------------------------------------

    @classmethod
    def from_state(
        cls,
        source: ChatFormat | PreTrainedTokenizerBase,
        state: Mapping[str, Any] | str | None,
        *,
        max_pending_chars: int = DEFAULT_MAX_PENDING_CHARS,
    ) -> IncrementalTokenizer:
        """Resume from ``state()`` (a mapping) or ``state_json()`` (a string); ``""``/None start fresh.

        Raises:
            ValueError: the state is malformed or of an unknown version.
        """
        inc = cls(source, max_pending_chars=max_pending_chars)
        if state is None or state == "":
            return inc
        data = json.loads(state) if isinstance(state, str) else state
        if not isinstance(data, Mapping) or data.get("v") != STATE_VERSION:
            raise ValueError(f"unknown incremental tokenizer state (expected version {STATE_VERSION}): {data!r}")
        try:
            pending, partial = data["pending"], bytes.fromhex(data["partial"])
            committed, forced = data["committed"], data["forced_cuts"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed incremental tokenizer state: {exc}") from None
        if not (isinstance(pending, str) and isinstance(committed, int) and isinstance(forced, int)):
            raise ValueError(f"malformed incremental tokenizer state: {data!r}")  # noqa: TRY004
        if len(partial) > 3:
            raise ValueError(f"incremental tokenizer state holds {len(partial)} partial bytes; at most 3 can be")
        inc._pending, inc._partial, inc._committed, inc._forced = pending, partial, committed, forced
        return inc

    def state(self) -> dict[str, Any]:
        """JSON-safe state: held-back text, partial UTF-8 bytes (hex), ids committed, forced cuts."""
        return {
            "v": STATE_VERSION,
            "pending": self._pending,
            "partial": self._partial.hex(),
            "committed": self._committed,
            "forced_cuts": self._forced,
        }

    def state_json(self) -> str:
        """``state()`` as compact JSON text."""
        return json.dumps(self.state(), ensure_ascii=False, separators=(",", ":"))

    @property
    def pending_text(self) -> str:
        """The held-back text (not yet tokenised for good)."""
        return self._pending

    @property
    def committed(self) -> int:
        """How many ids this answer has committed so far."""
        return self._committed

    @property
    def forced_cuts(self) -> int:
        """How many times the overflow guard cut the held-back text."""
        return self._forced

    # -- feeding ----------------------------------------------------------------------------------

    def feed(self, delta: str | bytes) -> list[int]:
        """Add the next piece of the answer; return the ids that are now final.

        Bytes may end (and start) inside a multi-byte UTF-8 character; a ``str`` delta may not
        follow bytes that ended inside one.

        Raises:
            TextDecodeError: invalid UTF-8, or text while a byte sequence is incomplete. The state
                is unchanged when it is raised.
        """
        if isinstance(delta, bytes):
            text, partial = self._decode(delta)
        else:
            if self._partial:
                raise TextDecodeError(
                    f"a text delta arrived while {len(self._partial)} bytes of a UTF-8 character are pending"
                )
            text, partial = delta, b""
        ids, rest, forced = self._split(self._pending + text)
        self._pending, self._partial = rest, partial
        self._committed += len(ids)
        self._forced += forced
        return ids

    def finish(self) -> list[int]:
        """Flush: the ids of the held-back text. Leaves an empty state.

        Raises:
            TextDecodeError: the bytes fed so far end inside a UTF-8 character.
        """
        if self._partial:
            raise TextDecodeError(f"the text ends inside a UTF-8 character ({self._partial.hex()})")
        ids = list(self._rules.backend.encode(self._pending, add_special_tokens=False).ids) if self._pending else []
        self._pending = ""
        self._committed += len(ids)
        return ids

    def _decode(self, delta: bytes) -> tuple[str, bytes]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        decoder.setstate((self._partial, 0))
        try:
            text = decoder.decode(delta, final=False)
        except UnicodeDecodeError as exc:
            raise TextDecodeError(f"the byte delta is not valid UTF-8: {exc.reason}") from None
        partial, _ = decoder.getstate()
        return text, partial

    def _split(self, text: str) -> tuple[list[int], str, int]:
        """Ids of ``text`` before its last safe cut, the text after the cut, forced-cut count.

        A cut is safe when tokenising ``text[:cut]`` gives the same ids whatever text follows.
        """
        # A tail that may yet become an added token would end the text before it, and the last
        # normalisation unit may still compose: only the part before them is cut (their first
        # character starts a unit, so that part's safe cuts hold for any continuation).
        end = self._added_prefix_start(text)
        encoding = self._encode(text[:end])
        nfc_end = self._nfc_stable_end(text[:end], encoding)
        # A last unit longer than the overflow bound (combining marks without end) is not held
        # back whole: the overflow guard cuts inside it instead.
        if nfc_end < end and end - nfc_end <= self._max_pending:
            end = nfc_end
            encoding = self._encode(text[:end])
        ids, rest, forced = self._cut(text[:end], encoding)
        return ids, rest + text[end:], forced

    def _encode(self, text: str) -> Encoding | None:
        return self._rules.backend.encode(text, add_special_tokens=False) if text else None

    def _added_prefix_start(self, text: str) -> int:
        """Start of the longest tail of ``text`` that is a proper prefix of an added token, or its end."""
        for length in range(min(self._rules.longest_added - 1, len(text)), 0, -1):
            if text[-length:] in self._rules.added_prefixes:
                return len(text) - length
        return len(text)

    def _nfc_stable_end(self, text: str, encoding: Encoding | None) -> int:
        """Start of the last normalisation unit of ``text`` if it may still compose, else its end."""
        if encoding is None or not self._rules.nfc or _nfc_closed(text[-1]):
            return len(text)
        # Normalisation restarts after an added token (added tokens are matched before it).
        floor = max(
            (
                end
                for token, (_, end) in zip(encoding.ids, encoding.offsets, strict=True)
                if token in self._rules.added_ids
            ),
            default=0,
        )
        end = len(text) - 1
        while end > floor and not _nfc_starts_unit(text[end]):
            end -= 1
        return max(end, floor)

    def _cut(self, text: str, encoding: Encoding | None) -> tuple[list[int], str, int]:
        """Split ``text`` (whose normalisation and added tokens are final) at its last safe cut."""
        if encoding is None:
            return [], "", 0
        ids, offsets, words = encoding.ids, encoding.offsets, encoding.word_ids
        limit = min(self._lookahead_limit(text), len(text.rstrip()))
        # Candidate cuts are the starts of pre-tokenizer pieces ("words"), latest first, so the
        # last piece itself is never committed.
        for index in range(len(ids) - 1, 0, -1):
            if words[index] == words[index - 1] and words[index] is not None:
                continue
            cut = offsets[index][0]
            if cut > limit:
                continue
            if self._rules.nfc and not _nfc_starts_unit(text[cut]):
                continue
            return list(ids[:index]), text[cut:], 0
        if len(text) > self._max_pending:
            return self._force_cut(text, ids, offsets)
        return [], text, 0

    def _lookahead_limit(self, text: str) -> int:
        """Latest cut leaving ``_LOOKAHEAD_CHARS`` characters after it, counted after NFC."""
        index, seen = len(text), 0
        while index > 0 and seen < _LOOKAHEAD_CHARS:
            index -= 1
            # Each unit start yields at least one character after normalisation.
            seen += not self._rules.nfc or _nfc_starts_unit(text[index])
        return index if seen == _LOOKAHEAD_CHARS else 0

    def _force_cut(self, text: str, ids: list[int], offsets: list[tuple[int, int]]) -> tuple[list[int], str, int]:
        target = len(text) - self._max_pending // 2
        boundaries = [
            i for i in range(len(ids) - 1, 0, -1) if offsets[i][0] <= target and offsets[i - 1][1] <= offsets[i][0]
        ]
        # Prefer a cut before a normalisation starter; without one, any token boundary (else the
        # tail, and the work of every later delta, would grow without bound).
        index = next(
            (i for i in boundaries if _nfc_starts_unit(text[offsets[i][0]])), boundaries[0] if boundaries else 0
        )
        if not index:
            return [], text, 0
        cut = offsets[index][0]
        logger.warning(
            "held-back text reached %s characters without a safe cut; cutting at %s "
            "(ids around the cut may differ from whole-text tokenisation)",
            len(text),
            cut,
        )
        if not _nfc_starts_unit(text[cut]):
            # NFC may have reordered marks across the cut in the whole tail's ids: the part before
            # it is tokenised on its own, so that both parts together keep every character.
            return list(self._rules.backend.encode(text[:cut], add_special_tokens=False).ids), text[cut:], 1
        return list(ids[:index]), text[cut:], 1


def prepare(source: ChatFormat | PreTrainedTokenizerBase) -> None:
    """Build, now, what incremental tokenisation of ``source`` otherwise builds on first use.

    That is the tokenizer's rules (parsed from its whole ``tokenizer.json``: about 0.3 s of pure
    Python for Qwen3's 151k-token vocabulary) and the Unicode composition tables. A worker calls
    this at start-up, in a thread: built lazily, they stall the event loop under the first chunks,
    and a loaded worker needs seconds to drain the backlog that leaves.

    Raises:
        UnsupportedTokenizer: as ``IncrementalTokenizer`` would, but at start-up.
    """
    _rules_for(source.tokenizer if isinstance(source, ChatFormat) else source)
    _composition_pairs()


@functools.lru_cache(maxsize=8)  # a worker uses one or two tokenizers; building rules parses tokenizer.json
def _rules_for(tokenizer: PreTrainedTokenizerBase) -> _Rules:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer(f"{type(tokenizer).__name__} is not a fast tokenizer (no backend_tokenizer)")
    spec = json.loads(backend.to_str())
    normalizer = spec.get("normalizer")
    kinds = {str(part.get("type")) for part in _flatten(normalizer, "normalizers")}
    if not kinds <= _SUPPORTED_NORMALIZERS:
        raise UnsupportedTokenizer(f"normalizer {sorted(kinds)} is not supported (only NFC or none)")
    for part in _flatten(spec.get("pre_tokenizer"), "pretokenizers"):
        if not _supported_pre_tokenizer(part):
            raise UnsupportedTokenizer(
                f"pre-tokenizer {part!r} is not supported "
                "(only the Qwen2 split pattern, and byte-level without a prefix space)"
            )
    if spec.get("model", {}).get("type") != "BPE":
        raise UnsupportedTokenizer(f"model {spec.get('model', {}).get('type')!r} is not supported (only BPE)")
    contents, added_ids = [], set()
    for token in spec.get("added_tokens", []):
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word") or token.get("normalized"):
            raise UnsupportedTokenizer(f"added token {token.get('content')!r} strips, matches words or is normalized")
        contents.append(token["content"])
        added_ids.add(int(token["id"]))
    prefixes = frozenset(c[:n] for c in contents for n in range(1, len(c)))
    return _Rules(
        backend=backend,
        added_prefixes=prefixes,
        added_ids=frozenset(added_ids),
        longest_added=max((len(c) for c in contents), default=0),
        nfc="NFC" in kinds,
    )


def _flatten(component: Any, list_key: str) -> list[Any]:
    """The parts of a pipeline component, with ``Sequence`` wrappers flattened."""
    if component is None:
        return []
    if component.get("type") == "Sequence":
        return [part for child in component.get(list_key, []) for part in _flatten(child, list_key)]
    return [component]


def _supported_pre_tokenizer(part: Any) -> bool:
    if part.get("type") == "ByteLevel":
        return not part.get("add_prefix_space")
    return (
        part.get("type") == "Split"
        and part.get("pattern") == {"Regex": _QWEN2_SPLIT_PATTERN}
        and part.get("behavior") == "Isolated"
        and not part.get("invert")
    )


@functools.cache
def _composition_pairs() -> tuple[frozenset[str], frozenset[str]]:
    """Characters NFC may compose with a following one, and starters it composes with a preceding one."""
    first, second = set(), set()
    for cp in range(sys.maxunicode + 1):
        decomposition = unicodedata.decomposition(chr(cp))
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if len(parts) == 2:
                first.add(chr(int(parts[0], 16)))
                if unicodedata.combining(chr(int(parts[1], 16))) == 0:
                    second.add(chr(int(parts[1], 16)))
    # Hangul composes algorithmically (not in the decomposition table): a leading consonant takes a
    # vowel, an LV syllable takes a trailing consonant.
    first.update(chr(cp) for cp in range(0x1100, 0x1113))
    first.update(chr(cp) for cp in range(0xAC00, 0xD7A4, 28))
    second.update(chr(cp) for cp in range(0x1161, 0x1176))
    second.update(chr(cp) for cp in range(0x11A8, 0x11C3))
    return frozenset(first), frozenset(second)


def _nfc_starts_unit(char: str) -> bool:
    """True when NFC never joins ``char`` with what precedes it, so text may be cut before it.

    ``char`` must be a starter (combining class 0) whose decomposition also starts with a
    starter (not U+0F73-style), must not compose backwards, and must be assigned in this Python's
    Unicode database (a newer tokenizer library may know compositions for characters it lacks).
    """
    if char < "\u0300":
        return True
    if unicodedata.combining(char) or unicodedata.category(char) == "Cn":
        return False
    if unicodedata.combining(unicodedata.normalize("NFD", char)[0]):
        return False
    return char not in _composition_pairs()[1]


def _nfc_closed(char: str) -> bool:
    """True when NFC never joins ``char`` with what follows it (so it ends a unit for good)."""
    return _nfc_starts_unit(char) and char not in _composition_pairs()[0]
