"""Event-loop lag: how late the loop wakes a sleeper, the bot's responsiveness.

Everything live (chat in, skips, the panel, feeding the audio device) runs on
one event loop, so a blocking call anywhere shows up here first. The probe
logs `loop.lag` every `report_s` (percentiles for the last window and since
start, final=True once at shutdown) and `loop.blocked` for any single wake-up
later than `blocked_ms`.
"""

from __future__ import annotations

import asyncio
import time

import structlog

log = structlog.get_logger()

#: Lags are counted in 0.1 ms bins up to 2 s; anything later lands in the last bin
#: (and in max_ms, which is exact).
_BIN_MS = 0.1
_BINS = 20_000


class LagHistogram:
    """Counts of lags, fine enough that p99 is read to 0.1 ms."""

    def __init__(self) -> None:
        self.counts = [0] * (_BINS + 1)
        self.samples = 0
        self.max_ms = 0.0

    def add(self, lag_ms: float) -> None:
        self.counts[min(int(max(lag_ms, 0.0) / _BIN_MS), _BINS)] += 1
        self.samples += 1
        self.max_ms = max(self.max_ms, lag_ms)

    def percentile(self, q: float) -> float:
        """The upper edge of the bin holding the q-th percentile (0 with no samples)."""
        if not self.samples:
            return 0.0
        rank = q / 100 * self.samples
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                if index == _BINS:
                    return self.max_ms
                return min(round((index + 1) * _BIN_MS, 1), self.max_ms)
        return self.max_ms

    def summary(self, prefix: str = "") -> dict[str, float | int]:
        return {
            f"{prefix}p50_ms": round(self.percentile(50), 1),
            f"{prefix}p99_ms": round(self.percentile(99), 1),
            f"{prefix}max_ms": round(self.max_ms, 1),
            f"{prefix}samples": self.samples,
        }


class LagProbe:
    def __init__(
        self, interval_s: float = 0.05, report_s: float = 10.0, blocked_ms: float = 250.0
    ) -> None:
        self.interval_s = interval_s
        self.report_s = report_s
        self.blocked_ms = blocked_ms
        self.total = LagHistogram()
        self.window = LagHistogram()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reported = time.monotonic()
        try:
            while True:
                planned = loop.time() + self.interval_s
                await asyncio.sleep(self.interval_s)
                lag_ms = (loop.time() - planned) * 1000
                self.total.add(lag_ms)
                self.window.add(lag_ms)
                if lag_ms >= self.blocked_ms:
                    log.warning("loop.blocked", lag_ms=round(lag_ms, 1))
                if time.monotonic() - reported >= self.report_s:
                    self.report()
                    reported = time.monotonic()
        finally:
            self.report(final=True)

    def report(self, final: bool = False) -> None:
        log.info("loop.lag", final=final, **self.window.summary(), **self.total.summary("total_"))
        self.window = LagHistogram()
