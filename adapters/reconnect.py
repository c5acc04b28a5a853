"""Reconnect policy shared by the platform clients: timing, and how a loss is described."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, capped; reset once a session proved stable.

    The reset waits for a stable session rather than a mere connect, so a
    server that accepts and at once kicks us cannot make us hot-loop.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter_s: float = 1.0
    stable_s: float = 60.0

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before try number `attempt` (0-based); `rand` in [0, 1)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32)) + self.jitter_s * rand

    def next_attempt(self, attempt: int, session_s: float | None) -> int:
        """The attempt counter after a session that lasted `session_s` (None: never connected)."""
        if session_s is not None and session_s >= self.stable_s:
            return 0
        return attempt + 1


def describe(exc: BaseException) -> str:
    """A one-line reason for `*.disconnected` logs."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
