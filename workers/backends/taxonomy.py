"""Qwen3Guard's query categories: the label set every dataset category is mapped onto.

The order is the query head's index order in Qwen3Guard-Stream (``prompt_category_map`` of the
official evaluation script, without its stray quote characters), so the prefilter's category head
and the stream guard's query head speak the same indices.
"""

from __future__ import annotations

VIOLENT = "Violent"
SEXUAL = "Sexual Content or Sexual Acts"
SELF_HARM = "Suicide & Self-Harm"
POLITICAL = "Politically Sensitive Topics"
PII = "PII"
COPYRIGHT = "Copyright Violation"
ILLEGAL = "Non-violent Illegal Acts"
UNETHICAL = "Unethical Acts"
JAILBREAK = "Jailbreak"

QUERY_CATEGORIES: tuple[str, ...] = (
    VIOLENT,
    SEXUAL,
    SELF_HARM,
    POLITICAL,
    PII,
    COPYRIGHT,
    ILLEGAL,
    UNETHICAL,
    JAILBREAK,
)
"""The nine query categories in head-index order."""


def canonical_category(name: str) -> str:
    """Map a checkpoint's category spelling (``'"Violent"'``, ``violent``) to the canonical name.

    Raises:
        KeyError: the name is not one of the nine query categories.
    """
    wanted = name.strip().strip('"').casefold()
    for category in QUERY_CATEGORIES:
        if category.casefold() == wanted:
            return category
    raise KeyError(f"unknown query category {name!r}; known: {', '.join(QUERY_CATEGORIES)}")
