"""Ctrl-C (and the OS's other stop requests) as one asyncio.Event, on every OS.

Unix event loops take signal handlers (`loop.add_signal_handler`); Windows'
loops raise NotImplementedError there, so `signal.signal` handlers hand the
signal to the loop thread-safely instead (the Proactor loop wakes up for
them). The first signal asks for a clean stop and hands the signals back to the
OS: a second one ends the process at once, whatever the bot is doing then (a
stuck device call, a blocked loop), with no Python code in its way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from types import FrameType

import structlog

log = structlog.get_logger()


def stop_signals() -> list[signal.Signals]:
    """SIGINT (Ctrl-C), SIGTERM, and on Windows SIGBREAK (Ctrl-Break, a closed console)."""
    found = [signal.SIGINT, signal.SIGTERM]
    if sys.platform == "win32":
        found.append(signal.SIGBREAK)
    return found


class StopOnSignal:
    """Sets `stop` on the first stop signal; the OS handles the next one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self._loop = loop
        self._stop = stop
        self._on_loop: list[signal.Signals] = []
        self._previous: dict[signal.Signals, object] = {}
        #: "loop" where the event loop took the handlers, "signal" where it could not.
        self.mode = "none"

    def install(self) -> None:
        for sig in stop_signals():
            self._previous[sig] = signal.getsignal(sig)
            try:
                self._loop.add_signal_handler(sig, self.received, sig)
                self._on_loop.append(sig)
            except (NotImplementedError, RuntimeError):
                # Windows' loops have no add_signal_handler.
                signal.signal(sig, self._from_signal_module)
        self.mode = "signal" if len(self._on_loop) < len(self._previous) else "loop"

    def uninstall(self) -> None:
        """Back to how the signals were handled before (asyncio.run restores its own)."""
        self._release()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def _release(self) -> None:
        """The OS's own handling for every stop signal: the next one ends the process."""
        for sig in self._on_loop:
            self._loop.remove_signal_handler(sig)
        self._on_loop.clear()
        for sig in self._previous:
            signal.signal(sig, signal.SIG_DFL)

    def _from_signal_module(self, signum: int, _frame: FrameType | None) -> None:
        self._loop.call_soon_threadsafe(self.received, signal.Signals(signum))

    def received(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            return
        log.info("bot.stopping", signal=sig.name, again="quits at once")
        self._stop.set()
        self._release()
