"""The compare report: joins, coverage, agreement, cut-offs and latency from known verdicts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from topics.events import Action, Risk, Stage, VerdictEvent, VerdictStatus
from workers.moderation import ids
from workers.shadow.render import print_report, report_json
from workers.shadow.report import CUT_BOTH, CUT_LIVE_ONLY, CUT_SHADOW_ONLY, build_report, percentile
from workers.shadow.sink import as_shadow

A, F, C = Action.ALLOW, Action.FLAG, Action.CUTOFF
S, X, U = Risk.SAFE, Risk.CONTROVERSIAL, Risk.UNSAFE


def v(
    cid: str,
    seq: int | None,
    risk: Risk = S,
    action: Action = A,
    *,
    latency: float = 1.0,
    flagged: int | None = None,
    status: VerdictStatus = VerdictStatus.MODERATED,
    policy: str = "loose",
) -> VerdictEvent:
    stage = Stage.PROMPT if seq is None else Stage.RESPONSE
    start = 0 if seq is None else 10 * seq
    return VerdictEvent(
        event_id=ids.verdict_id(cid, "m1", stage, seq),
        conversation_id=cid,
        message_id="m1",
        stage=stage,
        seq=seq,
        token_start=start,
        token_end=start if seq is None else start + 10,
        risk=risk,
        action=action,
        status=status,
        tier="stream",
        model_id="model",
        policy=policy,
        latency_ms=latency,
        flagged_token=flagged,
    )


def shadow(verdict: VerdictEvent, **changes: Any) -> VerdictEvent:
    return as_shadow(replace(verdict, policy="strict", **changes))


def _traffic() -> tuple[list[VerdictEvent], list[VerdictEvent]]:
    after = VerdictStatus.AFTER_CUTOFF
    live = [
        # "same": both allow everything
        v("same", None),
        v("same", 0),
        v("same", 1),
        # "both": both cut the answer, the shadow 3 tokens later and one chunk later
        v("both", None),
        v("both", 0, U, C, flagged=7),
        v("both", 1, U, C, status=after),
        # "live": only the live guard cuts (at the prompt)
        v("live", None, U, C),
        v("live", 0, U, C, status=after),
        # "shadow": only the shadow cuts, in the answer
        v("shadow", None),
        v("shadow", 0, X, F),
        v("shadow", 1),
        # "gap": the shadow never judged its chunk
        v("gap", None),
        v("gap", 0),
    ]
    shadow_verdicts = [
        shadow(live[0], latency_ms=3.0),
        shadow(live[1], latency_ms=3.0),
        shadow(live[2], latency_ms=3.0),
        shadow(live[3]),
        shadow(live[4], risk=S, action=A, flagged_token=None),
        shadow(live[5], risk=U, action=C, flagged_token=13, status=VerdictStatus.MODERATED),
        shadow(live[6], risk=S, action=A),
        shadow(live[7], risk=S, action=A, status=VerdictStatus.MODERATED),
        shadow(live[8]),
        shadow(live[9], action=C, flagged_token=4),
        shadow(live[10], risk=X, action=C, status=after),
        shadow(live[11]),
        shadow(live[1]),  # a redelivered copy
    ]
    return live, shadow_verdicts


def test_coverage_agreement_and_confusion() -> None:
    live, shadow_verdicts = _traffic()
    report = build_report(live, shadow_verdicts)
    assert (report.live.verdicts, report.shadow.verdicts, report.shadow.duplicates) == (13, 12, 1)
    assert (report.joined, report.live_unmatched, report.shadow_unmatched) == (12, 1, 0)
    assert report.coverage == 12 / 13
    # Both judged: every joined pair but the three with an after_cutoff side.
    assert report.compared == 9
    # Disagreements among them: both:0 (unsafe vs safe), live:p (unsafe vs safe), shadow:0 (flag vs cut).
    assert report.action_agreement == 6 / 9
    assert report.risk_agreement == 7 / 9
    assert report.action_confusion["cutoff"]["allow"] == 2 and report.action_confusion["flag"]["cutoff"] == 1
    assert report.risk_confusion["unsafe"]["safe"] == 2 and report.risk_confusion["safe"]["safe"] == 6
    assert sum(sum(row.values()) for row in report.action_confusion.values()) == report.compared
    assert (report.live.policies, report.shadow.policies) == (("loose",), ("strict",))


def test_cuts_name_who_cut_where_and_how_much_later() -> None:
    report = build_report(*_traffic())
    by = {c.conversation_id: c for c in report.cuts}
    assert set(by) == {"both", "live", "shadow"}
    both = by["both"]
    assert both.where == CUT_BOTH and both.live is not None and both.shadow is not None
    assert (both.live.seq, both.live.token, both.shadow.seq, both.shadow.token) == (0, 7, 1, 13)
    assert (both.token_delta, both.seq_delta) == (6, 1)
    live_only = by["live"]
    assert live_only.where == CUT_LIVE_ONLY and live_only.live is not None and live_only.live.stage is Stage.PROMPT
    assert live_only.shadow is None and live_only.token_delta is None
    shadow_only = by["shadow"]
    assert shadow_only.where == CUT_SHADOW_ONLY and shadow_only.shadow is not None
    assert shadow_only.shadow.token == 4  # where its debounce fired, not the chunk's start
    summary = report.cut_summary
    assert (summary.both, summary.live_only, summary.shadow_only, summary.same_position) == (1, 1, 1, 0)
    assert summary.token_delta_mean == 6.0
    assert (report.live.messages_cut, report.shadow.messages_cut) == (2, 2)


def test_latency_percentiles_and_the_shadows_extra_latency() -> None:
    report = build_report(*_traffic())
    assert (report.live.latency.p50_ms, report.live.latency.p99_ms) == (1.0, 1.0)
    assert (report.shadow.latency.p50_ms, report.shadow.latency.p99_ms) == (1.0, 3.0)
    assert report.extra_latency.count == 12 and report.extra_latency.p99_ms == 2.0
    assert percentile([], 50) is None
    assert percentile([5.0, 1.0, 3.0, 2.0], 50) == 2.0 and percentile(list(range(1, 101)), 99) == 99


def test_nothing_read_is_a_report_without_ratios() -> None:
    report = build_report([], [])
    assert report.coverage is None and report.action_agreement is None and report.cuts == ()


def test_json_and_terminal_output() -> None:
    report = build_report(*_traffic())
    data = orjson.loads(report_json(report))
    assert data["coverage"] == report.coverage and data["cut_summary"]["both"] == 1
    assert data["cuts"][0]["live"]["stage"] in ("prompt", "response")
    from rich.console import Console

    console = Console(record=True, width=240)
    print_report(report, console)
    text = console.export_text()
    assert "coverage" in text and "92.3%" in text and "live_only" in text and "shadow_only" in text
