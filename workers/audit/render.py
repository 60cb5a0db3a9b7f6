"""``audit`` on a terminal: each message's decisions, then the replay's differences, with rich."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from topics.events import Risk
from workers.audit.compare import Decision, MessageComparison, ReplayReport
from workers.audit.report import ChunkStep, Cutoff, FlaggedToken, Judgement, MessageReport
from workers.audit.run import Audit

_RISK_STYLE = {Risk.SAFE: "green", Risk.CONTROVERSIAL: "yellow", Risk.UNSAFE: "bold red"}
_TEXT_WIDTH = 48  # of a chunk's text in the trajectory table; the JSON document has it whole


def render(audit: Audit, console: Console) -> None:
    """Print ``audit``: the conversation's messages, then the replay when there is one."""
    report = audit.report
    console.print(f"[bold]Conversation {escape(report.conversation_id)}[/]  [dim]archive {escape(audit.archive)}[/]")
    if not report.has_text:
        console.print("[dim]the archive holds no text (archived with --no-text): verdicts and cut-offs only[/]")
    if report.undecodable:
        console.print(f"[yellow]{report.undecodable} records keyed by this conversation did not decode[/]")
    for message in report.messages:
        console.print(_message(message, tokenized=audit.tokenizer is not None))
    if audit.replay is not None:
        console.print(_replay(audit.replay))


def _message(message: MessageReport, *, tokenized: bool) -> RenderableType:
    lines: list[RenderableType] = [Text(f"\nMessage {message.message_id}", style="bold")]
    if message.prompt_text is not None:
        lines.append(Text.assemble(("  prompt   ", "dim"), _clip(message.prompt_text, 100)))
    if message.prompt is not None:
        prompt = message.prompt
        verdict = _judgement(prompt.judgement)
        verdict.append(f" · tier {prompt.tier} · {prompt.latency_ms:.1f} ms")
        lines.append(Text.assemble(("  verdict  ", "dim"), verdict))
    models = ", ".join(f"{m.model_id} @ {m.revision or '-'}" for m in message.models) or "-"
    policies = ", ".join(f"{p.name} v{p.version}" for p in message.policies) or "-"
    lines.append(Text.assemble(("  model    ", "dim"), models))
    lines.append(Text.assemble(("  policy   ", "dim"), policies, ("   worker ", "dim"), ", ".join(message.workers)))
    if message.chunks:
        lines.append(_trajectory(message.chunks))
    lines += [_flagged(flagged, tokenized=tokenized) for flagged in message.flagged]
    lines.append(_cutoff(message.cutoff))
    return Group(*lines)


def _trajectory(steps: tuple[ChunkStep, ...]) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="dim")
    for column in ("  seq", "tokens", "risk", "p_unsafe", "action", "status", "text"):
        table.add_column(column, justify="right" if column in {"  seq", "p_unsafe"} else "left")
    for step in steps:
        judged = step.judgement
        table.add_row(
            f"  {step.seq}",
            "-" if step.token_start is None else f"{step.token_start}-{step.token_end}",
            _risk(judged),
            "-" if judged is None or judged.p_unsafe is None else f"{judged.p_unsafe:.4f}",
            "-" if judged is None else judged.action.value,
            "not judged" if judged is None else judged.status.value,
            _chunk_text(step),
        )
    return table


def _flagged(flagged: FlaggedToken, *, tokenized: bool) -> Text:
    if flagged.text is not None:
        token = repr(flagged.text)
    else:
        token = "(text beyond the archived chunks)" if tokenized else "(its text: pass --tokenizer or --replay)"
    category = f", {flagged.category}" if flagged.category else ""
    return Text.assemble(
        ("  flagged  ", "dim"),
        f"token {flagged.index} {token} in seq {flagged.seq} -> {flagged.action.value}{category}",
    )


def _cutoff(cutoff: Cutoff | None) -> Text:
    if cutoff is None:
        return Text.assemble(("  cut-off  ", "dim"), ("none", "green"))
    where = "at the prompt" if cutoff.seq is None else f"at seq {cutoff.seq}, token {cutoff.token_index}"
    category = f", {cutoff.category}" if cutoff.category else ""
    return Text.assemble(
        ("  cut-off  ", "dim"),
        (f"{cutoff.stage.value} {where}: {cutoff.risk.value}{category}", _RISK_STYLE[cutoff.risk]),
        f" ({cutoff.reason}; policy {cutoff.policy})",
    )


def _replay(replay: ReplayReport) -> RenderableType:
    models = ", ".join(f"{m.model_id} @ {m.revision or '-'}" for m in replay.models) or "-"
    policy = replay.policy or "each message's own"
    lines: list[RenderableType] = [
        Text(f"\nReplay with {replay.checkpoint}", style="bold"),
        Text.assemble(("  model    ", "dim"), models, ("   policy ", "dim"), policy),
    ]
    for message in replay.messages:
        lines += _comparison(message)
    lines += [Text(f"  note: {note}", style="yellow") for note in replay.notes]
    if not replay.differs:
        lines.append(Text("  the replay decides every message as the archive says", style="green"))
    return Group(*lines)


def _comparison(message: MessageComparison) -> list[RenderableType]:
    if not message.differs:
        return [Text(f"  message {message.message_id}: no differences", style="green")]
    lines: list[RenderableType] = [Text(f"  message {message.message_id}: differs", style="bold yellow")]
    if message.cut_moved:
        lines.append(
            Text(f"    cut-off: archived {_where(message.original_cutoff)}, replay {_where(message.replayed_cutoff)}")
        )
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="dim")
    for column in ("    step", "archived", "replay", "changed"):
        table.add_column(column)
    for difference in message.differences:
        step = "prompt" if difference.seq is None else f"seq {difference.seq}"
        table.add_row(
            f"    {step}", _decision(difference.original), _decision(difference.replayed), ", ".join(difference.changed)
        )
    lines.append(table)
    return lines


def _decision(decision: Decision | None) -> Text:
    if decision is None:
        return Text("not judged", style="dim")
    text = _judgement(decision.judgement)
    if decision.token_start is not None:
        text.append(f" · tokens {decision.token_start}-{decision.token_end}")
    if decision.flagged_token is not None:
        text.append(f" · flagged {decision.flagged_token}")
    return text


def _judgement(judgement: Judgement) -> Text:
    text = Text(judgement.risk.value, style=_RISK_STYLE[judgement.risk])
    if judgement.category:
        text.append(f" ({judgement.category})")
    text.append(f" · {judgement.action.value} · {judgement.status.value}")
    if judgement.p_unsafe is not None:
        text.append(f" · p_unsafe {judgement.p_unsafe:.4f}")
    return text


def _risk(judgement: Judgement | None) -> Text:
    if judgement is None:
        return Text("-")
    return Text(judgement.risk.value, style=_RISK_STYLE[judgement.risk])


def _chunk_text(step: ChunkStep) -> Text:
    if step.text is not None:
        return _clip(step.text, _TEXT_WIDTH)
    if step.token_ids is not None:
        return Text(f"({len(step.token_ids)} token ids)", style="dim")
    return Text("" if step.final else "-", style="dim")


def _clip(text: str, width: int) -> Text:
    shown = repr(text if len(text) <= width else text[: width - 1] + "…")
    return Text(shown)


def _where(cutoff: Cutoff | None) -> str:
    if cutoff is None:
        return "none"
    at = "the prompt" if cutoff.seq is None else f"seq {cutoff.seq} token {cutoff.token_index}"
    return f"{at} ({cutoff.risk.value}{', ' + cutoff.category if cutoff.category else ''})"
