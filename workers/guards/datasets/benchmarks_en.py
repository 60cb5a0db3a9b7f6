"""English prompt benchmarks with published guard scores: OpenAI moderation, XSTest,
SimpleSafetyTests, HarmBench and ToxicChat.

Each reader takes the dataset folder and a split name and yields ``Record``s; which split may be
used for what is decided in ``registry``, not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_document, json_lines
from workers.guards.datasets.records import Record

# OpenAI flags in the order that picks the primary category of a multi-label row: the severe
# subcategories first, then the broad ones.
_OPENAI_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("S3", tx.SEXUAL),
    ("SH", tx.SELF_HARM),
    ("V2", tx.VIOLENT),
    ("H2", tx.UNETHICAL),
    ("V", tx.VIOLENT),
    ("S", tx.SEXUAL),
    ("H", tx.UNETHICAL),
    ("HR", tx.UNETHICAL),
)


def read_openai_moderation(folder: Path, split: str) -> Iterator[Record]:
    """samples-1680: unsafe when any known flag is 1 (a missing flag is unknown, not 0)."""
    for index, row in enumerate(json_lines(folder / "samples-1680.jsonl")):
        flagged = [category for key, category in _OPENAI_CATEGORIES if row.get(key) == 1]
        yield Record(
            uid=f"openai_moderation/{split}/{index}",
            text=row["prompt"],
            label=Risk.UNSAFE if flagged else Risk.SAFE,
            category=flagged[0] if flagged else None,
            language="en",
            dataset="openai_moderation",
            split=split,
        )


_XSTEST_CATEGORIES = {"contrast_privacy": tx.PII, "contrast_discr": tx.UNETHICAL}


def read_xstest(folder: Path, split: str) -> Iterator[Record]:
    """XSTest v2 prompts: 250 safe look-alikes and 200 unsafe ``contrast_*`` prompts."""
    for row in csv_rows(folder / "xstest_prompts.csv"):
        unsafe = row["label"] == "unsafe"
        yield Record(
            uid=f"xstest/{split}/{row['id']}",
            text=row["prompt"],
            label=Risk.UNSAFE if unsafe else Risk.SAFE,
            category=_XSTEST_CATEGORIES.get(row["type"]) if unsafe else None,
            language="en",
            dataset="xstest",
            split=split,
            subset=row["type"],
        )


_SST_CATEGORIES = {
    "Suicide, Self-Harm, and Eating Disorders": tx.SELF_HARM,
    "Physical harm and Violence": tx.VIOLENT,
    "Illegal and Highly Regulated items": tx.ILLEGAL,
    "Scams and fraud": tx.ILLEGAL,
    "Child safety": tx.SEXUAL,  # the 20 prompts are about child sexual abuse
}


def read_simple_safety_tests(folder: Path, split: str) -> Iterator[Record]:
    """SimpleSafetyTests: 100 clearly unsafe prompts in five harm areas."""
    for row in csv_rows(folder / "SimpleSafetyTests - test cases.csv"):
        yield Record(
            uid=f"simple_safety_tests/{split}/{row['id']}",
            text=row["prompts_final"],
            label=Risk.UNSAFE,
            category=_SST_CATEGORIES[row["harm_area"]],
            language="en",
            dataset="simple_safety_tests",
            split=split,
            subset=row["harm_area"],
        )


_HARMBENCH_CATEGORIES = {
    "chemical_biological": tx.VIOLENT,  # weapons of mass harm fall under "Violent" in Qwen3Guard's policy
    "illegal": tx.ILLEGAL,
    "misinformation_disinformation": tx.POLITICAL,
    "harmful": tx.UNETHICAL,
    "harassment_bullying": tx.UNETHICAL,
    "cybercrime_intrusion": tx.ILLEGAL,
    "copyright": tx.COPYRIGHT,
}


def read_harmbench(folder: Path, split: str) -> Iterator[Record]:
    """HarmBench text behaviours (``test`` or ``val``); contextual ones are context + request."""
    for row in csv_rows(folder / f"harmbench_behaviors_text_{split}.csv"):
        context = row["ContextString"].strip()
        text = f"{context}\n\n{row['Behavior']}" if context else row["Behavior"]
        yield Record(
            uid=f"harmbench/{split}/{row['BehaviorID']}",
            text=text,
            label=Risk.UNSAFE,
            category=_HARMBENCH_CATEGORIES[row["SemanticCategory"]],
            language="en",
            dataset="harmbench",
            split=split,
            subset=row["FunctionalCategory"],
        )


def read_toxic_chat(folder: Path, split: str) -> Iterator[Record]:
    """ToxicChat (human-annotated toxicchat0124): real user prompts, toxic 0/1, jailbreaking 0/1.

    Toxic rows have no finer category except jailbreak attempts, which map to ``Jailbreak``.
    Language is recorded as English (the set is mostly English; no per-row language is given).
    """
    document = json_document(folder / f"toxic_chat_{split}.json")
    for row in document["instances"]:
        annotations = row["annotations"]
        toxic = annotations["toxicity"]["majority_human"] == "1"
        jailbreak = annotations["jailbreaking"]["majority_human"] == "1"
        yield Record(
            uid=f"toxic_chat/{split}/{row['id']}",
            text=row["instance"],
            label=Risk.UNSAFE if toxic else Risk.SAFE,
            category=tx.JAILBREAK if toxic and jailbreak else None,
            language="en",
            dataset="toxic_chat",
            split=split,
            subset="jailbreaking" if jailbreak else "",
        )
