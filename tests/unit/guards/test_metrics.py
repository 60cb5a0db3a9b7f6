"""Metrics, policy mapping, cut-off delay summary and the threshold rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topics.events import Risk
from workers.backends.prefilter_meta import Thresholds, is_decided
from workers.guards.metrics import (
    Confusion,
    confusion,
    cutoff_delays,
    grouped,
    is_flagged,
    predicted_risk,
)
from workers.guards.thresholds import select_thresholds, smallest_threshold


def test_confusion_rates() -> None:
    c = confusion([True, True, False, False, True], [True, False, True, False, True])
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 1)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(2 / 3)
    assert c.fpr == pytest.approx(1 / 2)


def test_unsafe_only_set_has_paper_style_f1_and_no_fpr() -> None:
    c = confusion([True] * 10, [True] * 8 + [False] * 2)
    assert c.fpr is None
    assert c.f1 == pytest.approx(2 * 0.8 / 1.8)
    assert Confusion().f1 is None


def test_policies_map_controversial() -> None:
    assert is_flagged(Risk.CONTROVERSIAL, "strict") and not is_flagged(Risk.CONTROVERSIAL, "loose")
    assert is_flagged(Risk.UNSAFE, "loose") and not is_flagged(Risk.SAFE, "strict")
    assert predicted_risk(np.array([0.2, 0.5, 0.3], dtype=np.float32)) is Risk.CONTROVERSIAL


def test_grouped_sums_to_the_whole() -> None:
    keys, gold, pred = ["en", "zh", "en", "ru"], [True, False, False, True], [True, True, False, False]
    groups = grouped(keys, gold, pred)
    assert list(groups) == ["en", "ru", "zh"]
    assert sum(groups.values(), Confusion()) == confusion(gold, pred)


def test_cutoff_delays_bins() -> None:
    summary = cutoff_delays([10, 10, 10, 10, 10], [10, 15, 60, 5, None])
    assert (summary.n, summary.ahead, summary.missed) == (5, 1, 1)
    assert summary.bins == {"0": 1, "1-32": 1, "33-64": 1, "65-128": 0, "129-256": 0, ">256": 0}
    assert summary.median == 5.0


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=60),
    flags=st.lists(st.booleans(), min_size=60, max_size=60),
    max_rate=st.sampled_from([0.0, 0.01, 0.1, 0.3]),
)
def test_smallest_threshold_meets_the_cap_and_is_minimal(
    scores: list[float], flags: list[bool], max_rate: float
) -> None:
    values = np.array(scores, dtype=np.float32)
    wrong = np.array(flags[: len(scores)])
    t = smallest_threshold(values, wrong, max_rate)
    assert t >= 0.5
    negatives = int(wrong.sum())
    if negatives:
        assert (values[wrong] >= t).sum() <= max_rate * negatives
        # No smaller candidate score at or above 0.5 would also meet the cap.
        for candidate in values[(values >= 0.5) & (values < t)]:
            assert (values[wrong] >= candidate).sum() > max_rate * negatives


def test_select_thresholds_on_a_separable_validation_set() -> None:
    risk = np.array(
        [[0.95, 0.03, 0.02], [0.9, 0.05, 0.05], [0.6, 0.1, 0.3], [0.02, 0.03, 0.95], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]],
        dtype=np.float32,
    )
    labels = [Risk.SAFE, Risk.SAFE, Risk.UNSAFE, Risk.UNSAFE, Risk.UNSAFE, Risk.CONTROVERSIAL]
    thresholds = select_thresholds(risk, labels, max_block_fpr=0.0, max_allow_leak=0.0)
    assert thresholds.unsafe == 0.5  # the floor: no safe/controversial prompt has P(unsafe) above 0.1
    assert thresholds.safe == pytest.approx(0.9)  # 0.6 is an unsafe prompt's P(safe); 0.9 is the next
    decided = [is_decided(row, thresholds) for row in risk]
    assert decided == [True, True, False, True, True, False]


def test_is_decided_needs_confidence_either_way() -> None:
    thresholds = Thresholds(unsafe=0.9, safe=0.8, rule="test")
    assert is_decided(np.array([0.85, 0.1, 0.05], dtype=np.float32), thresholds)
    assert is_decided(np.array([0.0, 0.05, 0.95], dtype=np.float32), thresholds)
    assert not is_decided(np.array([0.5, 0.1, 0.4], dtype=np.float32), thresholds)
