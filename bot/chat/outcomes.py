"""The terminal outcomes: every chat message that enters ends in exactly one.

Their event names and fields are an interface: tests, the soak harness and
operators count them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import structlog

from adapters.events import ChatMessage

SPOKEN: Final = "tts.spoken"
SKIPPED: Final = "tts.skipped"
RETRACTED: Final = "tts.retracted"
EXPIRED: Final = "tts.expired"
FILTERED: Final = "tts.filtered"
OVERFLOW: Final = "tts.overflow"
#: A gift folded into another of the same combo (`into`: the id read for both).
MERGED: Final = "tts.merged"

TERMINAL_EVENTS: Final = frozenset(
    {SPOKEN, SKIPPED, RETRACTED, EXPIRED, FILTERED, OVERFLOW, MERGED}
)

_log = structlog.get_logger()

#: Called with (event, message, fields) after each terminal event: metrics and
#: the web panel's feed listen here rather than parse logs.
Listener = Callable[[str, ChatMessage, dict[str, Any]], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def log_outcome(event: str, message: ChatMessage, **fields: Any) -> None:
    """Log a message's one terminal event, keyed by its id and platform."""
    _log.info(
        event,
        msg_id=message.message_id,
        platform=message.platform.value,
        user=message.user_name,
        **fields,
    )
    for listener in list(_listeners):
        try:
            listener(event, message, fields)
        except Exception:
            _log.exception("outcomes.listener_error")
