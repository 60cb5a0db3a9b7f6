"""Label maps, head sizes and training-target indices of streamwarden's stream heads.

The heads are written with Qwen3Guard-Stream's released label maps, in the released index order
and spelling (stray quotes included: ``labels.normalise_label`` strips them when loading), so a
checkpoint trained here is read exactly like a released one. Targets are indices in that order.
"""

from __future__ import annotations

from typing import Any

from topics.events import Risk
from workers.backends.taxonomy import JAILBREAK, QUERY_CATEGORIES
from workers.engine.labels import RELEASED_QUERY_CATEGORIES, RELEASED_RESPONSE_CATEGORIES, RELEASED_RISK_LEVELS

RISK_LEVELS = RELEASED_RISK_LEVELS
RESPONSE_CATEGORY_NAMES = RELEASED_RESPONSE_CATEGORIES
QUERY_CATEGORY_NAMES = RELEASED_QUERY_CATEGORIES

SAFE = RISK_LEVELS.index("Safe")
UNSAFE = RISK_LEVELS.index("Unsafe")
CONTROVERSIAL = RISK_LEVELS.index("Controversial")
IGNORE = -100
"""Target of a position that contributes no loss (torch's ``ignore_index`` convention)."""

_RISK_TARGETS = {Risk.SAFE: SAFE, Risk.UNSAFE: UNSAFE, Risk.CONTROVERSIAL: CONTROVERSIAL}


def risk_target(risk: Risk) -> int:
    """The risk-head target index of ``risk``."""
    return _RISK_TARGETS[risk]


def category_target(category: str | None, risk: int, *, response: bool) -> int:
    """The category-head target, or ``IGNORE``.

    Conditional category loss (Qwen3Guard §4.3): only positions whose risk target is Unsafe or
    Controversial and whose category is known get one. The response head has no Jailbreak class
    (the eight response categories are the first eight query categories).
    """
    if risk in (SAFE, IGNORE) or category is None or (response and category == JAILBREAK):
        return IGNORE
    return QUERY_CATEGORIES.index(category)


def guard_keys(inner_size: int) -> dict[str, Any]:
    """The guard part of ``config.json``: head sizes and the four string-keyed label maps."""
    return {
        "guard_inner_size": inner_size,
        "num_risk_level": len(RISK_LEVELS),
        "num_category": len(RESPONSE_CATEGORY_NAMES),
        "num_query_risk_level": len(RISK_LEVELS),
        "num_query_category": len(QUERY_CATEGORY_NAMES),
        "response_risk_level_map": {str(i): name for i, name in enumerate(RISK_LEVELS)},
        "response_category_map": {str(i): name for i, name in enumerate(RESPONSE_CATEGORY_NAMES)},
        "query_risk_level_map": {str(i): name for i, name in enumerate(RISK_LEVELS)},
        "query_category_map": {str(i): name for i, name in enumerate(QUERY_CATEGORY_NAMES)},
    }
