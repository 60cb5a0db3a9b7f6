"""The live-versus-shadow report on a terminal (rich) and as JSON (orjson)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from workers.shadow.report import CUT_BOTH, CutPosition, Latency, ShadowReport

MAX_CUT_ROWS = 30
"""Messages listed in the cut-offs table; the counts above it cover all of them."""


def report_json(report: ShadowReport) -> bytes:
    """The report as indented JSON (dataclasses and enums as orjson writes them)."""
    import orjson

    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def print_report(report: ShadowReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(_sides(report))
    console.print(_agreement(report))
    for title, matrix in (("action", report.action_confusion), ("risk", report.risk_confusion)):
        console.print(_confusion(title, matrix))
    console.print(_cuts(report))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _latency(latency: Latency) -> str:
    return f"{_ms(latency.p50_ms)} / {_ms(latency.p99_ms)}"


def _sides(report: ShadowReport) -> Table:
    table = Table(title="live and shadow guards")
    for column in ("", "live", "shadow"):
        table.add_column(column)
    live, shadow = report.live, report.shadow
    table.add_row("model", ", ".join(live.models), ", ".join(shadow.models))
    table.add_row("policy", ", ".join(live.policies), ", ".join(shadow.policies))
    table.add_row("verdicts", str(live.verdicts), str(shadow.verdicts))
    table.add_row("duplicates (redeliveries)", str(live.duplicates), str(shadow.duplicates))
    table.add_row("messages", str(live.messages), str(shadow.messages))
    table.add_row("messages cut off", str(live.messages_cut), str(shadow.messages_cut))
    table.add_row("latency p50 / p99 (ms)", _latency(live.latency), _latency(shadow.latency))
    return table


def _agreement(report: ShadowReport) -> Table:
    table = Table(title="coverage and agreement", show_header=False)
    table.add_row("coverage (live verdicts with a shadow verdict)", _pct(report.coverage))
    table.add_row("joined / live without shadow / shadow without live", _joined(report))
    table.add_row("compared (both judged)", str(report.compared))
    table.add_row("risk agreement", _pct(report.risk_agreement))
    table.add_row("action agreement", _pct(report.action_agreement))
    table.add_row("shadow extra latency p50 / p99 (ms)", _latency(report.extra_latency))
    return table


def _joined(report: ShadowReport) -> str:
    return f"{report.joined} / {report.live_unmatched} / {report.shadow_unmatched}"


def _confusion(title: str, matrix: dict[str, dict[str, int]]) -> Table:
    table = Table(title=f"{title}: live (rows) x shadow (columns)")
    labels = list(matrix)
    table.add_column("live \\ shadow")
    for label in labels:
        table.add_column(label, justify="right")
    for row in labels:
        table.add_row(row, *(str(matrix[row][col]) for col in labels))
    return table


def _position(at: CutPosition | None) -> str:
    if at is None:
        return "-"
    return "prompt" if at.seq is None else f"chunk {at.seq}, token {at.token}"


def _cuts(report: ShadowReport) -> Table:
    s = report.cut_summary
    mean = "-" if s.token_delta_mean is None else f"{s.token_delta_mean:+.1f}"
    table = Table(
        title=(
            f"cut-offs: both {s.both} ({s.same_position} at the same token, shadow {mean} tokens on average), "
            f"live only {s.live_only}, shadow only {s.shadow_only}"
        )
    )
    for column in ("conversation / message", "who", "live cut", "shadow cut", "tokens later"):
        table.add_column(column)
    differing = [c for c in report.cuts if c.where != CUT_BOTH or c.live != c.shadow]
    for cut in differing[:MAX_CUT_ROWS]:
        delta = "-" if cut.token_delta is None else f"{cut.token_delta:+d}"
        table.add_row(
            f"{cut.conversation_id} / {cut.message_id}", cut.where, _position(cut.live), _position(cut.shadow), delta
        )
    if len(differing) > MAX_CUT_ROWS:
        table.caption = f"{len(differing) - MAX_CUT_ROWS} more messages cut differently (see --json)"
    return table
