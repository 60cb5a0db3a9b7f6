"""LagMonitor: warns while verdicts trail their records, at most once per window, and recovers."""

from __future__ import annotations

import logging

import pytest

from workers.moderation.lag import LagMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_warns_once_per_window_while_behind_and_not_when_caught_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    monitor = LagMonitor(warn_s=0.5, window_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="workers.moderation.lag"):
        for _ in range(100):  # keeping up: 20 ms behind
            clock.now += 0.01
            monitor.observe(0.02)
        assert monitor.warnings == 0
        for step in range(300):  # falling behind: the lag grows by 10 ms per verdict
            clock.now += 0.01
            monitor.observe(0.02 + step * 0.01)
        assert monitor.warnings == 1  # 3 s of growing lag: one warning, not one per verdict
        clock.now += 10.0
        monitor.observe(3.5)
        assert monitor.warnings == 2  # still behind a window later: warned again
        for _ in range(2000):  # caught up: the window holds only small lags again
            clock.now += 0.01
            monitor.observe(0.02)
        assert monitor.warnings == 2
    assert "falling behind" in caplog.text and "lag_warn_ms=500" in caplog.text
    assert monitor.recent(50) == pytest.approx(0.02)


def test_empty_window_has_no_percentile() -> None:
    assert LagMonitor(warn_s=1.0).recent(90) is None
