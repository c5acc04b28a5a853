"""Builders for test events."""

from __future__ import annotations

import itertools
import time
from typing import Any

from adapters.events import ChatMessage, Platform

_ids = itertools.count(1)


def chat(text: str = "hello there", **fields: Any) -> ChatMessage:
    """A Twitch chat message with unique ids; override any field."""
    n = next(_ids)
    base: dict[str, Any] = {
        "platform": Platform.TWITCH,
        "channel": "streamer",
        "message_id": f"m{n}",
        "user_id": f"u{n}",
        "user_name": f"viewer{n}",
        "text": text,
        "received": time.monotonic(),
    }
    base.update(fields)
    return ChatMessage(**base)
