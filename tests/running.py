"""A platform client running in a test, and the events it has produced."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, TypeVar

from adapters.events import ChatEvent

C = TypeVar("C")
E = TypeVar("E")


@dataclass
class Running(Generic[C]):
    client: C
    events: asyncio.Queue[ChatEvent]
    task: asyncio.Task[None]

    async def next(self, kind: type[E], timeout: float = 5) -> E:
        """The next event of this kind (others are skipped), within `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if isinstance(event, kind):
                    return event
