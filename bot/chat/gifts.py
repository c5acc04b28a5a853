"""Gift combos: a Bilibili viewer's burst of identical gifts, read as one line.

A combo's first gift is held, not routed; each later gift of the same kind
from the same user within `policy.gift_merge_s` folds into it (its count and
amount added) and ends at once as `tts.merged` with the id it went into. The
window restarts on each gift and is capped at `MAX_HOLD_S` from the first, so
a long combo is still read; when it closes, the one merged message goes on
through the policy and the queue like any other. Nothing here waits: the
router asks for what is due when an event arrives and from a loop timer.

Bilibili's `COMBO_SEND` packets are not used: every gift of a combo also comes
as its own `SEND_GIFT` (which this counts), and `COMBO_SEND` restates their
running total, so reading it as well would count each gift twice.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from adapters.events import ChatMessage, EventKind, Paid, PaidKind, Platform
from bot.chat import outcomes

#: The longest a combo is held from its first gift, however long it runs.
MAX_HOLD_S: Final = 10.0
#: Combos held at once; past it the oldest is let go early (a flood of givers
#: costs no unbounded memory, and nothing is lost).
MAX_HELD: Final = 1000
#: The Bilibili codec's gift text: "{gift name} x{count}".
_GIFT_TEXT = re.compile(r"(?P<gift>.+) x(?P<count>[0-9]{1,9})", re.DOTALL)


@dataclass(slots=True)
class _Combo:
    head: ChatMessage
    paid: Paid
    gift: str
    count: int
    amount: float
    first: float
    last: float
    merged: int = 0

    def deadline(self, window_s: float) -> float:
        return min(self.last + window_s, self.first + MAX_HOLD_S)

    def message(self) -> ChatMessage:
        """The head, carrying the combo's summed count and amount."""
        if not self.merged:
            return self.head
        paid = Paid(round(self.amount, 6), self.paid.currency, self.paid.kind)
        return dataclasses.replace(self.head, text=f"{self.gift} x{self.count}", paid=paid)


def _parse(message: ChatMessage) -> tuple[str, int] | None:
    """(gift name, count) for a Bilibili paid gift; None for anything else
    (guards, super chats and chat are never merged)."""
    if (
        message.platform is not Platform.BILIBILI
        or message.event is not EventKind.GIFT
        or message.paid is None
        or message.paid.kind is not PaidKind.GIFT
    ):
        return None
    match = _GIFT_TEXT.fullmatch(message.text)
    if match is None:
        return None
    return match["gift"], int(match["count"])


class GiftMerger:
    """Holds combos per user; `offer`, `due` and `drain` hand back the messages to route."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        #: Open combos by (platform, user id, channel), oldest first.
        self._held: dict[tuple[Platform, str, str], _Combo] = {}

    def __len__(self) -> int:
        return len(self._held)

    def offer(self, message: ChatMessage) -> list[ChatMessage]:
        """Take a message: what to route now, in order (empty when it was held or merged)."""
        parsed = _parse(message) if self.window_s > 0 else None
        if parsed is None or message.paid is None:
            return [message]
        gift, count = parsed
        now = self._clock()
        ready = self.due(now)
        key = (message.platform, message.user_id, message.channel)
        combo = self._held.get(key)
        currency = message.paid.currency
        if combo is not None and combo.gift == gift and combo.paid.currency == currency:
            combo.count += count
            combo.amount += message.paid.amount
            combo.last = now
            combo.merged += 1
            outcomes.log_outcome(outcomes.MERGED, message, into=combo.head.message_id)
            return ready
        if combo is not None:  # another kind of gift ends this user's combo: keep their order
            del self._held[key]
            ready.append(combo.message())
        if len(self._held) >= MAX_HELD:
            oldest = next(iter(self._held))
            ready.append(self._held.pop(oldest).message())
        self._held[key] = _Combo(message, message.paid, gift, count, message.paid.amount, now, now)
        return ready

    def due(self, now: float | None = None) -> list[ChatMessage]:
        """The combos whose window has closed, removed, oldest first."""
        now = self._clock() if now is None else now
        closed = [k for k, c in self._held.items() if c.deadline(self.window_s) <= now]
        return [self._held.pop(k).message() for k in closed]

    def next_deadline(self) -> float | None:
        """When the next combo closes, on the clock given; None when none is held."""
        return min((c.deadline(self.window_s) for c in self._held.values()), default=None)

    def remove_where(self, predicate: Callable[[ChatMessage], bool]) -> list[ChatMessage]:
        """Take out the held combos whose first gift matches (a retraction), as merged."""
        gone = [k for k, c in self._held.items() if predicate(c.head)]
        return [self._held.pop(k).message() for k in gone]

    def drain(self) -> list[ChatMessage]:
        """Every held combo, at once (shutdown)."""
        held = [c.message() for c in self._held.values()]
        self._held.clear()
        return held
