from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from bot.lag import LagHistogram, LagProbe


def test_percentiles_are_read_to_a_tenth_of_a_millisecond() -> None:
    h = LagHistogram()
    for value in [1.0] * 98 + [15.0, 400.0]:
        h.add(value)
    assert h.percentile(50) == 1.1
    assert h.percentile(99) == 15.1
    assert h.percentile(100) == 400.0
    assert h.summary("x_") == {
        "x_p50_ms": 1.1,
        "x_p99_ms": 15.1,
        "x_max_ms": 400.0,
        "x_samples": 100,
    }


def test_lags_past_the_last_bin_keep_an_exact_max() -> None:
    h = LagHistogram()
    h.add(5000.0)
    h.add(-0.3)  # a timer that fired a hair early counts as on time
    assert h.percentile(99) == 5000.0 and h.percentile(50) == 0.1
    assert LagHistogram().percentile(99) == 0.0


async def test_probe_reports_a_blocked_loop_and_a_final_summary() -> None:
    probe = LagProbe(interval_s=0.01, report_s=0.3, blocked_ms=50)
    with capture_logs() as logs:
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.1)
        time.sleep(0.12)  # noqa: ASYNC251 - the kind of call that must never run on a loop
        await asyncio.sleep(0.4)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (blocked,) = [e for e in logs if e["event"] == "loop.blocked"]
    assert blocked["lag_ms"] >= 100
    reports = [e for e in logs if e["event"] == "loop.lag"]
    assert len(reports) >= 2 and reports[-1]["final"] is True
    assert not any(r["final"] for r in reports[:-1])
    assert reports[-1]["total_max_ms"] >= 100
    assert reports[-1]["total_samples"] == sum(r["samples"] for r in reports)
    assert reports[-1]["total_p50_ms"] < 50
