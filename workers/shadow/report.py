"""The live-versus-shadow report: a pure function of the two guards' verdicts.

Verdicts are joined per ``(conversation, message, stage, seq)`` (a verdict re-published after a
redelivery has the same key: the first copy counts). Definitions:

- **coverage**: the share of live verdicts that have a shadow verdict. Below 1 the shadow dropped
  or skipped events (``guard_shadow_events_total``), lost them to a crash or rebalance, or had not
  caught up when the reading stopped;
- **agreement** (risk, action, with confusion matrices ``live -> shadow -> count``): over the
  joined pairs that both guards actually judged (status ``moderated`` on both sides). A chunk one
  guard answered ``after_cutoff`` is not a judgement; where each guard cut is in ``cuts``;
- **cuts**: for every message either guard would cut off, the first cut of each (the prompt, or
  the chunk and the token where the debounce fired: ``flagged_token``, else the chunk's first
  token) and whether only the live guard, only the shadow or both cut it; for both, how many
  tokens (and chunks) later the shadow cut (negative: earlier; None when one cut the prompt and
  the other the answer);
- **latency**: p50/p99 of each side's ``latency_ms`` (record receipt by the worker to the
  verdict; the shadow's includes its queueing), and of the shadow's extra latency per joined pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from topics.events import Action, Risk, Stage, VerdictEvent, VerdictStatus

JoinKey = tuple[str, str, str, int | None]
"""(conversation_id, message_id, stage, seq)."""

CUT_BOTH, CUT_LIVE_ONLY, CUT_SHADOW_ONLY = "both", "live_only", "shadow_only"


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds; None without samples."""

    count: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class SideSummary:
    """One guard's verdicts as read."""

    verdicts: int
    """Distinct verdicts (by join key)."""
    duplicates: int
    """Copies of a verdict already counted (redeliveries)."""
    models: tuple[str, ...]
    policies: tuple[str, ...]
    messages: int
    messages_cut: int
    latency: Latency


@dataclass(frozen=True, slots=True)
class CutPosition:
    stage: Stage
    seq: int | None
    token: int | None
    """The response-token index of the cut (None for a prompt)."""


@dataclass(frozen=True, slots=True)
class MessageCut:
    """A message at least one guard would cut off."""

    conversation_id: str
    message_id: str
    where: str
    """``both``, ``live_only`` or ``shadow_only``."""
    live: CutPosition | None
    shadow: CutPosition | None
    token_delta: int | None
    """Shadow cut token minus live cut token, when both cut the answer."""
    seq_delta: int | None


@dataclass(frozen=True, slots=True)
class CutSummary:
    both: int
    live_only: int
    shadow_only: int
    same_position: int
    """Of ``both``: cut at the same stage, chunk and token."""
    token_delta_mean: float | None
    """Mean of ``token_delta`` over the messages both cut in the answer."""


@dataclass(frozen=True, slots=True)
class ShadowReport:
    live: SideSummary
    shadow: SideSummary
    joined: int
    """Keys with a verdict of each guard."""
    live_unmatched: int
    """Live verdicts without a shadow verdict."""
    shadow_unmatched: int
    """Shadow verdicts without a live verdict (the live one fell outside what was read)."""
    coverage: float | None
    compared: int
    """Joined pairs both guards judged (status ``moderated``): the base of the agreement."""
    risk_agreement: float | None
    action_agreement: float | None
    risk_confusion: dict[str, dict[str, int]]
    action_confusion: dict[str, dict[str, int]]
    cut_summary: CutSummary
    cuts: tuple[MessageCut, ...]
    extra_latency: Latency
    """Shadow minus live ``latency_ms`` per joined pair."""


def join_key(v: VerdictEvent) -> JoinKey:
    return (v.conversation_id, v.message_id, v.stage.value, v.seq)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_of(values: Sequence[float]) -> Latency:
    return Latency(count=len(values), p50_ms=percentile(values, 50), p99_ms=percentile(values, 99))


