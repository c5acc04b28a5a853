"""Twitch chat's IRC dialect, sans I/O: bytes in, typed events out, lines to send.

No sockets, no clock, no logging: the caller passes the receive time and
decides what to do with each event. A bad line is returned as `DecodeFailed`,
never raised, by `TwitchCodec.feed`, so one bad line cannot stop the lines
after it: `DecodeError` for what the codec recognises as invalid, and any
other exception a line provokes (a bug in the codec) is caught there too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from adapters.events import (
    HIGHLIGHTED_MESSAGE,
    ChatEvent,
    ChatMessage,
    EventKind,
    Paid,
    PaidKind,
    Platform,
    Retraction,
    Role,
    SubTier,
)

#: Longest line accepted, in bytes. Real lines are a few KB (tags included);
#: anything far past that is hostile or broken and is skipped whole.
MAX_LINE_BYTES = 32 * 1024
#: Twitch's limit on the text of one chat message.
MAX_CHAT_CHARS = 500

ANONYMOUS_PREFIX = "justinfan"
CAPABILITIES = "twitch.tv/tags twitch.tv/commands"

_LOGIN_FAILURES = ("login authentication failed", "improperly formatted auth", "invalid nick")
_CHEERMOTE = re.compile(r"(?<!\S)[A-Za-z]+\d+(?!\S)")
_ACTION = re.compile(r"\x01ACTION (.*?)\x01?$", re.DOTALL)


class DecodeError(ValueError):
    """A line that is not valid Twitch IRC; it is skipped, the next one still parses."""


@dataclass(frozen=True, slots=True)
class IrcMessage:
    command: str
    params: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0] if "!" in self.prefix else ""

    @property
    def trailing(self) -> str:
        """The last parameter (chat text, PING token…), or "" when there is none."""
        return self.params[-1] if self.params else ""


# What the codec asks of its caller, besides the chat events themselves.
@dataclass(frozen=True, slots=True)
class SendLine:
    #: Sent as is: CRLF included.
    line: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    nick: str


@dataclass(frozen=True, slots=True)
class Joined:
    channel: str


@dataclass(frozen=True, slots=True)
class RoomState:
    """A channel's settings line (`ROOMSTATE`): what matters here is its room id,
    the key third-party emote services know the channel by."""

    channel: str
    room_id: str


@dataclass(frozen=True, slots=True)
class PongReceived:
    token: str


@dataclass(frozen=True, slots=True)
class ReconnectRequested:
    pass


@dataclass(frozen=True, slots=True)
class LoginFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    msg_id: str
    text: str


@dataclass(frozen=True, slots=True)
class DecodeFailed:
    error: str
    #: The start of the offending line, for the log.
    excerpt: str


TwitchEvent = (
    ChatEvent
    | SendLine
    | LoggedIn
    | Joined
    | RoomState
    | PongReceived
    | ReconnectRequested
    | LoginFailed
    | Notice
    | DecodeFailed
)


def unescape_tag_value(value: str) -> str:
    """IRCv3 tag unescaping, in one left-to-right pass (chained replace gets `\\\\s` wrong)."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        out.append({":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}.get(nxt, nxt))
    return "".join(out)


