"""What the panel's app is given once the engine is warm.

The panel serves from the start of `ishowtts run` (its status says "starting",
with the latest progress line); the speaker, the engine and the player's
browser audio are attached when they exist. One object, changed in place: the
app's own state is frozen once it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.audio.browser import Broadcast
    from bot.audio.speaker import Speaker
    from bot.remote_engine import RemoteEngine
    from engine.synth import Engine


@dataclass
class Parts:
    speaker: Speaker | None = None
    engine: Engine | RemoteEngine | None = None
    #: The player's broadcast, for the overlay's `?audio=1`.
    audio: Broadcast | None = None
    progress: str = ""


PARTS_KEY: web.AppKey[Parts] = web.AppKey("parts", Parts)
