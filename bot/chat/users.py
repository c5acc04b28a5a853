"""Who a chat user is: an account keyed by (platform, user id), never a display name.

Display names are chosen by the user, change at will and repeat across
platforms; ids do not. Masked Bilibili viewers (an anonymous session sees uid 0)
are keyed by the CRC32 of their uid (`crc:HEX`), which still tells them apart.
Moderators type names, so `SeenUsers` maps the names recently seen in chat to
the accounts behind them: `twitch:NAME` or `bilibili:NAME` picks a platform,
otherwise the account most recently seen with that name wins.
"""

from __future__ import annotations

import itertools
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from adapters.events import ChatMessage, Platform

UserKey = tuple[Platform, str]

#: Names remembered for resolving commands; the least recently seen go first.
SEEN_LIMIT = 10_000

_CRC_PREFIX = "crc:"


def user_handle(name: str) -> str:
    """How user names are compared: case-folded, without a leading @."""
    return name.strip().lstrip("@").casefold()


def name_keys(message: ChatMessage) -> tuple[str, str]:
    """The keys a name-based rule from the config file may use for this sender."""
    handle = user_handle(message.user_name)
    return (f"{message.platform.value}:{handle}", handle)


def key_text(key: UserKey) -> str:
    """A user key as one string ("twitch:123", "bilibili:crc:8f3a2b1c"), for files."""
    return f"{key[0].value}:{key[1]}"


def parse_key(text: str) -> UserKey | None:
    """The inverse of `key_text`; None when it names no platform or no id."""
    platform, _, user_id = text.partition(":")
    if platform not in Platform.__members__.values() or not user_id:
        return None
    return (Platform(platform), user_id)


def same_account(platform: Platform, user_id: str, other_id: str) -> bool:
    """Whether `other_id` (from a message) is the account `user_id` (from a ban).

    An anonymous Bilibili session sees a masked viewer as `crc:HEX`, the CRC32 of
    the decimal uid, while a ban names the uid itself: both are the same viewer.
    """
    if other_id == user_id:
        return True
    if platform is not Platform.BILIBILI or not other_id.startswith(_CRC_PREFIX):
        return False
    if not (user_id.isascii() and user_id.isdigit()):
        return False
    try:
        crc = int(other_id[len(_CRC_PREFIX) :], 16)
    except ValueError:
        return False
    return crc == zlib.crc32(user_id.encode("ascii"))


@dataclass(frozen=True, slots=True)
class Resolved:
    key: UserKey
    #: The name as last seen, for replies.
    name: str


def split_platform(text: str) -> tuple[Platform | None, str]:
    """`twitch:Name` → (twitch, "name"); a name without a known prefix → (None, handle)."""
    handle = user_handle(text)
    prefix, sep, rest = handle.partition(":")
    if sep and prefix in Platform.__members__.values():
        return Platform(prefix), user_handle(rest)
    return None, handle


class SeenUsers:
    """A bounded map of recently seen names to accounts; the most recent wins."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self._limit = limit
        self._stamps = itertools.count()
        self._recent: OrderedDict[tuple[Platform, str], tuple[str, str, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._recent)

    def saw(self, message: ChatMessage) -> None:
        handle = user_handle(message.user_name)
        if not handle:
            return
        slot = (message.platform, handle)
        self._recent[slot] = (message.user_id, message.user_name, next(self._stamps))
        self._recent.move_to_end(slot)
        while len(self._recent) > self._limit:
            self._recent.popitem(last=False)

    def resolve(self, text: str) -> Resolved | None:
        """The account most recently seen with this name (on the prefixed platform)."""
        platform, handle = split_platform(text)
        platforms: Iterable[Platform] = (platform,) if platform is not None else Platform
        best: tuple[int, Resolved] | None = None
        for p in platforms:
            hit = self._recent.get((p, handle))
            if hit is not None and (best is None or hit[2] > best[0]):
                best = (hit[2], Resolved((p, hit[0]), hit[1]))
        return best[1] if best is not None else None


def resolve_known(text: str, names: Mapping[UserKey, str]) -> Resolved | None:
    """A name among accounts the saved state knows (the last one listed wins)."""
    platform, handle = split_platform(text)
    found: Resolved | None = None
    for key, name in names.items():
        if user_handle(name) == handle and (platform is None or key[0] is platform):
            found = Resolved(key, name)
    return found
