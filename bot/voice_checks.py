"""Which voices can be used, for the panel's picker and for every voice change.

A voice that is in `voices/` can still be broken (silent, too short, no
transcript): picked, every line in it would be skipped. `VoiceLibrary.get`
says so, but it reads and decodes the files: that is done in a worker thread,
never on the loop and never per status push. Each voice's result is kept with
its files' stamps (sizes, modification times) and checked again only when they
change; `run` looks for changes every `CHECK_EVERY_S`. An engine server's
voices (engine.url) are checked by the server, which lists only those it has:
each is usable here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from bot.remote_engine import RemoteVoices
from engine.voices import VoiceError, VoiceLibrary, files_stamp

log = structlog.get_logger()

#: How often the voices' files are looked at for changes (a stat per file).
CHECK_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class VoiceCheck:
    name: str
    ok: bool
    #: Why it cannot be used ("" when it can), as `VoiceError` says it (without
    #: the "voice 'NAME':" it starts with).
    reason: str = ""


class VoiceChecks:
    """The last check of every voice in the library, in the library's order."""

    def __init__(self, library: VoiceLibrary | RemoteVoices) -> None:
        self._library = library
        self._stamps: dict[str, tuple[object, ...]] = {}
        self.checks: tuple[VoiceCheck, ...] = ()
        #: Set once the first check is done (before that, nothing is refused).
        self.ready = asyncio.Event()

    def problem(self, name: str) -> str | None:
        """Why `name` cannot be used; None when it can, or is not checked yet."""
        for check in self.checks:
            if check.name == name:
                return None if check.ok else check.reason
        return None

    def usable(self) -> list[str]:
        return [c.name for c in self.checks if c.ok]

    async def refresh(self) -> None:
        """Check the voices whose files changed (in a worker thread); broken ones logged."""
        checks, stamps = await asyncio.to_thread(self._check_changed, dict(self._stamps))
        before = {c.name: c for c in self.checks}
        for check in checks:
            if not check.ok and before.get(check.name) != check:
                log.warning("voice.unusable", voice=check.name, reason=check.reason)
        self.checks, self._stamps = checks, stamps
        self.ready.set()

    async def run(self) -> None:
        """Keep the checks current while the bot runs."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a file system gone strange: keep the last checks
                log.exception("voice.check_failed")
            await asyncio.sleep(CHECK_EVERY_S)

    def _check_changed(
        self, stamps: dict[str, tuple[object, ...]]
    ) -> tuple[tuple[VoiceCheck, ...], dict[str, tuple[object, ...]]]:
        if isinstance(self._library, RemoteVoices):
            return tuple(VoiceCheck(name, True) for name in self._library.names()), {}
        old = {c.name: c for c in self.checks}
        checks: list[VoiceCheck] = []
        new: dict[str, tuple[object, ...]] = {}
        for name in self._library.names():
            try:
                stamp = files_stamp(self._library.files(name))
            except (VoiceError, OSError) as exc:
                checks.append(VoiceCheck(name, False, _reason(name, exc)))
                continue
            new[name] = stamp
            if name in old and stamps.get(name) == stamp:
                checks.append(old[name])
                continue
            try:
                self._library.get(name)
            except Exception as exc:  # VoiceError says what to do; anything else is a file's fault
                checks.append(VoiceCheck(name, False, _reason(name, exc)))
            else:
                checks.append(VoiceCheck(name, True))
        return tuple(checks), new


def _reason(name: str, error: Exception) -> str:
    return str(error).removeprefix(f"voice {name!r}: ") or type(error).__name__
