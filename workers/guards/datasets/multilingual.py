"""Parallel multilingual prompt sets used for training: XSafety (en/ru/zh) and MultiJail (en/zh)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, first_column
from workers.guards.datasets.records import Record

# XSafety has no per-prompt label; its notes say to treat the prompts as sensitive and only the
# clearly harmful scenarios as unsafe. Reading 200 prompts of each file gave this mapping:
# crimes and insults are harmful requests; the instruction attacks and opinion inquiries are
# mixed (some harmful, some harmless questions about the topic), so CONTROVERSIAL; ethics,
# mental-health, physical-health and commonsense prompts are ordinary questions, so SAFE.
_XSAFETY_SCENARIOS: dict[str, tuple[Risk, str | None]] = {
    "Crimes_And_Illegal_Activities": (Risk.UNSAFE, tx.ILLEGAL),
    "Insult": (Risk.UNSAFE, tx.UNETHICAL),
    "Unfairness_And_Discrimination": (Risk.CONTROVERSIAL, tx.UNETHICAL),
    "Privacy_And_Property": (Risk.CONTROVERSIAL, tx.PII),
    "Inquiry_With_Unsafe_Opinion": (Risk.CONTROVERSIAL, tx.UNETHICAL),
    "Unsafe_Instruction_Topic": (Risk.CONTROVERSIAL, tx.UNETHICAL),
    "Reverse_Exposure": (Risk.CONTROVERSIAL, None),
    "Role_Play_Instruction": (Risk.CONTROVERSIAL, tx.JAILBREAK),
    "Goal_Hijacking": (Risk.CONTROVERSIAL, tx.JAILBREAK),
    "Prompt_Leaking": (Risk.CONTROVERSIAL, tx.JAILBREAK),
    "Ethics_And_Morality": (Risk.SAFE, None),
    "Mental_Health": (Risk.SAFE, None),
    "Physical_Harm": (Risk.SAFE, None),
    "commonsense": (Risk.SAFE, None),
}
XSAFETY_LANGUAGES: tuple[str, ...] = ("en", "ru", "zh")


def _xsafety_scenario(path: Path) -> str:
    """The scenario a file holds; file names differ per language (``Insult_n``, a truncated ``ru`` name)."""
    stem = path.stem.removesuffix("_n").removesuffix("_en")
    matches = [name for name in _XSAFETY_SCENARIOS if name.startswith(stem)]
    if len(matches) != 1:
        raise ValueError(f"cannot tell the XSafety scenario of {path}")
    return matches[0]


def read_xsafety(folder: Path, split: str) -> Iterator[Record]:
    """XSafety prompts of every copied language, labelled per scenario (see the mapping above)."""
    for language in XSAFETY_LANGUAGES:
        for path in sorted((folder / language).glob("*.csv")):
            scenario = _xsafety_scenario(path)
            label, category = _XSAFETY_SCENARIOS[scenario]
            for line_no, text in enumerate(first_column(path)):
                yield Record(
                    uid=f"xsafety/{split}/{language}/{scenario}/{line_no}",
                    text=text,
                    label=label,
                    category=category,
                    language=language,
                    dataset="xsafety",
                    split=split,
                    subset=scenario,
                    group=f"xsafety/{scenario}/{line_no}",  # the languages are line-aligned translations
                )


_MULTIJAIL_CATEGORIES = {
    "Violence & incitement": tx.VIOLENT,
    "Discrimination & injustice": tx.UNETHICAL,
    "Hate speech & offensive language": tx.UNETHICAL,
    "Bullying & harassment": tx.UNETHICAL,
    "Non-violent unethical behavior (e.g. lying, cheating, etc.)": tx.UNETHICAL,
    "Conspiracy theories & misinformation": tx.POLITICAL,
    "Theft": tx.ILLEGAL,
    "Weapons": tx.VIOLENT,
    "Adult content": tx.SEXUAL,
    "Substance abuse & banned substances": tx.ILLEGAL,
    "Terrorism & organized crime": tx.VIOLENT,
    "Fraud & deception": tx.ILLEGAL,
    "Sexual exploitation & human trafficking": tx.SEXUAL,
    "Animal abuse": tx.VIOLENT,
    "Property crime & vandalism": tx.ILLEGAL,
    "Soliciting personally identifiable information": tx.PII,
    "Self-harm": tx.SELF_HARM,
    "Child abuse": tx.VIOLENT,
}
MULTIJAIL_LANGUAGES: tuple[str, ...] = ("en", "zh")
"""Only the languages the project evaluates: the other eight have no safe counterpart in the
training data, so they would teach the head that a script, not a request, is unsafe."""


def read_multijail(folder: Path, split: str) -> Iterator[Record]:
    """MultiJail: unsafe prompts with human translations; the first harm tag names the category."""
    for row in csv_rows(folder / "MultiJail.csv"):
        tags = ast.literal_eval(row["tags"])
        category = _MULTIJAIL_CATEGORIES.get(tags[0]) if tags else None
        for language in MULTIJAIL_LANGUAGES:
            if text := row[language].strip():
                yield Record(
                    uid=f"multijail/{split}/{language}/{row['id']}",
                    text=text,
                    label=Risk.UNSAFE,
                    category=category,
                    language=language,
                    dataset="multijail",
                    split=split,
                    subset=row["source"],
                    group=f"multijail/{row['id']}",
                )
