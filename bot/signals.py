"""Ctrl-C (and the OS's other stop requests) as one asyncio.Event, on every OS.

Unix event loops take signal handlers (`loop.add_signal_handler`); Windows'
loops raise NotImplementedError there, so `signal.signal` handlers hand the
signal to the loop thread-safely instead (the Proactor loop wakes up for
them). The first signal asks for a clean stop; a second one means the person
is done waiting, and the process exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import structlog

from bot.logs import flush_logs

log = structlog.get_logger()

#: 128 + SIGINT: what shells report for a program stopped by Ctrl-C.
EXIT_FORCED = 130


def stop_signals() -> list[signal.Signals]:
    """SIGINT (Ctrl-C), SIGTERM, and on Windows SIGBREAK (Ctrl-Break, a closed console)."""
    found = [signal.SIGINT, signal.SIGTERM]
    if sys.platform == "win32":
        found.append(signal.SIGBREAK)
    return found


class StopOnSignal:
    """Sets `stop` on the first stop signal; exits the process on the second."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stop: asyncio.Event,
        exit_now: Callable[[int], object] = os._exit,
    ) -> None:
        self._loop = loop
        self._stop = stop
        self._exit_now = exit_now
        self._on_loop: list[signal.Signals] = []
        self._previous: dict[signal.Signals, object] = {}
        #: "loop" where the event loop took the handlers, "signal" where it could not.
        self.mode = "none"

    def install(self) -> None:
        for sig in stop_signals():
            try:
                self._loop.add_signal_handler(sig, self.received, sig)
                self._on_loop.append(sig)
            except (NotImplementedError, RuntimeError):
                # Windows' loops have no add_signal_handler.
                self._previous[sig] = signal.signal(sig, self._from_signal_module)
        self.mode = "signal" if self._previous else "loop"

    def uninstall(self) -> None:
        """Back to how the signals were handled before (asyncio.run restores its own)."""
        for sig in self._on_loop:
            self._loop.remove_signal_handler(sig)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._on_loop.clear()
        self._previous.clear()

    def _from_signal_module(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self._stop.is_set():
            # The loop may be what is stuck: exit from here, not via the loop.
            self.received(sig)
            return
        self._loop.call_soon_threadsafe(self.received, sig)

    def received(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("bot.stopping", signal=sig.name)
            self._stop.set()
            return
        log.warning("bot.stopped_at_once", signal=sig.name)
        flush_logs(timeout=0.5)
        self._exit_now(EXIT_FORCED)
