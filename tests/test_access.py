"""engine/access.py: the refusal log's throttle, shared by the engine server and
the panel (their lockouts and rate limits are tested through them)."""

from __future__ import annotations

from structlog.testing import capture_logs

from engine.access import FREE_FAILURES, MAX_LOCKOUT_S, ThrottledWarnings, WrongTokens


def test_a_refusal_is_logged_once_a_while_per_kind_with_the_count_left_out() -> None:
    now = [0.0]
    warnings = ThrottledWarnings(10.0, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(3):
            warnings.warn("auth", "serve.refused", code="auth")
        warnings.warn("busy", "serve.refused", code="busy")
        now[0] = 10.0
        warnings.warn("auth", "serve.refused", code="auth")
    assert [(e["code"], e["unlogged"]) for e in logs] == [("auth", 0), ("busy", 0), ("auth", 2)]


def test_wrong_tokens_lock_an_address_out_longer_each_time_until_a_right_one() -> None:
    now = [0.0]
    tokens = WrongTokens(clock=lambda: now[0])
    lockouts = [tokens.failed("10.0.0.9")[1] for _ in range(FREE_FAILURES + 2)]
    assert lockouts == [0.0] * (FREE_FAILURES - 1) + [1.0, 2.0, 4.0]
    assert tokens.retry_after("10.0.0.9") == 4.0 and tokens.retry_after("10.0.0.8") == 0.0
    now[0] = 4.0
    assert tokens.retry_after("10.0.0.9") == 0.0
    tokens.succeeded("10.0.0.9")
    assert tokens.failed("10.0.0.9") == (1, 0.0)


def test_an_address_that_never_stops_guessing_waits_the_longest_and_nothing_breaks() -> None:
    tokens = WrongTokens(clock=lambda: 0.0)
    lockouts = [tokens.failed("10.0.0.9")[1] for _ in range(2000)]
    assert lockouts[-1] == MAX_LOCKOUT_S
