"""A sliding-window send budget (Twitch: 20 chat lines per 30 s)."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._sent: deque[float] = deque()

    def wait_s(self, now: float) -> float:
        """How long to wait before the next send is within budget (0: send now)."""
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window_s - now

    def record(self, now: float) -> None:
        self._sent.append(now)
