"""Reconnect policy shared by the platform clients: timing, the retry loop, and
how a loss is described."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from websockets.exceptions import WebSocketException


class StaleConnectionError(Exception):
    """The link went silent past its keep-alive: only a new connection can tell it is alive."""


#: What a new connection may cure: the network, the WebSocket layer, a silent server.
CONNECTION_ERRORS = (OSError, WebSocketException, TimeoutError, StaleConnectionError)


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


@dataclass(slots=True)
class Attempt:
    """One try at a connection: the client marks when its link came up, and may
    add fields (a server's url) to the loss it will be logged as."""

    fields: dict[str, object] = field(default_factory=dict)
    up_at: float | None = None

    def up(self) -> None:
        """The link is open: from now on the session counts towards a stable one."""
        self.up_at = time.monotonic()


@dataclass(frozen=True, slots=True)
class Ended:
    """A session that ended without an error: why, and whether to skip the backoff
    (the server asked us to come back)."""

    reason: str
    at_once: bool = False


class OnLost(Protocol):
    """A client's loss handler: log `<platform>.disconnected`, tell the bot if it was up."""

    async def __call__(self, reason: str, **fields: object) -> None: ...


async def reconnecting(
    connect_once: Callable[[Attempt], Awaitable[Ended]],
    on_lost: OnLost,
    backoff: Backoff,
    rand: Callable[[], float],
) -> None:
    """Run `connect_once` again and again until cancelled, reporting each loss to
    `on_lost` with `retry_in_s` and waiting that long; the first try is at once.

    Only a connection error is retried: any other (a refused login) ends the loop
    and is the caller's to handle.
    """
    attempt = 0
    while True:
        this = Attempt()
        at_once = False
        try:
            ended = await connect_once(this)
            reason, at_once = ended.reason, ended.at_once
        except CONNECTION_ERRORS as exc:
            reason = describe(exc)
        lasted = None if this.up_at is None else time.monotonic() - this.up_at
        attempt = 0 if at_once else backoff.next_attempt(attempt, lasted)
        delay = 0.0 if at_once else backoff.delay(attempt - 1, rand())
        await on_lost(reason, **this.fields, retry_in_s=round(delay, 3))
        await asyncio.sleep(delay)


def describe(exc: BaseException) -> str:
    """A one-line reason for `*.disconnected` logs."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
