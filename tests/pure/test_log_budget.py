"""Refusal log lines under a flood: a burst per window, then a count of what was dropped."""

from __future__ import annotations

import logging

import pytest

from voicecall_trio.log_budget import LogBudget


def test_a_flood_logs_a_burst_then_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    budget = LogBudget(logging.getLogger("t.budget"), every_s=60, burst=3,
                       clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t.budget"):
        for i in range(1000):
            budget("refused %d", i)
        assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1",
                                                             "refused 2"]
        now[0] = 61.0
        budget("refused %d", 1000)
    last = caplog.records[-1].getMessage()
    assert last == "refused 1000 (997 like it not logged in the last 60 s)"
    assert len(caplog.records) == 4
