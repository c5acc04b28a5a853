from __future__ import annotations

import pytest

from adapters.ratelimit import SlidingWindow
from adapters.reconnect import Attempt, Backoff, Ended, StaleConnectionError, reconnecting


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


TINY = Backoff(base_s=0.002, cap_s=0.008, jitter_s=0.0, stable_s=60)


class Script:
    """A connect_once that plays one outcome a try, and the losses reported to it."""

    def __init__(self, *outcomes: Ended | BaseException, stable: bool = False) -> None:
        self.outcomes = list(outcomes)
        self.stable = stable
        self.lost: list[tuple[str, dict[str, object]]] = []

    async def connect_once(self, attempt: Attempt) -> Ended:
        attempt.fields["url"] = f"ws://try-{len(self.lost)}"
        outcome = self.outcomes.pop(0)
        if self.stable:
            attempt.up()
            assert attempt.up_at is not None
            attempt.up_at -= 61  # as if the session had lasted past stable_s
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def on_lost(self, reason: str, **fields: object) -> None:
        self.lost.append((reason, fields))


async def test_reconnecting_backs_off_on_connection_errors_and_reports_each_loss() -> None:
    script = Script(
        OSError("refused"), StaleConnectionError("no data"), Ended("closed"), ValueError("bug")
    )
    with pytest.raises(ValueError, match="bug"):  # not a connection error: not retried
        await reconnecting(script.connect_once, script.on_lost, TINY, lambda: 0.0)
    assert script.lost == [
        ("OSError: refused", {"url": "ws://try-0", "retry_in_s": 0.002}),
        ("StaleConnectionError: no data", {"url": "ws://try-1", "retry_in_s": 0.004}),
        ("closed", {"url": "ws://try-2", "retry_in_s": 0.008}),
    ]


async def test_reconnecting_at_once_and_after_a_stable_session_starts_over() -> None:
    script = Script(OSError(), OSError(), Ended("asked", at_once=True), OSError(), KeyError())
    with pytest.raises(KeyError):
        await reconnecting(script.connect_once, script.on_lost, TINY, lambda: 0.0)
    assert [f["retry_in_s"] for _, f in script.lost] == [0.002, 0.004, 0.0, 0.002]

    stable = Script(OSError(), OSError(), KeyError(), stable=True)
    with pytest.raises(KeyError):
        await reconnecting(stable.connect_once, stable.on_lost, TINY, lambda: 0.0)
    # The counter starts over after each stable session: no growth.
    assert [f["retry_in_s"] for _, f in stable.lost] == [0.001, 0.001]
