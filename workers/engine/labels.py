"""Label maps of a guard checkpoint, read from its config, and the canonical risk order.

Qwen3Guard-Stream stores four string-keyed maps in ``config.json``: ``response_risk_level_map``,
``response_category_map``, ``query_risk_level_map`` and ``query_category_map``. The risk maps use
the checkpoint's own index order (for the released models 0 Safe, 1 Unsafe, 2 Controversial);
every score streamwarden returns is reordered to ``RISK_ORDER`` (safe, controversial, unsafe).
Category names in the released configs may carry stray quotes (``'"Violent"'``); they are stripped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from topics.events import Risk
from workers.backends.base import RISK_ORDER

RELEASED_RISK_LEVELS: tuple[str, str, str] = ("Safe", "Unsafe", "Controversial")
"""The released risk index order of both head paths."""
RELEASED_RESPONSE_CATEGORIES: tuple[str, ...] = (
    '"Violent"',
    "Sexual Content or Sexual Acts",
    "Suicide & Self-Harm",
    "Politically Sensitive Topics",
    "PII",
    "Copyright Violation",
    "Non-violent Illegal Acts",
    "Unethical Acts",
)
"""``category_map`` of Qwen3Guard's official evaluation, verbatim (stray quotes included): the
response category head's index order."""
RELEASED_QUERY_CATEGORIES: tuple[str, ...] = (*RELEASED_RESPONSE_CATEGORIES, "Jailbreak")
"""The query category head's index order (the response categories, then Jailbreak)."""

RISK_MAP_KEYS: tuple[str, str] = ("response_risk_level_map", "query_risk_level_map")
CATEGORY_MAP_KEYS: tuple[str, str] = ("response_category_map", "query_category_map")
LABEL_MAP_COUNTS: Mapping[str, str] = {
    "response_risk_level_map": "num_risk_level",
    "response_category_map": "num_category",
    "query_risk_level_map": "num_query_risk_level",
    "query_category_map": "num_query_category",
}
"""Each label map and the config key that states its size."""

_RISK_NAMES: Mapping[str, Risk] = {
    "safe": Risk.SAFE,
    "controversial": Risk.CONTROVERSIAL,
    "unsafe": Risk.UNSAFE,
}


class LabelMapError(ValueError):
    """A label map that cannot be used; the message names the map and the problem."""


def normalise_label(name: str) -> str:
    """Strip whitespace and stray quote characters around a label (``'"Violent"'`` -> ``Violent``)."""
    return name.strip().strip("\"'").strip()


def parse_index_map(name: str, raw: object, size: int) -> tuple[str, ...]:
    """Turn a string-keyed map ``{"0": label, ...}`` into labels ordered by index.

    Raises:
        LabelMapError: the map is not a mapping, its keys are not exactly ``0 .. size-1``, or a
            label is empty.
    """
    if not isinstance(raw, Mapping):
        raise LabelMapError(f"{name} must be a mapping of index to label, got {type(raw).__name__}")
    try:
        by_index = {int(key): value for key, value in raw.items()}
    except (TypeError, ValueError):
        raise LabelMapError(f"{name} has a key that is not an integer: {sorted(raw)!r}") from None
    if sorted(by_index) != list(range(size)):
        raise LabelMapError(f"{name} must have keys 0..{size - 1}, got {sorted(by_index)}")
    labels = []
    for index in range(size):
        value = by_index[index]
        if not isinstance(value, str) or not normalise_label(value):
            raise LabelMapError(f"{name}[{index}] must be a non-empty string, got {value!r}")
        labels.append(normalise_label(value))
    return tuple(labels)


def parse_risk_map(name: str, raw: object, size: int) -> tuple[Risk, ...]:
    """Parse a risk map; it must name Safe, Controversial and Unsafe exactly once each."""
    labels = parse_index_map(name, raw, size)
    risks = []
    for label in labels:
        risk = _RISK_NAMES.get(label.lower())
        if risk is None:
            raise LabelMapError(f"{name} has unknown risk level {label!r}; expected Safe, Unsafe, Controversial")
        risks.append(risk)
    if sorted(risks) != sorted(RISK_ORDER):
        raise LabelMapError(f"{name} must name Safe, Unsafe and Controversial once each, got {labels}")
    return tuple(risks)


@dataclass(frozen=True, slots=True)
class HeadLabels:
    """Labels of one head path (response or query)."""

    risks: tuple[Risk, ...]
    """Risk of each risk-head output index, in the checkpoint's order."""
    categories: tuple[str, ...]
    """Category name of each category-head output index."""

    @property
    def risk_permutation(self) -> tuple[int, ...]:
        """Checkpoint column for each ``RISK_ORDER`` entry: ``probs[:, perm]`` is canonical."""
        return tuple(self.risks.index(risk) for risk in RISK_ORDER)


@dataclass(frozen=True, slots=True)
class LabelMaps:
    """Both head paths' labels, as read from a guard config."""

    response: HeadLabels
    query: HeadLabels

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> LabelMaps:
        """Read and check the four maps against the ``num_*`` sizes in ``config``.

        Raises:
            LabelMapError: a map or its size key is missing or malformed.
        """
        sizes: dict[str, int] = {}
        for map_key, count_key in LABEL_MAP_COUNTS.items():
            if map_key not in config:
                raise LabelMapError(f"config lacks {map_key}")
            count = config.get(count_key)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise LabelMapError(f"config key {count_key} must be a positive integer, got {count!r}")
            sizes[map_key] = count
        return cls(
            response=HeadLabels(
                risks=parse_risk_map(
                    "response_risk_level_map",
                    config["response_risk_level_map"],
                    sizes["response_risk_level_map"],
                ),
                categories=parse_index_map(
                    "response_category_map", config["response_category_map"], sizes["response_category_map"]
                ),
            ),
            query=HeadLabels(
                risks=parse_risk_map(
                    "query_risk_level_map", config["query_risk_level_map"], sizes["query_risk_level_map"]
                ),
                categories=parse_index_map(
                    "query_category_map", config["query_category_map"], sizes["query_category_map"]
                ),
            ),
        )