def build_report(live: Iterable[VerdictEvent], shadow: Iterable[VerdictEvent]) -> ShadowReport:
    """Compare the live guard's verdicts with the shadow's (see the module docstring)."""
    live_by, live_dups = _distinct(live)
    shadow_by, shadow_dups = _distinct(shadow)
    joined = [(live_by[k], shadow_by[k]) for k in live_by if k in shadow_by]
    judged = [(a, b) for a, b in joined if a.status is b.status is VerdictStatus.MODERATED]
    cuts = _cuts(live_by.values(), shadow_by.values())
    return ShadowReport(
        live=_side(live_by.values(), live_dups, cuts, "live"),
        shadow=_side(shadow_by.values(), shadow_dups, cuts, "shadow"),
        joined=len(joined),
        live_unmatched=len(live_by) - len(joined),
        shadow_unmatched=len(shadow_by) - len(joined),
        coverage=len(joined) / len(live_by) if live_by else None,
        compared=len(judged),
        risk_agreement=_share(sum(a.risk is b.risk for a, b in judged), len(judged)),
        action_agreement=_share(sum(a.action is b.action for a, b in judged), len(judged)),
        risk_confusion=_confusion([(a.risk.value, b.risk.value) for a, b in judged], [r.value for r in Risk]),
        action_confusion=_confusion([(a.action.value, b.action.value) for a, b in judged], [x.value for x in Action]),
        cut_summary=_cut_summary(cuts),
        cuts=tuple(cuts),
        extra_latency=latency_of([b.latency_ms - a.latency_ms for a, b in joined]),
    )


def _distinct(verdicts: Iterable[VerdictEvent]) -> tuple[dict[JoinKey, VerdictEvent], int]:
    out: dict[JoinKey, VerdictEvent] = {}
    duplicates = 0
    for v in verdicts:
        key = join_key(v)
        if key in out:
            duplicates += 1
        else:
            out[key] = v
    return out, duplicates


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _confusion(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    matrix = {a: dict.fromkeys(labels, 0) for a in labels}
    for a, b in pairs:
        matrix[a][b] += 1
    return matrix


def _first_cuts(verdicts: Iterable[VerdictEvent]) -> dict[tuple[str, str], CutPosition]:
    """Per message, where its first cut-off verdict is (the prompt first, then by seq)."""
    out: dict[tuple[str, str], tuple[tuple[int, int], CutPosition]] = {}
    for v in verdicts:
        if v.action is not Action.CUTOFF or v.status is VerdictStatus.AFTER_CUTOFF:
            continue
        order = (0, 0) if v.stage is Stage.PROMPT else (1, v.seq if v.seq is not None else 0)
        token = None if v.stage is Stage.PROMPT else (v.flagged_token if v.flagged_token is not None else v.token_start)
        turn = (v.conversation_id, v.message_id)
        if turn not in out or order < out[turn][0]:
            out[turn] = (order, CutPosition(stage=v.stage, seq=v.seq, token=token))
    return {turn: position for turn, (_, position) in out.items()}


def _cuts(live: Iterable[VerdictEvent], shadow: Iterable[VerdictEvent]) -> list[MessageCut]:
    live_cuts, shadow_cuts = _first_cuts(live), _first_cuts(shadow)
    cuts = []
    for turn in sorted(live_cuts.keys() | shadow_cuts.keys()):
        a, b = live_cuts.get(turn), shadow_cuts.get(turn)
        where = CUT_BOTH if a and b else CUT_LIVE_ONLY if a else CUT_SHADOW_ONLY
        token_delta = seq_delta = None
        if a and b and a.stage is b.stage is Stage.RESPONSE:
            if a.token is not None and b.token is not None:
                token_delta = b.token - a.token
            if a.seq is not None and b.seq is not None:
                seq_delta = b.seq - a.seq
        cuts.append(MessageCut(turn[0], turn[1], where, a, b, token_delta, seq_delta))
    return cuts


def _cut_summary(cuts: Sequence[MessageCut]) -> CutSummary:
    both = [c for c in cuts if c.where == CUT_BOTH]
    deltas = [c.token_delta for c in both if c.token_delta is not None]
    return CutSummary(
        both=len(both),
        live_only=sum(c.where == CUT_LIVE_ONLY for c in cuts),
        shadow_only=sum(c.where == CUT_SHADOW_ONLY for c in cuts),
        same_position=sum(c.live == c.shadow for c in both),
        token_delta_mean=sum(deltas) / len(deltas) if deltas else None,
    )


def _side(verdicts: Iterable[VerdictEvent], duplicates: int, cuts: Sequence[MessageCut], side: str) -> SideSummary:
    items = list(verdicts)
    cut_where = (CUT_BOTH, CUT_LIVE_ONLY) if side == "live" else (CUT_BOTH, CUT_SHADOW_ONLY)
    return SideSummary(
        verdicts=len(items),
        duplicates=duplicates,
        models=tuple(sorted({v.model_id for v in items})),
        policies=tuple(sorted({v.policy for v in items})),
        messages=len({(v.conversation_id, v.message_id) for v in items}),
        messages_cut=sum(c.where in cut_where for c in cuts),
        latency=latency_of([v.latency_ms for v in items]),
    )
