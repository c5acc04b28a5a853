"""Who may come in, per client address, for the servers that take requests from a
network: the engine server (engine/serve.py) and the bot's panel
(bot/panel/web.py). Each has its own instances; the rules are the same.

- `RateLimiter`: a token bucket of requests per address.
- `WrongTokens`: wrong tokens per address; after a few the address is locked out
  for longer each time, and a guess made while locked out is not even checked.
- `ThrottledWarnings`: refusals logged at most every so often per kind, with how
  many went unlogged since (a hostile client can cause very many).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger()

#: Client addresses remembered (the oldest are forgotten first).
MAX_TRACKED = 4096
#: Wrong tokens an address may give before it must wait; each one after doubles the wait.
FREE_FAILURES = 5
MAX_LOCKOUT_S = 300.0


class RateLimiter:
    """A token bucket per key (a client address): `per_minute` tokens a minute, at
    most `burst` saved up."""

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)

    def _tokens(self, key: str) -> float:
        tokens, at = self._buckets.get(key, (self.burst, self.clock()))
        return min(self.burst, tokens + (self.clock() - at) * self.rate)

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `key` has `cost` tokens (0: now); spends nothing."""
        missing = cost - self._tokens(key)
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend `cost` tokens: 0.0 when there were enough, else the seconds to wait
        (nothing is spent then)."""
        tokens = self._tokens(key)
        if tokens < cost:
            return (cost - tokens) / self.rate
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens - cost, self.clock())
        while len(self._buckets) > MAX_TRACKED:
            del self._buckets[next(iter(self._buckets))]
        return 0.0


class WrongTokens:
    """Wrong tokens per client address: the first `FREE_FAILURES` - 1 cost nothing,
    then the address is locked out for 1 s, 2 s, 4 s… (at most `MAX_LOCKOUT_S`); a
    right token clears its count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failed: dict[str, tuple[int, float]] = {}  # address → (failures, locked until)

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again (0: now)."""
        _, until = self._failed.get(address, (0, 0.0))
        return max(0.0, until - self.clock())

    def failed(self, address: str) -> tuple[int, float]:
        """Count a wrong token; returns the failures so far and the lockout it earned."""
        failures = self._failed.pop(address, (0, 0.0))[0] + 1
        lockout = 0.0
        if failures >= FREE_FAILURES:
            # The exponent capped: past the cap the wait is the longest anyway.
            lockout = min(2.0 ** min(failures - FREE_FAILURES, 30), MAX_LOCKOUT_S)
        self._failed[address] = (failures, self.clock() + lockout)
        while len(self._failed) > MAX_TRACKED:
            del self._failed[next(iter(self._failed))]
        return failures, lockout

    def succeeded(self, address: str) -> None:
        self._failed.pop(address, None)


class ThrottledWarnings:
    """`log.warning(event, **fields)` at most every `every_s` per key, the first
    of each time with `unlogged`: how many were left out since."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def warn(self, key: str, event: str, **fields: object) -> None:
        now = self.clock()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return
        self._last[key] = now
        log.warning(event, **fields, unlogged=self._unlogged.pop(key, 0))
