"""The terminal outcomes: every chat message that enters ends in exactly one.

Their event names and fields are an interface: tests, the soak harness and
operators count them.
"""

from __future__ import annotations

from typing import Final

import structlog

from adapters.events import ChatMessage

SPOKEN: Final = "tts.spoken"
SKIPPED: Final = "tts.skipped"
RETRACTED: Final = "tts.retracted"
EXPIRED: Final = "tts.expired"
FILTERED: Final = "tts.filtered"
OVERFLOW: Final = "tts.overflow"

TERMINAL_EVENTS: Final = frozenset({SPOKEN, SKIPPED, RETRACTED, EXPIRED, FILTERED, OVERFLOW})

_log = structlog.get_logger()


def log_outcome(event: str, message: ChatMessage, **fields: object) -> None:
    """Log a message's one terminal event, keyed by its id and platform."""
    _log.info(
        event,
        msg_id=message.message_id,
        platform=message.platform.value,
        user=message.user_name,
        **fields,
    )
