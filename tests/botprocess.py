"""`ishowtts run` as a subprocess, and its JSON log read as it is written."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


def command(*args: str) -> list[str]:
    """`ishowtts ARGS…` from this checkout (the installed script runs the same
    `bot.cli.console_main`; run from the root, this finds the checkout's code even
    where the environment has another copy installed)."""
    return [sys.executable, "-m", "bot.cli", *args]


class BotProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        #: Lines that were not JSON log events (tracebacks from libraries, warnings).
        self.other: list[str] = []

    @classmethod
    async def start(cls, config: Path, *args: str, argv: list[str] | None = None) -> BotProcess:
        """`ishowtts run --config CONFIG ARGS…`, or `argv` as given."""
        proc = await asyncio.create_subprocess_exec(
            *(argv or command("run", "--config", str(config), *args)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def until(self, event: str, **fields: Any) -> dict[str, Any]:
        """Read the bot's JSON log until an event with these fields appears."""
        for seen in self.events:
            if seen["event"] == event and all(seen.get(k) == v for k, v in fields.items()):
                self.events.remove(seen)
                return seen
        async with asyncio.timeout(TIMEOUT):
            while True:
                assert self.proc.stderr is not None
                line = await self.proc.stderr.readline()
                assert line, f"bot exited before {event} {fields}; last: {self.events[-5:]}"
                if not line.startswith(b"{"):
                    self.other.append(line.decode(errors="replace").rstrip())
                    continue
                record = json.loads(line)
                if record["event"] == event and all(record.get(k) == v for k, v in fields.items()):
                    return record
                self.events.append(record)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        assert self.proc.stderr is not None
        rest = await asyncio.wait_for(self.proc.stderr.read(), TIMEOUT)
        self.events += [json.loads(line) for line in rest.splitlines() if line.startswith(b"{")]
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]
