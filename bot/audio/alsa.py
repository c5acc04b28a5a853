"""ALSA's error messages, as log events instead of raw text on stderr.

On Linux, PortAudio plays through ALSA, and ALSA prints recoverable errors
("underrun occurred") straight to file descriptor 2 in several pieces. Those
land in the middle of our JSON log lines and break them for whoever reads the
log. Installing an ALSA error handler routes them into structlog as
`audio.alsa` events. Where there is no libasound (Windows, macOS) this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import structlog

log = structlog.get_logger()

# void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
# The variadic arguments are not read: the format string is the message.
_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_installed: list[Any] = []  # keeps the callback alive as long as ALSA may call it


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def _on_alsa_error(
    file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None
) -> None:
    log.info("audio.alsa", function=_text(function), message=_text(fmt), errno=-err if err else 0)


def route_alsa_errors() -> bool:
    """Install the handler once; False where there is no ALSA library."""
    if _installed:
        return True
    name = ctypes.util.find_library("asound") or "libasound.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return False
    handler = _HANDLER(_on_alsa_error)
    lib.snd_lib_error_set_handler(handler)
    _installed.extend([lib, handler])
    return True
