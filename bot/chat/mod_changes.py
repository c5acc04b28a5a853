"""What moderators change from chat that must survive a restart: per-user voices,
nicknames, mutes, keyed by account (see `bot.chat.users`). A small JSON file.

A damaged file is moved aside, never overwritten; writes are atomic and synced
to disk, and `StateWriter` coalesces them off the event loop, since a command
flood would otherwise write the whole file once per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bot.chat.users import UserKey, key_text, parse_key, user_handle

log = structlog.get_logger()

VERSION = 2
#: Most entries kept per map; the oldest go first (a nick flood cannot grow the file).
MAX_ENTRIES = 10_000
#: Least time between two writes of the file.
WRITE_INTERVAL_S = 1.0


@dataclass
class ByName:
    """Entries from the old name-keyed file, waiting for an account with that name."""

    muted: dict[str, None] = field(default_factory=dict)
    nicknames: dict[str, str] = field(default_factory=dict)
    user_voices: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.muted) + len(self.nicknames) + len(self.user_voices)


@dataclass
class SavedState:
    #: Muted accounts → their name when muted.
    muted: dict[UserKey, str] = field(default_factory=dict)
    nicknames: dict[UserKey, str] = field(default_factory=dict)
    user_voices: dict[UserKey, str] = field(default_factory=dict)
    #: Last seen name of each account above, so commands can name them after a restart.
    names: dict[UserKey, str] = field(default_factory=dict)
    by_name: ByName = field(default_factory=ByName)
    #: Loaded from an older format (or capped): write it back in this one.
    rewrite: bool = False


def cap_entries(entries: dict[Any, Any], what: str) -> int:
    """Drop the oldest entries past `MAX_ENTRIES`, logged; the count dropped."""
    extra = len(entries) - MAX_ENTRIES
    if extra <= 0:
        return 0
    for key in list(itertools.islice(entries, extra)):
        del entries[key]
    log.warning("state.capped", map=what, dropped=extra, limit=MAX_ENTRIES)
    return extra


def load_state(path: Path) -> SavedState:
    """The saved state, or an empty one; a damaged file is moved aside and logged."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedState()
    except OSError as exc:
        log.warning("state.unreadable", path=str(path), error=str(exc))
        return SavedState()
    except ValueError as exc:
        _move_aside(path, str(exc))
        return SavedState()
    if not isinstance(raw, dict):
        _move_aside(path, "not a JSON object")
        return SavedState()
    version = raw.get("version")
    if version not in (None, VERSION):
        _move_aside(path, f"unknown version {version!r}")
        return SavedState()
    state = _parse_v2(raw) if version == VERSION else _parse_v1(raw)
    if version is None:
        log.info("state.migrated", path=str(path), pending_by_name=len(state.by_name))
        state.rewrite = True
    for what, entries in (
        ("muted", state.muted),
        ("nicknames", state.nicknames),
        ("user_voices", state.user_voices),
        ("by_name.muted", state.by_name.muted),
        ("by_name.nicknames", state.by_name.nicknames),
        ("by_name.user_voices", state.by_name.user_voices),
    ):
        if cap_entries(entries, what):
            state.rewrite = True
    return state


def _move_aside(path: Path, error: str) -> None:
    """Keep a damaged file for the user to inspect, so the next write cannot destroy it."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.error("state.corrupt", path=str(path), moved_to=None, error=f"{error}; {exc}")
        return
    log.error("state.corrupt", path=str(path), moved_to=str(aside), error=error)


def _strings(raw: dict[str, Any], name: str) -> dict[str, str]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def _keyed(values: dict[str, str]) -> dict[UserKey, str]:
    keyed = {}
    for text, value in values.items():
        key = parse_key(text)
        if key is not None:
            keyed[key] = value
    return keyed


def _parse_v1(raw: dict[str, Any]) -> SavedState:
    """The old file keyed everything by name: keep it, waiting for that name in chat."""
    muted = raw.get("muted", [])
    by_name = ByName(
        muted={user_handle(str(m)): None for m in muted} if isinstance(muted, list) else {},
        nicknames={user_handle(k): v for k, v in _strings(raw, "nicknames").items()},
        user_voices={user_handle(k): v for k, v in _strings(raw, "user_voices").items()},
    )
    by_name.muted.pop("", None)
    by_name.nicknames.pop("", None)
    by_name.user_voices.pop("", None)
    return SavedState(by_name=by_name)


def _parse_v2(raw: dict[str, Any]) -> SavedState:
    pending = raw.get("by_name")
    pending = pending if isinstance(pending, dict) else {}
    muted = pending.get("muted", [])
    return SavedState(
        muted=_keyed(_strings(raw, "muted")),
        nicknames=_keyed(_strings(raw, "nicknames")),
        user_voices=_keyed(_strings(raw, "user_voices")),
        names=_keyed(_strings(raw, "names")),
        by_name=ByName(
            muted={str(m): None for m in muted} if isinstance(muted, list) else {},
            nicknames=_strings(pending, "nicknames"),
            user_voices=_strings(pending, "user_voices"),
        ),
    )


def encode_state(state: SavedState) -> str:
    names = {key_text(k): v for k, v in state.names.items()}
    doc = {
        "version": VERSION,
        "muted": {key_text(k): v for k, v in state.muted.items()},
        "nicknames": {key_text(k): v for k, v in state.nicknames.items()},
        "user_voices": {key_text(k): v for k, v in state.user_voices.items()},
        "names": names,
        "by_name": {
            "muted": list(state.by_name.muted),
            "nicknames": state.by_name.nicknames,
            "user_voices": state.by_name.user_voices,
        },
    }
    return json.dumps(doc, ensure_ascii=False, indent=1)


def save_state(path: Path, text: str) -> None:
    """Write atomically (temp file + rename) and sync it, so a crash leaves the old or new file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if os.name != "nt":  # Windows cannot open a folder to sync it
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        log.warning("state.save_failed", path=str(path), error=str(exc))


class StateWriter:
    """Coalesces saves: a change marks the state dirty; while an event loop runs, it is
    written at most once per interval, encoded and written in a thread (at once, in
    the caller, when no loop runs). The snapshot is taken on the caller's thread."""

    def __init__(
        self,
        path: Path,
        snapshot: Callable[[], SavedState],
        interval_s: float = WRITE_INTERVAL_S,
    ) -> None:
        self.path = path
        self._snapshot = snapshot
        self._interval_s = interval_s
        self._dirty = False
        self._lock = threading.Lock()
        #: Snapshots are numbered so a slow older write never replaces a newer one.
        self._taken = 0
        self._written = 0
        self._task: asyncio.Task[None] | None = None

    def save(self) -> None:
        """Mark the state changed."""
        self._dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def flush(self) -> None:
        """Write a pending change now, in the caller (blocking)."""
        taken = self._take()
        if taken is not None:
            self._write(*taken)

    async def close(self) -> None:
        """Stop the timer and write a pending change; call before the loop ends."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        taken = self._take()
        if taken is not None:
            await asyncio.to_thread(self._write, *taken)

    def _take(self) -> tuple[int, SavedState] | None:
        if not self._dirty:
            return None
        self._dirty = False
        self._taken += 1
        return self._taken, self._snapshot()

    def _write(self, number: int, saved: SavedState) -> None:
        with self._lock:
            if number > self._written:
                save_state(self.path, encode_state(saved))
                self._written = number

    async def _run(self) -> None:
        while (taken := self._take()) is not None:
            await asyncio.to_thread(self._write, *taken)
            await asyncio.sleep(self._interval_s)