def escape_tag_value(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\:")
        .replace(" ", "\\s")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


def parse_line(line: str) -> IrcMessage:
    """One IRC line (without CRLF) → IrcMessage; DecodeError when it is not one."""
    if len(line) > MAX_LINE_BYTES:
        raise DecodeError(f"line too long ({len(line)} characters)")
    if "\r" in line or "\n" in line or "\x00" in line:
        raise DecodeError("line contains CR, LF or NUL")
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise DecodeError("tags with no command")
        for item in raw_tags.split(";"):
            if not item:
                continue
            key, _, value = item.partition("=")
            if not key:
                raise DecodeError("tag with an empty key")
            tags[key] = unescape_tag_value(value)
        rest = rest.lstrip(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise DecodeError("prefix with no command")
        rest = rest.lstrip(" ")
    middle, sep, trailing = rest.partition(" :")
    if rest.startswith(":"):
        middle, sep, trailing = "", ":", rest[1:]
    words = middle.split()
    if not words:
        raise DecodeError("no command")
    command = words[0].upper()
    if not (command.isascii() and (command.isalpha() or (command.isdigit() and len(command) == 3))):
        raise DecodeError(f"bad command {words[0][:20]!r}")
    params = tuple(words[1:]) + ((trailing,) if sep else ())
    return IrcMessage(command=command, params=params, tags=tags, prefix=prefix)


class LineSplitter:
    """Reassembles lines from frames split anywhere, even inside a UTF-8 character."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes | str) -> list[str | DecodeError]:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        self._buf += data
        out: list[str | DecodeError] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            raw = bytes(self._buf[:end]).removesuffix(b"\r")
            del self._buf[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            if not raw:
                continue
            if len(raw) > MAX_LINE_BYTES:
                out.append(DecodeError(f"line too long ({len(raw)} bytes)"))
                continue
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                out.append(DecodeError(f"invalid UTF-8 at byte {exc.start}"))
        if len(self._buf) > MAX_LINE_BYTES and not self._discarding:
            # Keep memory bounded: drop the oversized line now, and its tail
            # when the end arrives.
            out.append(DecodeError(f"line too long (over {MAX_LINE_BYTES} bytes)"))
            self._buf.clear()
            self._discarding = True
        elif self._discarding:
            self._buf.clear()
        return out

    def flush(self) -> list[str | DecodeError]:
        """A frame may end without CRLF: treat what is pending as a whole line."""
        if not self._buf:
            return []
        return self.feed(b"\r\n")


class TwitchCodec:
    """Frames from Twitch → events, for one connection."""

    def __init__(self, nick: str) -> None:
        self.nick = nick.lower()
        self._lines = LineSplitter()

    def feed(self, data: bytes | str, received: float) -> list[TwitchEvent]:
        """Decode one WebSocket frame. Twitch ends every frame at a line end, so a
        frame's unterminated tail is a whole line too (be lenient)."""
        return self.decode(self._lines.feed(data) + self._lines.flush(), received)

    def feed_partial(self, data: bytes | str, received: float) -> list[TwitchEvent]:
        """Decode data that may stop mid-line; the rest waits for the next call."""
        return self.decode(self._lines.feed(data), received)

    def decode(self, lines: Iterable[str | DecodeError], received: float) -> list[TwitchEvent]:
        events: list[TwitchEvent] = []
        for line in lines:
            if isinstance(line, DecodeError):
                events.append(DecodeFailed(str(line), ""))
                continue
            try:
                events.extend(to_events(parse_line(line), self.nick, received))
            except DecodeError as exc:
                events.append(DecodeFailed(str(exc), line[:200]))
            except Exception as exc:
                # The codec's one boundary: whatever else a line provokes is a
                # bug, and it costs that line only, never the connection.
                events.append(DecodeFailed(unexpected(exc), line[:200]))
        return events


def unexpected(exc: BaseException) -> str:
    """The decode error for an exception the codec did not mean to raise."""
    text = str(exc)[:200]
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")


#: Longest digit string read as a number: Twitch's are at most 13 digits
#: (a millisecond timestamp); `int()` refuses more than 4300.
MAX_DIGITS = 18


def is_number(value: str) -> bool:
    """A whole number `int()` takes: ASCII digits only (`str.isdigit()` is also
    true for '²', which `int()` refuses), and not absurdly many."""
    return value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS


def to_events(msg: IrcMessage, own_nick: str, received: float) -> list[TwitchEvent]:
    """Map one parsed line to what it means for the bot."""
    match msg.command:
        case "PRIVMSG":
            if _from_shared_chat(msg):
                return []
            return [_privmsg(msg, received)]
        case "USERNOTICE":
            notice = _usernotice(msg, received)
            return [notice] if notice is not None else []
        case "CLEARMSG":
            target = msg.tags.get("target-msg-id", "")
            if not target:
                raise DecodeError("CLEARMSG without target-msg-id")
            return [Retraction(Platform.TWITCH, _channel(msg), message_ids=frozenset({target}))]
        case "CLEARCHAT":
            channel = _channel(msg)
            if len(msg.params) >= 2:
                user_id = msg.tags.get("target-user-id") or msg.trailing.lower()
                reason = "timeout" if "ban-duration" in msg.tags else "ban"
                duration = msg.tags.get("ban-duration", "")
                return [
                    Retraction(
                        Platform.TWITCH,
                        channel,
                        user_id=user_id,
                        reason=reason,
                        duration_s=int(duration) if is_number(duration) else None,
                    )
                ]
            return [Retraction(Platform.TWITCH, channel, reason="chat_cleared")]
        case "PING":
            return [SendLine(pong(msg.trailing or "tmi.twitch.tv"))]
        case "PONG":
            return [PongReceived(msg.trailing)]
        case "RECONNECT":
            return [ReconnectRequested()]
        case "001":
            return [LoggedIn(msg.params[0] if msg.params else own_nick)]
        case "JOIN":
            if msg.nick.lower() == own_nick:
                return [Joined(_channel(msg))]
            return []
        case "ROOMSTATE":
            room_id = msg.tags.get("room-id", "")
            if not is_number(room_id):
                raise DecodeError(f"ROOMSTATE room-id is not a number: {room_id[:20]!r}")
            return [RoomState(_channel(msg), room_id)]
        case "NOTICE":
            text = msg.trailing
            if any(f in text.lower() for f in _LOGIN_FAILURES):
                return [LoginFailed(text)]
            return [Notice(msg.tags.get("msg-id", ""), text)]
    return []


def _channel(msg: IrcMessage) -> str:
    if not msg.params or not msg.params[0].startswith("#"):
        raise DecodeError(f"{msg.command} without a #channel")
    return msg.params[0][1:].lower()


def _badges(msg: IrcMessage) -> set[str]:
    return {b.split("/", 1)[0] for b in msg.tags.get("badges", "").split(",") if b}


def _roles(msg: IrcMessage) -> frozenset[Role]:
    tags = msg.tags
    badges = _badges(msg)
    roles: set[Role] = set()
    room, user = tags.get("room-id", ""), tags.get("user-id", "")
    if "broadcaster" in badges or (room and room == user):
        roles.add(Role.BROADCASTER)
    if tags.get("mod") == "1" or "moderator" in badges:
        roles.add(Role.MODERATOR)
    if "vip" in tags or "vip" in badges:
        roles.add(Role.VIP)
    if tags.get("subscriber") == "1" or badges & {"subscriber", "founder"}:
        roles.add(Role.SUBSCRIBER)
    return frozenset(roles)


def _emotes(value: str) -> tuple[tuple[int, int], ...]:
    """`id:0-4,6-10/id2:12-15` → sorted spans; malformed parts are ignored."""
    spans: list[tuple[int, int]] = []
    for group in value.split("/"):
        _, _, ranges = group.partition(":")
        for span in ranges.split(","):
            start, sep, end = span.partition("-")
            if sep and is_number(start) and is_number(end) and int(start) <= int(end):
                spans.append((int(start), int(end)))
    return tuple(sorted(spans))


def _timestamp(msg: IrcMessage) -> float:
    raw = msg.tags.get("tmi-sent-ts", "")
    return int(raw) / 1000 if is_number(raw) else 0.0


def _user(msg: IrcMessage) -> tuple[str, str]:
    login = msg.tags.get("login") or msg.nick
    user_id = msg.tags.get("user-id") or login
    name = msg.tags.get("display-name") or login
    return user_id, name


def _message_id(msg: IrcMessage) -> str:
    message_id = msg.tags.get("id", "")
    if not message_id:
        raise DecodeError(f"{msg.command} without an id tag (is the tags capability on?)")
    return message_id


def _from_shared_chat(msg: IrcMessage) -> bool:
    """Shared Chat relays a partner channel's messages: not this stream's chat to read."""
    source = msg.tags.get("source-room-id", "")
    return bool(source) and source != msg.tags.get("room-id", "")


def _privmsg(msg: IrcMessage, received: float) -> ChatMessage:
    if len(msg.params) < 2:
        raise DecodeError("PRIVMSG without text")
    text = msg.trailing
    action = _ACTION.match(text)
    if action:
        text = action.group(1)
    paid = None
    bits_tag = msg.tags.get("bits", "")
    if bits_tag:
        if not is_number(bits_tag):
            raise DecodeError(f"bits is not a number: {bits_tag[:20]!r}")
        paid = Paid(float(bits_tag), "BITS", PaidKind.BITS)
        # Blank cheermotes ("Cheer100") to spaces: emote offsets stay valid.
        text = _CHEERMOTE.sub(lambda m: " " * len(m.group(0)), text)
    user_id, name = _user(msg)
    return ChatMessage(
        platform=Platform.TWITCH,
        channel=_channel(msg),
        message_id=_message_id(msg),
        user_id=user_id,
        user_name=name,
        text=text,
        roles=_roles(msg),
        paid=paid,
        first_time=msg.tags.get("first-msg") == "1",
        platform_time=_timestamp(msg),
        received=received,
        emotes=_emotes(msg.tags.get("emotes", "")),
        reward_id=_reward_id(msg),
    )


#: What a channel-point reward id may look like (Twitch's are UUIDs).
REWARD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def _reward_id(msg: IrcMessage) -> str:
    """The redeemed reward: its id, or the name for "Highlight My Message"."""
    reward = msg.tags.get("custom-reward-id", "")
    if reward:
        if not REWARD_ID.fullmatch(reward):
            raise DecodeError(f"custom-reward-id is not an id: {reward[:40]!r}")
        return reward.lower()
    if msg.tags.get("msg-id") == "highlighted-message":
        return HIGHLIGHTED_MESSAGE
    return ""


_NOTICE_KINDS = {
    "sub": EventKind.SUB,
    "resub": EventKind.SUB,
    "giftpaidupgrade": EventKind.SUB,
    "anongiftpaidupgrade": EventKind.SUB,
    "primepaidupgrade": EventKind.SUB,
    "subgift": EventKind.GIFT,
    "anonsubgift": EventKind.GIFT,
    "submysterygift": EventKind.GIFT,
    "raid": EventKind.RAID,
    "announcement": EventKind.CHAT,
}


_SUB_PLANS = {
    "prime": SubTier.PRIME,
    "1000": SubTier.TIER1,
    "2000": SubTier.TIER2,
    "3000": SubTier.TIER3,
}
#: The `policy.currencies` code a sub of each tier is counted in, so the
#: streamer sets what each is worth.
SUB_CURRENCIES = {
    SubTier.PRIME: "SUB_PRIME",
    SubTier.TIER1: "SUB_T1",
    SubTier.TIER2: "SUB_T2",
    SubTier.TIER3: "SUB_T3",
}


def _usernotice(msg: IrcMessage, received: float) -> ChatMessage | None:
    kind_tag = msg.tags.get("msg-id", "")
    kind = _NOTICE_KINDS.get(kind_tag)
    if kind is None:
        return None
    if kind_tag in ("subgift", "anonsubgift") and "msg-param-community-gift-id" in msg.tags:
        # Part of a mass gift: the submysterygift line before it announces the lot.
        return None
    user_id, name = _user(msg)
    paid = None
    tier = _SUB_PLANS.get(msg.tags.get("msg-param-sub-plan", "").lower())
    if kind is EventKind.GIFT:
        count = msg.tags.get("msg-param-mass-gift-count", "1")
        # Twitch always names the plan of a gift; a gift without one is at least tier 1.
        currency = SUB_CURRENCIES[tier or SubTier.TIER1]
        paid = Paid(float(count) if is_number(count) else 1.0, currency, PaidKind.GIFT)
    elif kind is EventKind.SUB and tier is not None:
        paid = Paid(1.0, SUB_CURRENCIES[tier], PaidKind.SUB)
    if kind is EventKind.RAID:
        name = msg.tags.get("msg-param-displayName") or name
    text = msg.trailing if len(msg.params) >= 2 else ""
    return ChatMessage(
        platform=Platform.TWITCH,
        channel=_channel(msg),
        message_id=_message_id(msg),
        user_id=user_id,
        user_name=name,
        text=text,
        roles=_roles(msg),
        paid=paid,
        event=kind,
        platform_time=_timestamp(msg),
        received=received,
        emotes=_emotes(msg.tags.get("emotes", "")),
        sub_tier=tier if kind in (EventKind.SUB, EventKind.GIFT) else None,
    )


# Lines the client sends, each ready for the wire: IRC ends every line with CRLF.
def _wire(line: str) -> str:
    return f"{line}\r\n"


def handshake(nick: str, token: str, channels: Iterable[str]) -> list[str]:
    lines = [f"CAP REQ :{CAPABILITIES}"]
    if token:
        lines.append(f"PASS {token if token.startswith('oauth:') else 'oauth:' + token}")
    lines.append(f"NICK {nick.lower()}")
    joined = ",".join(f"#{c.lower()}" for c in channels)
    if joined:
        lines.append(f"JOIN {joined}")
    return [_wire(line) for line in lines]


def pong(token: str) -> str:
    return _wire(f"PONG :{token}")


def ping(token: str) -> str:
    return _wire(f"PING :{token}")


def privmsg(channel: str, text: str, reply_to: str = "") -> str:
    """A chat line, made safe: no line breaks, at most Twitch's 500 characters."""
    clean = " ".join(text.replace("\x01", "").split())[:MAX_CHAT_CHARS]
    tag = f"@reply-parent-msg-id={escape_tag_value(reply_to)} " if reply_to else ""
    return _wire(f"{tag}PRIVMSG #{channel.lower()} :{clean}")
