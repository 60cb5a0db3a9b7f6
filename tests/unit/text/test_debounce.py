"""Debounce and policy: the streaming debounce agrees with the reference one under any chunking."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topics.events import Action, Risk
from workers.backends.base import RISK_ORDER
from workers.engine.debounce import (
    ChunkDecision,
    DebounceCarry,
    DebounceOrderError,
    Policy,
    Trigger,
    decide_chunk,
    decide_prompt,
    labels_of,
    official_consecutive_unsafe,
)

S, C, U = Risk.SAFE, Risk.CONTROVERSIAL, Risk.UNSAFE


def probs_for(labels: Sequence[Risk], confidence: float = 0.8) -> np.ndarray:
    """Probabilities whose argmax is each label; the other two classes share the rest unevenly."""
    table = np.zeros((len(labels), 3), dtype=np.float32)
    for row, label in enumerate(labels):
        col = RISK_ORDER.index(label)
        table[row] = (1.0 - confidence) / 3
        table[row, (col + 1) % 3] = (1.0 - confidence) * 2 / 3
        table[row, col] = confidence
    return table


def run_stream(
    labels: Sequence[Risk], cuts: Sequence[int], policy: Policy, categories: Sequence[int] | None = None
) -> tuple[DebounceCarry, list[ChunkDecision]]:
    """Feed ``labels`` in chunks ending at ``cuts``, passing the carry through JSON between chunks."""
    cats = list(categories) if categories is not None else [i % 7 for i in range(len(labels))]
    probs = probs_for(labels)
    carry, decisions = DebounceCarry(), []
    bounds = [0, *sorted(set(cuts)), len(labels)]
    for lo, hi in itertools.pairwise(bounds):
        carry = DebounceCarry.from_dict(json.loads(json.dumps(carry.to_dict())))
        carry, decision = decide_chunk(carry, probs[lo:hi], cats[lo:hi], start=lo, policy=policy)
        decisions.append(decision)
    return carry, decisions


risks = st.sampled_from([S, C, U])
label_lists = st.lists(risks, max_size=60)


@st.composite
def labels_and_cuts(draw: st.DrawFn) -> tuple[list[Risk], list[int]]:
    labels = draw(label_lists)
    cuts = draw(st.lists(st.integers(0, len(labels)), max_size=10))
    return labels, cuts


class TestOfficial:
    @pytest.mark.parametrize(
        ("labels", "expected"),
        [
            ([], (S, -1)),
            ([U], (S, -1)),
            ([U, U], (U, 1)),
            ([S, C, C, U, U], (U, 4)),  # an unsafe pair anywhere wins over an earlier controversial one
            ([C, C, S], (C, 1)),
            ([U, C, U, C], (S, -1)),  # mixed pairs never fire
            ([S, U, S, U, U, U], (U, 4)),
        ],
    )
    def test_reference_semantics(self, labels: list[Risk], expected: tuple[Risk, int]) -> None:
        assert official_consecutive_unsafe(labels) == expected


class TestStreamingDebounce:
    @settings(max_examples=300, deadline=None)
    @given(labels_and_cuts(), st.sampled_from(list(Policy)))
    def test_first_triggers_match_the_reference(self, case: tuple[list[Risk], list[int]], policy: Policy) -> None:
        labels, cuts = case
        carry, _ = run_stream(labels, cuts, policy)
        risk, index = official_consecutive_unsafe(labels)
        if risk is U:
            assert carry.unsafe is not None and carry.unsafe.index == index
        elif risk is C:
            assert carry.unsafe is None
            assert carry.controversial is not None and carry.controversial.index == index
        else:
            assert carry.unsafe is None and carry.controversial is None
        assert carry.risk is risk

    @settings(max_examples=300, deadline=None)
    @given(labels_and_cuts(), st.lists(st.integers(0, 60), max_size=10), st.sampled_from(list(Policy)))
    def test_chunking_never_changes_the_result(
        self, case: tuple[list[Risk], list[int]], other_cuts: list[int], policy: Policy
    ) -> None:
        labels, cuts = case
        carry_a, decisions_a = run_stream(labels, cuts, policy)
        carry_b, decisions_b = run_stream(labels, [c for c in other_cuts if c <= len(labels)], policy)
        assert carry_a == carry_b
        for decisions in (decisions_a, decisions_b):
            # Where the cut-off happens does not depend on chunking either.
            cut = [d.trigger_index for d in decisions if d.action is Action.CUTOFF]
            expected = carry_a.cut_trigger(policy)
            assert cut == ([] if expected is None else [expected.index])

    @settings(max_examples=200, deadline=None)
    @given(labels_and_cuts(), st.sampled_from(list(Policy)))
    def test_decisions_are_sticky_and_cut_once(self, case: tuple[list[Risk], list[int]], policy: Policy) -> None:
        labels, cuts = case
        _, decisions = run_stream(labels, cuts, policy)
        severity = [S, C, U]
        seen = S
        cut_seen = False
        for decision in decisions:
            assert severity.index(decision.risk) >= severity.index(seen)
            seen = decision.risk
            if decision.action is Action.CUTOFF:
                assert not cut_seen
                cut_seen = True
            elif cut_seen or decision.risk is not S:
                assert decision.action is Action.FLAG
            else:
                assert decision.action is Action.ALLOW

    def test_carry_round_trips_through_json(self) -> None:
        carry = DebounceCarry(
            last=C, next_index=17, unsafe=Trigger(index=9, category=3), controversial=Trigger(index=4, category=0)
        )
        assert DebounceCarry.from_dict(json.loads(json.dumps(carry.to_dict()))) == carry
        assert DebounceCarry.from_dict(DebounceCarry().to_dict()) == DebounceCarry()

    def test_malformed_carry_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="malformed debounce carry"):
            DebounceCarry.from_dict({"last": "safe", "next": 0, "unsafe": [1]})
        with pytest.raises(ValueError):
            DebounceCarry.from_dict({"last": "dangerous", "next": 0, "unsafe": None, "controversial": None})

    def test_trigger_spans_a_chunk_boundary(self) -> None:
        probs = probs_for([S, U, U])
        carry, first = decide_chunk(DebounceCarry(), probs[:2], [0, 5], start=0, policy=Policy.LOOSE)
        assert first.action is Action.ALLOW and first.trigger is None
        carry, second = decide_chunk(carry, probs[2:], [6], start=2, policy=Policy.LOOSE)
        assert second.action is Action.CUTOFF
        assert second.trigger == Trigger(index=2, category=6)
        assert second.category == 6  # the trigger token's category, not the first unsafe token's
        np.testing.assert_array_equal(second.probs, probs[2])

    def test_out_of_order_chunk_is_refused(self) -> None:
        carry, _ = decide_chunk(DebounceCarry(), probs_for([S, S]), [0, 0], start=0, policy=Policy.STRICT)
        with pytest.raises(DebounceOrderError, match="expected 2"):
            decide_chunk(carry, probs_for([S]), [0], start=3, policy=Policy.STRICT)

    def test_rows_and_categories_must_agree(self) -> None:
        with pytest.raises(ValueError, match="categories"):
            decide_chunk(DebounceCarry(), probs_for([S, S]), [0], start=0, policy=Policy.STRICT)

    def test_empty_chunk_keeps_the_verdict(self) -> None:
        carry, _ = decide_chunk(DebounceCarry(), probs_for([C, C]), [2, 2], start=0, policy=Policy.LOOSE)
        after, decision = decide_chunk(carry, np.zeros((0, 3), np.float32), [], start=2, policy=Policy.LOOSE)
        assert after == carry
        assert (decision.risk, decision.action, decision.category, decision.probs) == (C, Action.FLAG, 2, None)

    def test_reported_probs_are_the_riskiest_token_without_a_trigger(self) -> None:
        probs = np.array([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.45, 0.05, 0.5]], dtype=np.float32)
        _, decision = decide_chunk(DebounceCarry(), probs, [0, 1, 2], start=0, policy=Policy.STRICT)
        assert decision.trigger is None
        np.testing.assert_array_equal(decision.probs, probs[1])  # 1 - P(safe) is largest there

    def test_labels_are_the_argmax_in_risk_order(self) -> None:
        assert labels_of(np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])) == [C, U, S]


class TestPolicies:
    @pytest.mark.parametrize(
        ("label", "policy", "action"),
        [
            (S, Policy.STRICT, Action.ALLOW),
            (S, Policy.LOOSE, Action.ALLOW),
            (C, Policy.STRICT, Action.CUTOFF),
            (C, Policy.LOOSE, Action.FLAG),
            (U, Policy.STRICT, Action.CUTOFF),
            (U, Policy.LOOSE, Action.CUTOFF),
        ],
    )
    def test_prompt(self, label: Risk, policy: Policy, action: Action) -> None:
        decision = decide_prompt(probs_for([label])[0], policy)
        assert (decision.risk, decision.action) == (label, action)

    @pytest.mark.parametrize(
        ("labels", "policy", "risk", "actions", "trigger"),
        [
            # one chunk per label; the trigger index is where the pair completes
            ([S, S, S], Policy.STRICT, S, "AAA", None),
            ([S, C, C, S], Policy.STRICT, C, "AACF", 2),
            ([S, C, C, S], Policy.LOOSE, C, "AAFF", 2),
            ([U, U, S], Policy.LOOSE, U, "ACF", 1),
            ([U, C, U, C], Policy.STRICT, S, "AAAA", None),  # mixed pairs never fire, even when strict
            ([C, C, U, U], Policy.STRICT, U, "ACFF", 1),  # strict cuts at the first pair of either kind
            ([C, C, U, U], Policy.LOOSE, U, "AFFC", 3),  # loose only at the unsafe pair
        ],
    )
    def test_response(self, labels: list[Risk], policy: Policy, risk: Risk, actions: str, trigger: int | None) -> None:
        _, decisions = run_stream(labels, list(range(1, len(labels))), policy)
        codes = {Action.ALLOW: "A", Action.FLAG: "F", Action.CUTOFF: "C"}
        assert "".join(codes[d.action] for d in decisions) == actions
        assert decisions[-1].risk is risk
        cut = [d.trigger_index for d in decisions if d.action is Action.CUTOFF]
        assert cut == ([] if "C" not in actions else [trigger])
        fired = [d.trigger_index for d in decisions if d.trigger is not None]
        if trigger is not None:
            assert trigger in fired

    def test_loose_controversial_flags_with_its_trigger(self) -> None:
        _, decision = decide_chunk(DebounceCarry(), probs_for([C, C]), [4, 1], start=0, policy=Policy.LOOSE)
        assert decision.action is Action.FLAG
        assert decision.trigger == Trigger(index=1, category=1)
        assert (decision.risk, decision.category) == (C, 1)
