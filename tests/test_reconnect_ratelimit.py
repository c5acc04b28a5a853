from __future__ import annotations

from adapters.ratelimit import SlidingWindow
from adapters.reconnect import Backoff


def test_backoff_doubles_caps_and_jitters() -> None:
    b = Backoff(base_s=1, cap_s=60, jitter_s=1)
    assert [b.delay(n, 0.0) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.delay(0, 0.5) == 1.5
    assert b.delay(10_000, 0.999) < 61  # no overflow on a very long outage


def test_backoff_resets_only_after_a_stable_session() -> None:
    b = Backoff(stable_s=60)
    assert b.next_attempt(5, None) == 6  # never connected
    assert b.next_attempt(5, 2.0) == 6  # accepted then kicked: no hot loop
    assert b.next_attempt(5, 61.0) == 0


def test_sliding_window() -> None:
    w = SlidingWindow(limit=2, window_s=30)
    assert w.wait_s(0) == 0
    w.record(0)
    w.record(1)
    assert w.wait_s(2) == 28
    assert w.wait_s(29.5) == 0.5
    assert w.wait_s(30) == 0  # the send at 0 has left the window
    w.record(30)
    assert w.wait_s(30) == 1  # sends at 1 and 30 fill it until 31
