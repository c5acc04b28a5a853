"""The one event model every platform adapter produces and the bot consumes."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Platform(enum.StrEnum):
    TWITCH = "twitch"
    BILIBILI = "bilibili"
    #: Text typed by the streamer into the web panel or HTTP API.
    LOCAL = "local"


class Role(enum.StrEnum):
    BROADCASTER = "broadcaster"
    MODERATOR = "moderator"
    VIP = "vip"
    SUBSCRIBER = "subscriber"
    #: Bilibili's paid membership (舰长/提督/总督); Twitch has no equivalent.
    GUARD = "guard"


class EventKind(enum.StrEnum):
    """What happened in chat, apart from any money attached to it."""

    CHAT = "chat"
    SUB = "sub"
    RAID = "raid"
    GIFT = "gift"
    GUARD = "guard"


class PaidKind(enum.StrEnum):
    BITS = "bits"
    SUPERCHAT = "superchat"
    GIFT = "gift"
    GUARD = "guard"
    SUB = "sub"


#: The reward id given to "Highlight My Message" redemptions (Twitch names them
#: by `msg-id=highlighted-message`, not by a reward id).
HIGHLIGHTED_MESSAGE = "highlighted-message"


class SubTier(enum.StrEnum):
    """A Twitch subscription's tier (`msg-param-sub-plan`)."""

    PRIME = "prime"
    TIER1 = "tier1"
    TIER2 = "tier2"
    TIER3 = "tier3"


@dataclass(frozen=True, slots=True)
class Paid:
    """Money attached to a message, in the platform's own unit (bits, CNY…)."""

    amount: float
    currency: str
    kind: PaidKind


@dataclass(frozen=True, slots=True)
class ChatMessage:
    platform: Platform
    channel: str
    message_id: str
    user_id: str
    user_name: str
    text: str
    roles: frozenset[Role] = frozenset()
    paid: Paid | None = None
    event: EventKind = EventKind.CHAT
    first_time: bool = False
    #: Unix seconds as the platform stamped it (0.0 when it gave none).
    platform_time: float = 0.0
    #: `time.monotonic()` when the adapter decoded it: queue ages and TTLs use this.
    received: float = field(default_factory=time.monotonic)
    #: Emote spans as inclusive (start, end) code-point offsets into `text`
    #: (Twitch's `emotes` tag), so the policy can remove them exactly.
    emotes: tuple[tuple[int, int], ...] = ()
    #: The whole message is a platform emoticon (Bilibili sticker danmaku).
    emote_only: bool = False
    #: The tier of a Twitch sub, resub or gifted sub, when the platform named it.
    sub_tier: SubTier | None = None
    #: The Twitch channel-point reward redeemed with this text (`custom-reward-id`),
    #: or `HIGHLIGHTED_MESSAGE` for "Highlight My Message"; "" for plain chat.
    reward_id: str = ""
    #: The platform hid the name ("x***": Bilibili without a logged-in cookie).
    name_masked: bool = False

    @property
    def user_key(self) -> tuple[Platform, str]:
        """User ids are only unique within one platform."""
        return (self.platform, self.user_id)


@dataclass(frozen=True, slots=True)
class Retraction:
    """Take back pending messages: listed ids, or all of one user's, or (neither) all."""

    platform: Platform
    channel: str
    message_ids: frozenset[str] = frozenset()
    user_id: str | None = None
    reason: str = ""
    #: A timeout's length in seconds; None for a permanent ban and everything else.
    duration_s: int | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    platform: Platform
    channel: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    platform: Platform
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class EmoteNames:
    """Words that are emotes in one channel's chat beyond the platform's own
    (7TV, BetterTTV, FrankerFaceZ): all of them, replacing any earlier set."""

    platform: Platform
    channel: str
    names: frozenset[str]


ChatEvent = ChatMessage | Retraction | Connected | Disconnected | EmoteNames
