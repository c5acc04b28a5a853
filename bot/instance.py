"""One bot per panel port and per channel: a second `ishowtts run` is refused at
start, before it reads any chat, instead of reading every line a second time.

The panel's socket is bound before the model loads and handed to the web
server later, so the port is held from the first second. Channels are held by
OS file locks (released by the OS when a process dies, so a crash leaves no
stale lock) in the user's cache folder.
"""

from __future__ import annotations

import errno
import hashlib
import socket
import sys
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

from bot.config import PlatformsConfig, WebConfig


class AlreadyRunning(Exception):
    """Another bot holds this port or channel; `str()` says which and what to do."""


def bind_panel(config: WebConfig) -> socket.socket:
    """A listening socket on the panel's address, or AlreadyRunning / OSError."""
    return bind_port(
        config.host,
        config.port,
        f"web panel port {config.port} on {config.host} is already in use: is another "
        "ishowtts running? Stop it, or set web.port to a free port",
    )


def bind_port(host: str, port: int, in_use: str) -> socket.socket:
    """A listening socket on `host`:`port`; AlreadyRunning (saying `in_use`) where
    another process holds the port, OSError for anything else."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":
            # Windows' SO_REUSEADDR would let a second bot share the port; this refuses it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            # Lets a restarted bot take the port while old connections linger (TIME_WAIT);
            # two live listeners still cannot share it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE or getattr(exc, "winerror", 0) in (
            10048,  # WSAEADDRINUSE
            10013,  # WSAEACCES: held exclusively by another process
        ):
            raise AlreadyRunning(in_use) from None
        raise
    return sock


def lock_dir() -> Path:
    return platformdirs.user_cache_path("ishowtts", appauthor=False) / "locks"


class ChannelLocks:
    """Holds a lock per chat channel this bot reads, until `release()`."""

    def __init__(self, platforms: PlatformsConfig, directory: Path | None = None) -> None:
        self._directory = directory or lock_dir()
        self._names: list[str] = []
        if platforms.twitch.enabled:
            self._names += [f"twitch-{c}" for c in platforms.twitch.channels]
        bilibili = platforms.bilibili
        if bilibili.enabled and bilibili.mode == "open":
            # The room is known only once a session starts: the code stands for it.
            code = bilibili.identity_code.get_secret_value().encode()
            self._names.append(f"bilibili-code-{hashlib.sha256(code).hexdigest()[:12]}")
        elif bilibili.enabled:
            self._names.append(f"bilibili-{bilibili.room_id}")
        self._held: list[FileLock] = []

    def acquire(self) -> None:
        """All or none; AlreadyRunning names the first channel another bot reads."""
        if self._names:
            self._directory.mkdir(parents=True, exist_ok=True)
        for name in self._names:
            lock = FileLock(self._directory / f"{name}.lock", timeout=0, is_singleton=False)
            try:
                lock.acquire()
            except Timeout:
                self.release()
                platform, _, channel = name.partition("-")
                raise AlreadyRunning(
                    f"another ishowtts is already reading {platform} {channel}: stop it first "
                    "(two bots would read every message twice)"
                ) from None
            self._held.append(lock)

    def release(self) -> None:
        for lock in self._held:
            lock.release()
        self._held.clear()
