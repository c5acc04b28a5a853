"""The speech queue: priority order with ageing, a hard bound, a time-to-live,
and retraction. Every item that leaves it other than by `get` gets its one
terminal log event here; items handed out are the speaker's to finish.

The queue is a plain dict scanned per operation: it is bounded (`max_size`,
at most 10,000), and ageing plus retraction by user make a heap's invariants
cost more code than the scan costs time. One viewer holds at most
`max_per_user` items, so a flood cannot take every turn.

Pacing (bot/chat/pacing.py) changes two things here: a free chat line past
`stale_after_s` expires early (`tts.expired`, reason "stale"), and while busy
free chat is read newest first within a level (by each viewer's first waiting
line, so a viewer's own lines keep their order).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from adapters.events import Platform
from bot.chat import outcomes
from bot.chat.pacing import Pace, Pacer, is_free_chat
from bot.chat.policy import PRIVILEGED_ROLES, SpeakableItem
from bot.chat.users import same_account
from bot.config import QueueConfig

log = structlog.get_logger()

Key = tuple[Platform, str]


@dataclass(frozen=True, slots=True)
class RetractResult:
    #: Pending items removed (each logged as `tts.retracted`).
    removed: tuple[SpeakableItem, ...]
    #: Items already handed to the speaker (playing or being prepared) that
    #: match: the speaker must cut them and log their end.
    in_flight: tuple[SpeakableItem, ...]


@dataclass(slots=True)
class _Entry:
    item: SpeakableItem
    seq: int
    #: Set by `move_to_front`: ahead of every entry without one, the latest first.
    front: int = 0


def _by_seq(pair: tuple[SpeakableItem, int]) -> int:
    return pair[1]


class SpeechQueue:
    def __init__(self, config: QueueConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._in_flight: dict[Key, SpeakableItem] = {}
        self._seq = 0
        self._front = 0
        self._ready = asyncio.Event()
        self.pacer = Pacer(config.pacing)

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, item: SpeakableItem) -> bool:
        """Add an item; False when it was not kept (duplicate or overflow, both logged)."""
        if item.key in self._entries or item.key in self._in_flight:
            outcomes.log_outcome(outcomes.FILTERED, item.message, reason="duplicate")
            return False
        if not self._within_user_cap(item):
            return False
        if len(self._entries) >= self.config.max_size:
            self.expire()
        if len(self._entries) >= self.config.max_size:
            victim = self._overflow_victim(item)
            fields = {"reason": "queue_full", "max_size": self.config.max_size}
            if victim is item:
                outcomes.log_outcome(outcomes.OVERFLOW, item.message, **fields)
                return False
            del self._entries[victim.key]
            outcomes.log_outcome(outcomes.OVERFLOW, victim.message, **fields)
        self._seq += 1
        self._entries[item.key] = _Entry(item, self._seq)
        self._ready.set()
        return True

    def _within_user_cap(self, item: SpeakableItem) -> bool:
        """Whether the sender may add one more; at the cap the new item is refused (so
        their lines keep their turn in order) unless it outranks one of their own."""
        cap = self.config.max_per_user
        if cap <= 0 or item.message.roles & PRIVILEGED_ROLES:
            return True
        user = item.message.user_key
        own = [e for e in self._entries.values() if e.item.message.user_key == user]
        if len(own) < cap:
            return True
        fields = {"reason": "user_cap", "max_per_user": cap}
        lowest = min(own, key=lambda e: (e.item.priority, -e.seq))
        if item.priority <= lowest.item.priority:
            outcomes.log_outcome(outcomes.OVERFLOW, item.message, **fields)
            return False
        del self._entries[lowest.item.key]
        outcomes.log_outcome(outcomes.OVERFLOW, lowest.item.message, **fields)
        return True

    def _overflow_victim(self, item: SpeakableItem) -> SpeakableItem:
        """Among the lowest priority, the newest item of whoever has the most waiting
        (the incoming item counts): a flood loses its own lines, not others' turns."""
        candidates = [(e.item, e.seq) for e in self._entries.values()]
        candidates.append((item, self._seq + 1))
        low = min(i.priority for i, _ in candidates)
        at_low = [(i, seq) for i, seq in candidates if i.priority == low]
        counts = Counter(i.message.user_key for i, _ in at_low)
        newest = {i.message.user_key: seq for i, seq in at_low}
        user = max(counts, key=lambda u: (counts[u], newest[u]))
        return max(((i, seq) for i, seq in at_low if i.message.user_key == user), key=_by_seq)[0]

    def pop_nowait(self) -> SpeakableItem | None:
        """The most urgent live item, now in flight until `done`; None when empty."""
        self.expire()
        if not self._entries:
            return None
        now = self._clock()
        order = self._order(now, self.pace())
        best = max(self._entries.values(), key=order)
        del self._entries[best.item.key]
        self._in_flight[best.item.key] = best.item
        return best.item

    async def get(self) -> SpeakableItem:
        while True:
            item = self.pop_nowait()
            if item is not None:
                return item
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Until something waits (it may expire before it is popped)."""
        while not self._entries:
            self._ready.clear()
            await self._ready.wait()

    def done(self, item: SpeakableItem) -> None:
        """The speaker has finished with an item (and logged its end)."""
        self._in_flight.pop(item.key, None)

    def expire(self) -> int:
        """Drop every item older than the TTL, and every free chat line too old to
        read (pacing's `stale_after_s`); the count dropped."""
        now = self._clock()
        gone = 0
        for entry in list(self._entries.values()):
            item = entry.item
            age = now - item.message.received
            if age > self.config.ttl_s:
                fields: dict[str, object] = {}
            elif not entry.front and self.pacer.is_stale(item, age):
                fields = {"reason": "stale"}
            else:
                continue
            del self._entries[item.key]
            outcomes.log_outcome(outcomes.EXPIRED, item.message, age_s=round(age, 3), **fields)
            gone += 1
        return gone

    def pace(self) -> Pace:
        """The pace for the next line, from what waits now; logs when busy starts
        (`queue.busy`) and ends (`queue.calm`)."""
        backlog = self.pacer.backlog(e.item for e in self._entries.values())
        was_busy = self.pacer.busy
        pace = self.pacer.decide(backlog)
        if pace.busy != was_busy:
            log.info(
                "queue.busy" if pace.busy else "queue.calm",
                backlog_s=round(backlog.seconds, 1),
                waiting=backlog.items,
                speed=pace.speed,
            )
        return pace

    def retract(self, platform: Platform, message_ids: frozenset[str]) -> RetractResult:
        return self._retract(
            lambda i: i.message.platform == platform and i.message.message_id in message_ids,
            reason="message_deleted",
        )

    def retract_user(self, platform: Platform, user_id: str) -> RetractResult:
        """A ban: every item of that account, however this session sees its id."""
        return self._retract(
            lambda i: (
                i.message.platform == platform
                and same_account(platform, user_id, i.message.user_id)
            ),
            reason="user_cleared",
        )

    def retract_channel(self, platform: Platform, channel: str) -> RetractResult:
        return self._retract(
            lambda i: i.message.platform == platform and i.message.channel == channel,
            reason="chat_cleared",
        )

    def remove_where(
        self, predicate: Callable[[SpeakableItem], bool], event: str, reason: str
    ) -> list[SpeakableItem]:
        """Remove pending items a moderator action ends (clear, mute), logging each."""
        gone = [e.item for e in self._entries.values() if predicate(e.item)]
        for item in gone:
            del self._entries[item.key]
            outcomes.log_outcome(event, item.message, reason=reason)
        return gone

    def move_to_front(self, key: Key) -> bool:
        """The streamer's "play next": this item is popped before every other
        (one moved later goes before it). Its priority and TTL are unchanged; pacing
        no longer drops it as stale, since the streamer chose it. False when it is
        not waiting."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._front += 1
        entry.front = self._front
        return True

    def snapshot(self) -> list[SpeakableItem]:
        """Pending items in the order they would be popped now (a look: the
        pacer's state is not moved by it)."""
        backlog = self.pacer.backlog(e.item for e in self._entries.values())
        order = self._order(self._clock(), self.pacer.decide(backlog, settle=False))
        ordered = sorted(self._entries.values(), key=order, reverse=True)
        return [e.item for e in ordered]

    def _retract(self, predicate: Callable[[SpeakableItem], bool], reason: str) -> RetractResult:
        removed = self.remove_where(predicate, outcomes.RETRACTED, reason)
        hit = tuple(i for i in self._in_flight.values() if predicate(i))
        return RetractResult(tuple(removed), hit)

    def _order(self, now: float, pace: Pace) -> Callable[[_Entry], tuple[float, ...]]:
        """The sort key of the pop order, highest first: moved to the front, then
        urgency, then arrival.

        When the pace prefers recent lines, within a level (ageing counted in whole
        levels) the lines pacing may not drop go first, in arrival order; then free
        chat, the viewer whose waiting line is newest first. A viewer's own lines
        keep their order, so one who writes fastest does not always have the
        newest line."""
        if not pace.prefer_recent:
            return lambda e: (e.front, self._urgency(e, now), -e.seq)
        first_waiting: dict[Key, int] = {}
        for e in self._entries.values():
            if is_free_chat(e.item):
                user = e.item.message.user_key
                first_waiting[user] = min(e.seq, first_waiting.get(user, e.seq))

        def recent_first(entry: _Entry) -> tuple[float, ...]:
            level = entry.item.priority
            if self.config.aging_s > 0:
                waited = max(0.0, now - entry.item.message.received)
                level += math.floor(waited / self.config.aging_s)
            if is_free_chat(entry.item):
                user = entry.item.message.user_key
                return (entry.front, level, 0, first_waiting[user], -entry.seq)
            return (entry.front, level, 1, -entry.seq, 0)

        return recent_first

    def _urgency(self, entry: _Entry, now: float) -> float:
        if self.config.aging_s <= 0:
            return entry.item.priority
        waited = max(0.0, now - entry.item.message.received)
        return entry.item.priority + waited / self.config.aging_s
