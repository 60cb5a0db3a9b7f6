"""The checks of a fuzz run: what was published against what came back.

- every record that must be dead-lettered has exactly one dead letter (matched by source topic,
  partition and offset) with the expected reason, a detail, and the expected field where the
  strategy knows it; no other record has any;
- every scripted conversation got exactly its expected verdicts (one distinct verdict id per
  prompt and chunk, with the expected status and action) and none other, and exactly its
  expected cut-offs; a conversation that must get no verdict got none;
- conversations that outgrow the guard's context keep a bounded token log in the state store;
- the worker is alive, its RSS stayed within the bound, it wrote no traceback, and the last good
  verdict arrived within the bound after the last record was published.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from topics.events import VerdictEvent
from workers.fuzz.observe import Observed
from workers.fuzz.plan import Plan
from workers.fuzz.records import Record, Script

SHOWN_PER_CHECK = 10
"""Failures listed per check in a report (the count says how many there were)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A published record and where the broker put it."""

    record: Record
    topic: str
    partition: int
    offset: int

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a run must stay within."""

    rss_growth_mib: float = 256.0  # over the worker's RSS when the run started
    catch_up_s: float = 30.0  # last good verdict after the last record published


@dataclass
class Report:
    """The measured result of one run; ``failures`` empty means it passed."""

    seed: int
    records_by_strategy: dict[str, int]
    hostile_records: int
    good_conversations: int
    good_verdicts_checked: int
    dead_letters_by_reason: dict[str, int]
    verdicts_by_status: dict[str, int]
    cutoffs: int
    start_rss_mib: float
    max_rss_mib: float
    rss_bound_mib: float
    publish_s: float
    duration_s: float
    catch_up_s: float
    longest_log_tokens: int
    failures: list[str] = field(default_factory=list)


def pending(plan: Plan, sent: Sequence[Sent], seen: Observed) -> int:
    """Expected outputs not seen yet (dead letters, verdicts, cut-offs)."""
    missing = sum(1 for s in sent if s.record.dead_letter and not seen.dead.get(s.coordinates))
    for script in plan.scripts:
        keys = {(v.message_id, v.seq) for v in seen.verdicts.get(script.conversation_id, ())}
        missing += sum(1 for v in script.verdicts if (v.message_id, v.seq) not in keys)
        missing += max(0, script.cutoffs - len({c.event_id for c in seen.controls.get(script.conversation_id, ())}))
    return missing


def check_dead_letters(sent: Sequence[Sent], seen: Observed) -> list[str]:
    failures: list[str] = []
    for s in sent:
        letters = seen.dead.get(s.coordinates, [])
        want, where = s.record.dead_letter, f"{s.record.strategy} at {s.topic}[{s.partition}]@{s.offset}"
        if want is None:
            if letters:
                failures.append(f"{where}: unexpected dead letter(s) {[d.reason for d in letters]}")
            continue
        if len(letters) != 1:
            failures.append(f"{where}: {len(letters)} dead letters, expected one with reason {want!r}")
            continue
        (letter,) = letters
        if letter.reason != want or not letter.detail:
            failures.append(f"{where}: reason {letter.reason!r} ({letter.detail!r}), expected {want!r}")
        elif s.record.field is not None and letter.field != s.record.field:
            failures.append(f"{where}: field {letter.field!r}, expected {s.record.field!r} ({letter.detail!r})")
    known = {s.coordinates for s in sent}
    strays = [k for k in seen.dead if k not in known]
    failures += [f"dead letter for a record the fuzzer did not publish: {k}" for k in strays]
    return failures


def check_scripts(plan: Plan, seen: Observed) -> list[str]:
    failures: list[str] = []
    for script in plan.scripts:
        failures += _check_script(script, seen)
    return failures


def _check_script(script: Script, seen: Observed) -> list[str]:
    cid, failures = script.conversation_id, []
    got: dict[tuple[str, int | None], dict[str, VerdictEvent]] = {}
    for v in seen.verdicts.get(cid, ()):
        got.setdefault((v.message_id, v.seq), {})[v.event_id] = v
    for want in script.verdicts:
        copies = got.pop((want.message_id, want.seq), {})
        where = f"{script.kind} {cid}/{want.message_id} seq {want.seq}"
        if len(copies) != 1:
            failures.append(f"{where}: {len(copies)} distinct verdicts, expected one")
            continue
        (v,) = copies.values()
        if (v.status, v.action) != (want.status, want.action):
            failures.append(
                f"{where}: {v.status.value}/{v.action.value} ({v.risk.value}), "
                f"expected {want.status.value}/{want.action.value}"
            )
    failures += [f"{script.kind} {cid}/{m} seq {seq}: unexpected verdict" for (m, seq) in got]
    controls = {c.event_id: c for c in seen.controls.get(cid, ())}
    if len(controls) != script.cutoffs:
        failures.append(f"{script.kind} {cid}: {len(controls)} cut-offs, expected {script.cutoffs}")
    if script.cutoff_reason is not None:
        failures += [
            f"{script.kind} {cid}: cut-off reason {c.reason!r} does not mention {script.cutoff_reason!r}"
            for c in controls.values()
            if script.cutoff_reason not in c.reason
        ]
    return failures


def summarise(failures: Iterable[tuple[str, list[str]]]) -> list[str]:
    """At most ``SHOWN_PER_CHECK`` failures per check, and how many there were."""
    out = []
    for name, found in failures:
        out += [f"{name}: {f}" for f in found[:SHOWN_PER_CHECK]]
        if len(found) > SHOWN_PER_CHECK:
            out.append(f"{name}: ... {len(found) - SHOWN_PER_CHECK} more")
    return out


def dead_letters_by_reason(seen: Observed) -> dict[str, int]:
    return dict(Counter(d.reason for letters in seen.dead.values() for d in letters).most_common())


def verdicts_by_status(seen: Observed) -> dict[str, int]:
    distinct = {v.event_id: v for vs in seen.verdicts.values() for v in vs}
    return dict(Counter(v.status.value for v in distinct.values()).most_common())
