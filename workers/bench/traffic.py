"""Demo-like traffic for benchmarks of the shipped guard: real text, word-sized chunks, mixed prompts.

Built from the demo's scripted conversations (``workers.demo.conversations``), so the guard sees
the kind of text it sees in the demo: benign answers, benign look-alikes, and answers that turn
unsafe part-way. Each ``Turn`` is drawn from a seeded generator:

- the prompt is one of the scripts' prompts, preceded in a share of turns by "context" (benign
  sentences the user pastes in) so prompt lengths spread log-uniformly from a few words to
  ``max_prompt_words``: long prompts are a prefill the stream guard must pay for;
- the answer is 3-12 benign sentences in a random order; in ``unsafe_share`` of the turns the
  unsafe part of a turns-unsafe script follows them, so the guard has a reason to cut mid-stream.

The answer is streamed word by word (each word with its trailing space is one chunk), as an LLM
gateway forwarding tokens as they are generated would publish them.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from workers.demo.conversations import SCRIPTS, Kind

_SENTENCE = re.compile(r"[^.!?]+[.!?]+\s*")


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn and the answer streamed back, already split into chunks."""

    prompt: str
    chunks: tuple[str, ...]
    turns_unsafe: bool


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def words(text: str) -> tuple[str, ...]:
    """``text`` as word-sized chunks, each word with the whitespace after it."""
    return tuple(re.findall(r"\S+\s*", text))


class TrafficSource:
    """Endless seeded stream of ``Turn``s (see the module docstring)."""

    def __init__(self, seed: int, *, unsafe_share: float = 0.2, max_prompt_words: int = 300) -> None:
        if not 0.0 <= unsafe_share <= 1.0:
            raise ValueError(f"unsafe_share must be within 0..1, got {unsafe_share}")
        self._rng = random.Random(seed)
        self._unsafe_share = unsafe_share
        self._max_prompt_words = max_prompt_words
        benign = [s for s in SCRIPTS if s.kind in (Kind.BENIGN, Kind.LOOKALIKE)]
        self._benign_sentences = [sentence for s in benign for sentence in _sentences(s.answer)]
        self._prompts = [s.prompt for s in SCRIPTS if s.kind is not Kind.UNSAFE_PROMPT]
        # The unsafe part of each turns-unsafe answer: from its first sentence that a good guard
        # cuts (the scripts put the turn after one or two benign sentences).
        self._unsafe_tails = [" ".join(_sentences(s.answer)[1:]) for s in SCRIPTS if s.kind is Kind.TURNS_UNSAFE]

    def _context(self, words_wanted: int) -> str:
        out: list[str] = []
        count = 0
        while count < words_wanted:
            sentence = self._rng.choice(self._benign_sentences)
            out.append(sentence)
            count += len(sentence.split())
        return " ".join(out)

    def _prompt(self) -> str:
        question = self._rng.choice(self._prompts)
        # Log-uniform total length between the bare question and max_prompt_words.
        low = len(question.split())
        total = round(math.exp(self._rng.uniform(math.log(low), math.log(max(low, self._max_prompt_words)))))
        if total - low < 8:
            return question
        return f"Here is some context:\n\n{self._context(total - low)}\n\n{question}"

    def mean_chunks(self, sample: int = 500) -> float:
        """Mean chunks per answer, from a separately seeded sample (this source's draws unchanged)."""
        probe = TrafficSource(0, unsafe_share=self._unsafe_share, max_prompt_words=self._max_prompt_words)
        return sum(len(next(probe).chunks) for _ in range(sample)) / sample

    def __iter__(self) -> Iterator[Turn]:
        return self

    def __next__(self) -> Turn:
        prompt = self._prompt()
        sentences = self._rng.sample(
            self._benign_sentences, k=min(len(self._benign_sentences), self._rng.randint(3, 12))
        )
        unsafe = self._rng.random() < self._unsafe_share
        if unsafe:
            sentences.append(self._rng.choice(self._unsafe_tails))
        return Turn(prompt=prompt, chunks=words(" ".join(sentences)), turns_unsafe=unsafe)
