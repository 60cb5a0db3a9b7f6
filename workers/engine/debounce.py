"""Debounce of per-token risk labels and the strict / loose policies.

Qwen3Guard-Stream labels every response token. The reference evaluation does not act on single
tokens: it flags a response at token ``i`` when tokens ``i-1`` and ``i`` are both Unsafe, else at
the first pair of Controversial tokens (``official_consecutive_unsafe``). A streaming worker sees
the labels chunk by chunk, so ``decide_chunk`` carries the last label and the triggers fired so
far across chunks (``DebounceCarry``, JSON-safe, kept in Redis between chunks); chunking never
changes where a trigger fires.

Triggers: an *unsafe trigger* fires at response-token index ``i`` when tokens ``i-1`` and ``i`` are
both Unsafe, a *controversial trigger* when both are Controversial; mixed pairs never fire. The
trigger's category is token ``i``'s. Only the first trigger of each kind is recorded.

Policies: ``strict`` counts Controversial as Unsafe, so the first trigger of either kind cuts the
answer off; ``loose`` counts Controversial as Safe, so only an unsafe trigger cuts off and a
controversial trigger flags the message. Labels are the argmax of the risk probabilities, which
are in ``RISK_ORDER`` (safe, controversial, unsafe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from topics.events import Action, Risk
from workers.backends.base import RISK_ORDER

_SAFE, _CONTROVERSIAL, _UNSAFE = (RISK_ORDER.index(r) for r in (Risk.SAFE, Risk.CONTROVERSIAL, Risk.UNSAFE))


class Policy(StrEnum):
    """How Controversial counts: as Unsafe (``strict``) or as Safe (``loose``)."""

    STRICT = "strict"
    LOOSE = "loose"


class DebounceOrderError(ValueError):
    """A chunk does not start where the previous one ended."""


def official_consecutive_unsafe(labels: Sequence[Risk]) -> tuple[Risk, int]:
    """The reference debounce (``SafetyEvaluator.consecutive_unsafe`` of Qwen3Guard's eval).

    Returns ``(UNSAFE, i + 1)`` for the first pair ``i, i+1`` of Unsafe labels anywhere; else
    ``(CONTROVERSIAL, i + 1)`` for the first Controversial pair; else ``(SAFE, -1)``.
    """
    for risk in (Risk.UNSAFE, Risk.CONTROVERSIAL):
        for i in range(len(labels) - 1):
            if labels[i] == risk and labels[i + 1] == risk:
                return risk, i + 1
    return Risk.SAFE, -1


@dataclass(frozen=True, slots=True)
class Trigger:
    """Where a debounce trigger fired: response-token index and that token's category index."""

    index: int
    category: int


@dataclass(frozen=True, slots=True)
class DebounceCarry:
    """What the debounce remembers between chunks of one answer.

    Attributes:
        last: label of the last token seen (None before the first response token).
        next_index: response-token index the next chunk must start at.
        unsafe: the first unsafe trigger, if one fired.
        controversial: the first controversial trigger, if one fired.
    """

    last: Risk | None = None
    next_index: int = 0
    unsafe: Trigger | None = None
    controversial: Trigger | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; triggers are ``[index, category]`` pairs."""
        return {
            "last": None if self.last is None else self.last.value,
            "next": self.next_index,
            "unsafe": _trigger_out(self.unsafe),
            "controversial": _trigger_out(self.controversial),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DebounceCarry:
        """Inverse of ``to_dict``.

        Raises:
            ValueError: a field is missing or malformed.
        """
        try:
            last = data["last"]
            return cls(
                last=None if last is None else Risk(last),
                next_index=int(data["next"]),
                unsafe=_trigger_in(data["unsafe"]),
                controversial=_trigger_in(data["controversial"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed debounce carry {dict(data)!r}: {exc!r}") from None

    @property
    def risk(self) -> Risk:
        """The answer's debounced risk so far: the most severe kind of trigger that fired."""
        if self.unsafe is not None:
            return Risk.UNSAFE
        return Risk.SAFE if self.controversial is None else Risk.CONTROVERSIAL

    def cut_trigger(self, policy: Policy) -> Trigger | None:
        """The trigger that cuts the answer off under ``policy``, if any fired."""
        if policy is Policy.LOOSE or self.controversial is None:
            return self.unsafe
        if self.unsafe is None:
            return self.controversial
        return min(self.unsafe, self.controversial, key=lambda t: t.index)


def _trigger_out(trigger: Trigger | None) -> list[int] | None:
    return None if trigger is None else [trigger.index, trigger.category]


def _trigger_in(raw: Any) -> Trigger | None:
    if raw is None:
        return None
    index, category = raw
    return Trigger(index=int(index), category=int(category))


@dataclass(frozen=True, slots=True)
class ChunkDecision:
    """The verdict on one chunk of an answer.

    Attributes:
        risk: the answer's debounced risk after this chunk (sticky once a trigger fired).
        category: category index naming ``risk`` (of the trigger that set it), None when safe.
        action: ``cutoff`` only on the chunk holding the trigger that cuts the answer under the
            policy; ``flag`` when the answer is flagged (controversial under ``loose``, or any
            chunk after the cut); else ``allow``.
        trigger: the trigger that fired in this chunk and decided the action (the cutting one, else
            the most severe new one), if any.
        probs: risk probabilities (``RISK_ORDER``) to report: at the trigger token, else at the
            chunk's riskiest token (largest ``1 - P(safe)``); None for an empty chunk.
    """

    risk: Risk
    category: int | None
    action: Action
    trigger: Trigger | None
    probs: npt.NDArray[np.float32] | None

    @property
    def trigger_index(self) -> int | None:
        """Response-token index of ``trigger``, if one fired in this chunk."""
        return None if self.trigger is None else self.trigger.index


@dataclass(frozen=True, slots=True)
class PromptDecision:
    """The verdict on a prompt: the argmax label of the query head and the policy's action."""

    risk: Risk
    action: Action


def labels_of(probs: npt.NDArray[np.floating[Any]]) -> list[Risk]:
    """Argmax labels of ``[k, 3]`` probabilities in ``RISK_ORDER``."""
    return [RISK_ORDER[i] for i in np.asarray(probs).reshape(-1, 3).argmax(axis=1)]


def decide_prompt(probs: npt.NDArray[np.floating[Any]], policy: Policy) -> PromptDecision:
    """Decide on a prompt from the query-head probabilities at its end-of-turn token.

    ``strict``: controversial or unsafe cut off. ``loose``: unsafe cuts off, controversial flags.
    """
    risk = labels_of(probs)[0]
    if risk is Risk.UNSAFE or (risk is Risk.CONTROVERSIAL and policy is Policy.STRICT):
        action = Action.CUTOFF
    else:
        action = Action.FLAG if risk is Risk.CONTROVERSIAL else Action.ALLOW
    return PromptDecision(risk=risk, action=action)


def decide_chunk(
    carry: DebounceCarry,
    probs: npt.NDArray[np.floating[Any]],
    categories: Sequence[int] | npt.NDArray[np.integer[Any]],
    *,
    start: int,
    policy: Policy,
) -> tuple[DebounceCarry, ChunkDecision]:
    """Run the debounce over one chunk and decide on it.

    Args:
        carry: the state after the previous chunk (``DebounceCarry()`` for the first).
        probs: ``[k, 3]`` risk probabilities of the chunk's tokens, in ``RISK_ORDER``.
        categories: ``[k]`` category indices of the chunk's tokens.
        start: response-token index of the chunk's first token.
        policy: strict or loose.

    Returns:
        The carry after this chunk and the chunk's decision.

    Raises:
        DebounceOrderError: ``start`` is not where the previous chunk ended.
        ValueError: ``probs`` and ``categories`` do not describe the same ``k`` tokens.
    """
    table = np.asarray(probs, dtype=np.float32).reshape(-1, 3)
    cats = np.asarray(categories, dtype=np.int64).reshape(-1)
    if start != carry.next_index:
        raise DebounceOrderError(f"chunk starts at response token {start}, expected {carry.next_index}")
    if len(cats) != len(table):
        raise ValueError(f"{len(table)} probability rows but {len(cats)} categories")
    new = _advance(carry, table, cats, start)
    return new, _decision(carry, new, table, start, policy)


def _advance(
    carry: DebounceCarry, table: npt.NDArray[np.float32], cats: npt.NDArray[np.int64], start: int
) -> DebounceCarry:
    if len(table) == 0:
        return carry
    codes = table.argmax(axis=1)
    previous = np.empty_like(codes)
    previous[0] = -1 if carry.last is None else RISK_ORDER.index(carry.last)
    previous[1:] = codes[:-1]
    found: dict[int, Trigger | None] = {}
    for code, current in ((_UNSAFE, carry.unsafe), (_CONTROVERSIAL, carry.controversial)):
        hits = np.flatnonzero((codes == code) & (previous == code))
        if current is None and len(hits):
            offset = int(hits[0])
            found[code] = Trigger(index=start + offset, category=int(cats[offset]))
        else:
            found[code] = current
    return DebounceCarry(
        last=RISK_ORDER[int(codes[-1])],
        next_index=start + len(table),
        unsafe=found[_UNSAFE],
        controversial=found[_CONTROVERSIAL],
    )


def _decision(
    before: DebounceCarry, after: DebounceCarry, table: npt.NDArray[np.float32], start: int, policy: Policy
) -> ChunkDecision:
    cut = after.cut_trigger(policy)
    in_chunk = cut is not None and cut.index >= start
    if in_chunk:
        action, trigger = Action.CUTOFF, cut
    else:
        action = Action.ALLOW if after.risk is Risk.SAFE else Action.FLAG
        new = [t for t, old in ((after.unsafe, before.unsafe), (after.controversial, before.controversial)) if t != old]
        trigger = new[0] if new else None
    defining = after.unsafe if after.unsafe is not None else after.controversial
    if trigger is not None:
        probs: npt.NDArray[np.float32] | None = table[trigger.index - start].copy()
    elif len(table):
        probs = table[int(np.argmax(1.0 - table[:, _SAFE]))].copy()
    else:
        probs = None
    return ChunkDecision(
        risk=after.risk,
        category=None if defining is None else defining.category,
        action=action,
        trigger=trigger,
        probs=probs,
    )
