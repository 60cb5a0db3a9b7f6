"""Verdict lag: how far this worker's verdicts trail the records they answer, and saying so.

The lag of a verdict is the time from the record's Kafka timestamp (when the producer published
it) to the verdict's publication, so it includes the time the record waited in Kafka before this
worker took it, which a worker that cannot keep up grows without bound. ``LagMonitor`` keeps the
lags of a sliding window and logs a warning, at most once per window, while the window's p90 is
above ``warn_s``: a platform should then add partitions and workers, move the worker to a GPU, or
use a smaller guard (``docs/benchmarks.md`` gives the measured capacity of each). The lag is also
exported as a metric (``Sensor.on_lag``). It relies on the producer's and the worker's clocks
agreeing (NTP); a record without a timestamp is not counted.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)

CHECK_S = 0.5
"""How often, at most, the window's p90 is compared with ``warn_s``."""


class LagMonitor:
    """Sliding window of verdict lags; warns while the worker falls behind."""

    def __init__(self, *, warn_s: float, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.warn_s = warn_s
        self.window_s = window_s
        self._clock = clock
        self._lags: collections.deque[tuple[float, float]] = collections.deque()
        self._warned_at: float | None = None
        self._checked_at: float | None = None
        self.warnings = 0

    def observe(self, lag_s: float) -> None:
        now = self._clock()
        self._lags.append((now, lag_s))
        while self._lags and self._lags[0][0] < now - self.window_s:
            self._lags.popleft()
        if self._warned_at is not None and now - self._warned_at < self.window_s:
            return
        # Every verdict is observed, on the event loop: the window's percentile is computed at most
        # once per CHECK_S, not per verdict.
        if self._checked_at is not None and now - self._checked_at < CHECK_S:
            return
        self._checked_at = now
        p90 = self.recent(90)
        if p90 is not None and p90 > self.warn_s:
            self._warned_at = now
            self.warnings += 1
            logger.warning(
                "falling behind: over the last %.0f s verdicts trailed their records by %.0f ms (p50) / %.0f ms "
                "(p90) / %.0f ms (max), above worker.lag_warn_ms=%.0f; add partitions and workers, run the "
                "worker on a GPU, or use a smaller guard (docs/benchmarks.md)",
                self.window_s,
                (self.recent(50) or 0.0) * 1000,
                p90 * 1000,
                max(lag for _, lag in self._lags) * 1000,
                self.warn_s * 1000,
            )

    def recent(self, percentile: float) -> float | None:
        """The given percentile of the window's lags (seconds), or None when it is empty."""
        if not self._lags:
            return None
        return float(np.percentile([lag for _, lag in self._lags], percentile))
