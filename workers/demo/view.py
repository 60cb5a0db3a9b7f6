"""The demo's terminal view: one row per conversation, updated live from verdicts and cut-offs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from topics.events import Action, ControlEvent, Risk, Stage, VerdictEvent
from workers.demo.conversations import Kind, Script

_RISK_STYLE = {Risk.SAFE: "green", Risk.CONTROVERSIAL: "yellow", Risk.UNSAFE: "bold red"}
_KIND_STYLE = {
    Kind.BENIGN: "green",
    Kind.LOOKALIKE: "cyan",
    Kind.TURNS_UNSAFE: "magenta",
    Kind.UNSAFE_PROMPT: "red",
}


@dataclass
class Row:
    script: Script
    conversation_id: str
    streamed: str = ""
    pieces: int = 0
    verdicts: int = 0
    prompt: VerdictEvent | None = None
    last: VerdictEvent | None = None
    cutoff: ControlEvent | None = None
    cut_text_at: int | None = None  # len(streamed) when the cut-off reached the producer
    sent_at: dict[int, float] = field(default_factory=dict)  # chunk seq -> publish time
    prompt_sent_at: float | None = None
    cut_latency_ms: float | None = None
    done: bool = False


class DemoView:
    """Holds the demo's state; ``render()`` draws it."""

    def __init__(self, rows: list[Row], model_id: str, policy: str) -> None:
        self.rows = {r.conversation_id: r for r in rows}
        self.model_id = model_id
        self.policy = policy
        self.started = time.monotonic()
        self.chunk_lags_ms: list[float] = []  # chunk published -> its verdict shown, per chunk
        self.prompt_lags_ms: list[float] = []

    def on_prompt(self, conversation_id: str) -> None:
        self.rows[conversation_id].prompt_sent_at = time.monotonic()

    def answered(self, row: Row) -> bool:
        """Whether the prompt and every streamed chunk of ``row`` have their verdict."""
        return row.prompt is not None and row.verdicts >= row.pieces

    def on_piece(self, conversation_id: str, piece: str, seq: int) -> None:
        row = self.rows[conversation_id]
        row.streamed += piece
        row.pieces += 1
        row.sent_at[seq] = time.monotonic()

    def on_verdict(self, verdict: VerdictEvent) -> None:
        row = self.rows.get(verdict.conversation_id)
        if row is None:
            return
        now = time.monotonic()
        if verdict.stage is Stage.PROMPT:
            row.prompt = verdict
            if row.prompt_sent_at is not None:
                self.prompt_lags_ms.append((now - row.prompt_sent_at) * 1000)
        else:
            row.verdicts += 1
            row.last = verdict
            sent = row.sent_at.get(verdict.seq) if verdict.seq is not None else None
            if sent is not None:
                self.chunk_lags_ms.append((now - sent) * 1000)

    def on_cutoff(self, cutoff: ControlEvent) -> None:
        row = self.rows[cutoff.conversation_id]
        row.cutoff = cutoff
        row.cut_text_at = len(row.streamed)
        sent = row.sent_at.get(cutoff.seq) if cutoff.seq is not None else None
        if sent is not None:
            row.cut_latency_ms = (time.monotonic() - sent) * 1000

    def render(self) -> Group:
        table = Table(expand=True, show_lines=True)
        table.add_column("conversation", width=16)
        table.add_column("kind", width=13)
        table.add_column("prompt", width=14)
        table.add_column("answer as streamed (red: after the guard's cut-off)", ratio=1)
        table.add_column("chunks", justify="right", width=7)
        table.add_column("status", width=26)
        for row in self.rows.values():
            table.add_row(
                row.script.name,
                Text(row.script.kind.value, style=_KIND_STYLE[row.script.kind]),
                self._prompt_cell(row),
                self._answer_cell(row),
                f"{row.verdicts}/{row.pieces}",
                self._status_cell(row),
            )
        elapsed = time.monotonic() - self.started
        title = f"streamwarden live demo  |  guard: {self.model_id}  |  policy: {self.policy}  |  {elapsed:5.1f}s"
        return Group(Panel(table, title=title))

    @staticmethod
    def _prompt_cell(row: Row) -> Text:
        if row.prompt is None:
            return Text("…", style="dim")
        v = row.prompt
        label = f"{v.risk.value} ({v.tier})"
        return Text(label, style=_RISK_STYLE[v.risk])

    @staticmethod
    def _answer_cell(row: Row) -> Text:
        text = Text()
        cut = row.cut_text_at if row.cut_text_at is not None else len(row.streamed)
        text.append(row.streamed[:cut][-220:])
        if cut < len(row.streamed):
            text.append(row.streamed[cut:], style="bold red strike")
        return text

    @staticmethod
    def _status_cell(row: Row) -> Text:
        if row.cutoff is not None:
            c = row.cutoff
            where = f"chunk {c.seq}, token {c.token_index}" if c.stage is Stage.RESPONSE else "at the prompt"
            latency = f" in {row.cut_latency_ms:.0f} ms" if row.cut_latency_ms is not None else ""
            return Text(f"CUT {where}{latency}\n{c.risk.value}: {c.category or '-'}", style="bold red")
        if row.last is not None and row.last.action is Action.FLAG:
            return Text(f"flagged {row.last.risk.value}", style="yellow")
        if row.done:
            return Text("finished, allowed", style="green")
        return Text("streaming…", style="dim")
