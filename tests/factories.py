"""Builders for test events."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from adapters.events import ChatMessage, Platform
from bot.chat.policy import SpeakableItem

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


class RecordingSpeaker:
    """A speaker side for Control that records cuts (`cut` answers `playing`)."""

    def __init__(self, playing: bool = True) -> None:
        self.cuts: list[tuple[Sequence[SpeakableItem] | None, str]] = []
        self.playing = playing

    def cut(self, items: Sequence[SpeakableItem] | None, outcome: str) -> bool:
        self.cuts.append((items, outcome))
        return self.playing

    def follow_controls(self) -> None:
        pass
