"""A run's plan: every script of one seed, and the order their records are published in.

``build_plan`` is a pure function of its arguments (the seed fixes every byte; ``run`` only makes
conversation ids unique on a shared broker), so a failing run is replayed with the same seed.
The interleaving keeps each script's own order and its records close together (``_interleave``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from workers.fuzz import scenarios
from workers.fuzz.mutations import Draw, Limits, single
from workers.fuzz.records import Record, Script
from workers.fuzz.scenarios import Guard

ACTIVE_SCRIPTS = 8
"""Scripts interleaved at any point of the stream."""


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """How big a run is. ``events`` counts hostile records; good conversations come on top."""

    seed: int
    events: int = 10_000
    good: int | None = None  # good conversations; default: one per 50 hostile records
    flood_prompts: int | None = None  # prompts of the one flooded conversation; default events // 50
    long_tokens: int = 1_000_000  # token ids of the one very long answer
    long_text_chunks: int = 60  # chunks of the long text answers (words, and combining marks)


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    scripts: tuple[Script, ...]
    order: tuple[Record, ...]  # the interleaved phase (openings go first, see Script)

    @property
    def openings(self) -> tuple[Record, ...]:
        return tuple(r for s in self.scripts for r in s.opening)

    def hostile_records(self) -> int:
        return sum(len(s.all_records) for s in self.scripts if not s.good)

    def records_by_strategy(self) -> Counter[str]:
        return Counter(r.strategy for s in self.scripts for r in s.all_records)


def build_plan(config: PlanConfig, guard: Guard, limits: Limits, *, run: str) -> Plan:
    """Draw every script of the run, then interleave them."""
    d = Draw(random.Random(config.seed), limits, run)
    scripts: list[Script] = [
        scenarios.prompt_flood(
            d, guard, config.flood_prompts if config.flood_prompts is not None else config.events // 50
        ),
        scenarios.long_ids(d, guard, config.long_tokens),
        scenarios.long_text(d, guard, config.long_text_chunks),
        scenarios.long_text(d, guard, config.long_text_chunks, combining=True),
    ]
    sequences = max(1, config.events // 40)
    scripts += [d.rng.choice(scenarios.HOSTILE_SCRIPTS)(d, guard) for _ in range(sequences)]
    hostile = sum(len(s.all_records) for s in scripts)
    while hostile < config.events:
        record = single(d)
        scripts.append(Script(d.last, record.strategy, (record,)))
        hostile += 1
    good = config.good if config.good is not None else max(1, config.events // 50)
    scripts += [scenarios.good(d, guard) for _ in range(good)]
    return Plan(config.seed, tuple(scripts), _interleave(d.rng, scripts))


def _interleave(rng: random.Random, scripts: list[Script], width: int = ACTIVE_SCRIPTS) -> tuple[Record, ...]:
    """Scripts start in random order, at most ``width`` at a time; each record comes from a random
    active script. A script's records thus stay close together in the stream (its chunks are meant
    to arrive within the worker's waits for a prompt or a missing seq) while many interleave."""
    waiting = [i for i, s in enumerate(scripts) if s.records]
    rng.shuffle(waiting)
    active: list[int] = []
    cursors = [0] * len(scripts)
    order = []
    while waiting or active:
        while len(active) < width and waiting:
            active.append(waiting.pop())
        slot = rng.randrange(len(active))
        i = active[slot]
        order.append(scripts[i].records[cursors[i]])
        cursors[i] += 1
        if cursors[i] == len(scripts[i].records):
            active[slot] = active[-1]
            active.pop()
    return tuple(order)
