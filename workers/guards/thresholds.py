"""When the prefilter decides alone, and how the two thresholds are chosen.

Rule (applied to a validation split carved from the training data, never to an evaluation set):

* ``unsafe`` is the smallest t >= 0.5 such that at most ``max_block_fpr`` of the validation
  prompts that are not unsafe (safe or controversial) have P(unsafe) >= t. Blocking there costs
  few false positives.
* ``safe`` is the smallest t >= 0.5 such that at most ``max_allow_leak`` of the validation prompts
  that are not safe (unsafe or controversial) have P(safe) >= t. Allowing there lets little through.

Everything else escalates. Both thresholds are at least 0.5, so a decision always agrees with the
argmax of the three probabilities under either policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from topics.events import Risk
from workers.backends.prefilter_meta import SAFE_COLUMN, UNSAFE_COLUMN, Thresholds

if TYPE_CHECKING:
    import numpy.typing as npt

FLOOR = 0.5


def smallest_threshold(scores: npt.NDArray[np.float32], wrong: npt.NDArray[np.bool_], max_rate: float) -> float:
    """Smallest t >= 0.5 with ``mean(scores[wrong] >= t) <= max_rate``, among t in the scores.

    Returns a value above every score (decide nothing) when no such t exists or nothing is wrong-able.
    """
    negatives = np.sort(scores[wrong])[::-1]
    if negatives.size == 0:
        return FLOOR
    allowed = int(np.floor(max_rate * negatives.size))  # this many wrong ones may pass
    if allowed >= negatives.size:
        return FLOOR
    # Passing exactly ``allowed`` wrong ones: t must be above the (allowed+1)-th highest wrong score.
    limit = float(negatives[allowed])
    above = scores[scores > limit]
    candidate = float(above.min()) if above.size else float(np.nextafter(np.float32(limit), np.float32(2.0)))
    return max(FLOOR, candidate)


def select_thresholds(
    risk: npt.NDArray[np.float32],
    labels: list[Risk],
    *,
    max_block_fpr: float,
    max_allow_leak: float,
) -> Thresholds:
    """Apply the module's rule to validation probabilities ``risk`` ([n, 3], ``RISK_ORDER``)."""
    gold = np.array([label.value for label in labels])
    unsafe = smallest_threshold(risk[:, UNSAFE_COLUMN], gold != Risk.UNSAFE.value, max_block_fpr)
    safe = smallest_threshold(risk[:, SAFE_COLUMN], gold != Risk.SAFE.value, max_allow_leak)
    rule = (
        f"on the validation split of the training data: block when P(unsafe) >= the smallest t >= 0.5 "
        f"that blocks at most {max_block_fpr:.1%} of non-unsafe prompts; allow when P(safe) >= the "
        f"smallest t >= 0.5 that allows at most {max_allow_leak:.1%} of non-safe prompts; escalate the rest"
    )
    return Thresholds(unsafe=unsafe, safe=safe, rule=rule)
