"""Bilibili's open live platform (直播开放平台), sans I/O: the signed HTTP calls
that start, keep and end a session, their replies, and the session's commands
as events.

A session (the platform calls it a game) is started with the streamer's
identity code and the developer's app id; it names the room, its anchor and a
WebSocket with the same packet framing as the web path (`codec.FrameCodec`),
whose auth packet body is the opaque `auth_body` the start reply gave. Users
are identified by `open_id`: unique per app, unrelated to the web path's uid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from adapters.bilibili.codec import (
    GUARD_LEVELS,
    OP_AUTH,
    AuthReply,
    DecodeError,
    DecodeFailed,
    FrameCodec,
    HeartbeatReply,
    _int,
    _number,
    _obj,
    _str,
    encode_packet,
)
from adapters.events import (
    ChatEvent,
    ChatMessage,
    EventKind,
    Paid,
    PaidKind,
    Platform,
    Retraction,
    Role,
)

START_PATH: Final = "/v2/app/start"
HEARTBEAT_PATH: Final = "/v2/app/heartbeat"
END_PATH: Final = "/v2/app/end"

SIGNATURE_METHOD: Final = "HMAC-SHA256"
SIGNATURE_VERSION: Final = "1.0"

#: Refusals that retrying cannot cure: a wrong identity code, key, signature,
#: app id, or this computer's clock. Every other refusal is retried with backoff.
STOP_CODES: Final = frozenset(
    {4000, 4001, 4002, 4003, 4005, 4006, 4007, 4008, 4010, 4011, 4012, 4013, 7007, 8002}
)
#: The session is not (or no longer) running: a heartbeat or an end says so.
SESSION_GONE_CODES: Final = frozenset({7000, 7003})
#: What each refusal means for the streamer: what to check, or why it is retried.
#: A start is refused while the room's sessions are taken (7002: one already
#: runs; 7010: the app's limit of sessions in one room) or the last one is still
#: being closed (7001); a held session expires a minute after its last heartbeat.
BUSY_HINT: Final = "the room's sessions are taken; retrying until the held one expires"
HINTS: Final = {
    7001: BUSY_HINT,
    7002: BUSY_HINT,
    7010: BUSY_HINT,
    7007: (
        "check the identity code (ISHOWTTS_BILIBILI_CODE): the streamer's 身份码 "
        "from https://play-live.bilibili.com/"
    ),
    4001: "check access_key_id (ISHOWTTS_BILIBILI_ACCESS_KEY_ID)",
    4002: "check access_key_secret (ISHOWTTS_BILIBILI_ACCESS_KEY_SECRET)",
    4003: "check this computer's clock: the platform refuses requests stamped far from its time",
    4007: "the developer account's IP allow-list does not include this computer",
    4008: "the app lacks permission for this call: check app_id and the project's status",
    8002: "check app_id (ISHOWTTS_BILIBILI_APP_ID): the project id from the developer console",
}
DEFAULT_HINT: Final = "check identity_code, app_id, access_key_id and access_key_secret"
RETRY_HINT: Final = "retried with backoff"

#: Guard levels by name, for the line read aloud.
GUARD_NAMES: Final = {1: "总督", 2: "提督", 3: "舰长"}
#: Gift prices are in 1/1000 CNY (1000 = 1 元 = 10 电池).
PRICE_PER_CNY: Final = 1000

#: Commands the bot deliberately does not read.
IGNORED_COMMANDS: Final = frozenset(
    {
        "LIVE_OPEN_PLATFORM_LIKE",
        "LIVE_OPEN_PLATFORM_LIVE_ROOM_ENTER",
        "LIVE_OPEN_PLATFORM_DM_MIRROR",  # another room's chat
    }
)


class OpenReplyError(ValueError):
    """A reply that is not the platform's JSON envelope (a proxy's page, garbage)."""


class OpenApiError(Exception):
    """The platform refused a call: its code and message, as it gave them."""

    def __init__(self, code: int, message: str, request_id: str = "") -> None:
        super().__init__(f"code {code} ({message})")
        self.code = code
        self.message = message
        self.request_id = request_id

    @property
    def stops(self) -> bool:
        """Whether retrying is useless (a wrong code or key)."""
        return self.code in STOP_CODES

    @property
    def hint(self) -> str:
        return HINTS.get(self.code, DEFAULT_HINT if self.stops else RETRY_HINT)


@dataclass(frozen=True, slots=True)
class Game:
    """A started session: what to end and beat, where and how to connect."""

    game_id: str
    auth_body: str
    links: tuple[str, ...]
    room_id: int
    anchor_name: str = ""
    anchor_open_id: str = ""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The platform ended the session (LIVE_OPEN_PLATFORM_INTERACTION_END)."""

    game_id: str


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """The room went live, or stopped."""

    live: bool
    title: str = ""


OpenEvent = ChatEvent | SessionEnded | LiveStatus
OpenFrameEvent = OpenEvent | AuthReply | HeartbeatReply | DecodeFailed


# Requests ---------------------------------------------------------------------
def json_body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def start_body(identity_code: str, app_id: int) -> bytes:
    return json_body({"code": identity_code, "app_id": app_id})


def heartbeat_body(game_id: str) -> bytes:
    return json_body({"game_id": game_id})


def end_body(app_id: int, game_id: str) -> bytes:
    return json_body({"app_id": app_id, "game_id": game_id})


def string_to_sign(headers: dict[str, str]) -> str:
    """The `x-bili-*` headers as `name:value` lines, sorted by name, no final newline."""
    signed = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-bili-"))
    return "\n".join(f"{name}:{value}" for name, value in signed)


def signed_headers(
    body: bytes, access_key_id: str, access_key_secret: str, timestamp: int, nonce: str
) -> dict[str, str]:
    """Every header a call needs: the `x-bili-*` ones, and `Authorization`, the
    hex HMAC-SHA256 of their string to sign under the access key secret."""
    headers = {
        "x-bili-accesskeyid": access_key_id,
        "x-bili-content-md5": hashlib.md5(body).hexdigest(),
        "x-bili-signature-method": SIGNATURE_METHOD,
        "x-bili-signature-nonce": nonce,
        "x-bili-signature-version": SIGNATURE_VERSION,
        "x-bili-timestamp": str(timestamp),
    }
    signature = hmac.new(
        access_key_secret.encode("utf-8"), string_to_sign(headers).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return {
        **headers,
        "Authorization": signature,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


# Replies ----------------------------------------------------------------------
def reply_data(body: bytes) -> dict[str, Any]:
    """The `data` of a successful reply ({} when it has none); OpenApiError for a
    refusal, OpenReplyError for anything that is not the envelope."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OpenReplyError(f"reply is not JSON ({str(exc)[:100]})") from None
    if not isinstance(doc, dict):
        raise OpenReplyError("reply is not a JSON object")
    code = doc.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise OpenReplyError("reply has no numeric code")
    if code != 0:
        message, request_id = doc.get("message"), doc.get("request_id")
        raise OpenApiError(
            code,
            message[:200] if isinstance(message, str) else "",
            request_id[:100] if isinstance(request_id, str) else "",
        )
    data = doc.get("data")
    return data if isinstance(data, dict) else {}


def parse_start(data: dict[str, Any]) -> Game:
    """A start reply's data → the session; OpenReplyError when it lacks a part."""
    try:
        game_id = _str(_obj(data, "game_info"), "game_id")
        websocket = _obj(data, "websocket_info")
        auth_body = _str(websocket, "auth_body")
        anchor = _obj(data, "anchor_info")
        room_id = _int(anchor, "room_id")
    except DecodeError as exc:
        raise OpenReplyError(f"start reply: {exc}") from None
    raw_links = websocket.get("wss_link")
    links = tuple(
        link
        for link in (raw_links if isinstance(raw_links, list) else [])
        if isinstance(link, str) and link.startswith(("wss://", "ws://"))
    )
    if not game_id or not links or room_id <= 0:
        raise OpenReplyError("start reply: no game id, WebSocket link or room id")
    name, open_id = anchor.get("uname"), anchor.get("open_id")
    return Game(
        game_id=game_id,
        auth_body=auth_body,
        links=links,
        room_id=room_id,
        anchor_name=name if isinstance(name, str) else "",
        anchor_open_id=open_id if isinstance(open_id, str) else "",
    )


def auth_packet(auth_body: str) -> bytes:
    """The socket's first packet: the start reply's auth body, as it was given."""
    return encode_packet(OP_AUTH, auth_body.encode("utf-8"))


# Commands ---------------------------------------------------------------------
class OpenLiveCodec(FrameCodec[OpenEvent]):
    """Frames from one session's socket → events."""

    def __init__(self, room_id: int, anchor_open_id: str = "") -> None:
        self.channel = str(room_id)
        self.anchor_open_id = anchor_open_id
        #: Commands not understood, by name: logged once each by the client.
        self.unknown_commands: Counter[str] = Counter()

    def command_event(self, doc: dict[str, Any], received: float) -> OpenEvent | None:
        """One op-5 JSON command → event (None: ignored)."""
        cmd = doc.get("cmd")
        if not isinstance(cmd, str):
            raise DecodeError("command without a cmd string")
        try:
            match cmd:
                case "LIVE_OPEN_PLATFORM_DM":
                    return self._danmaku(_obj(doc, "data"), received)
                case "LIVE_OPEN_PLATFORM_SUPER_CHAT":
                    return self._superchat(_obj(doc, "data"), received)
                case "LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL":
                    ids = _obj(doc, "data").get("message_ids")
                    if not isinstance(ids, list) or not all(_whole(i) for i in ids):
                        raise DecodeError("message_ids must be numbers")
                    return Retraction(
                        Platform.BILIBILI,
                        self.channel,
                        message_ids=frozenset(f"sc:{i}" for i in ids),
                        reason="superchat_deleted",
                    )
                case "LIVE_OPEN_PLATFORM_SEND_GIFT":
                    return self._gift(_obj(doc, "data"), received)
                case "LIVE_OPEN_PLATFORM_GUARD":
                    return self._guard(_obj(doc, "data"), received)
                case "LIVE_OPEN_PLATFORM_INTERACTION_END":
                    return SessionEnded(_str(_obj(doc, "data"), "game_id"))
                case "LIVE_OPEN_PLATFORM_LIVE_START" | "LIVE_OPEN_PLATFORM_LIVE_END":
                    title = _obj(doc, "data").get("title")
                    return LiveStatus(
                        cmd.endswith("START"), title if isinstance(title, str) else ""
                    )
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise DecodeError(f"{cmd}: {exc}") from None
            raise DecodeError(f"{cmd}: malformed ({type(exc).__name__}: {exc})") from None
        if cmd not in IGNORED_COMMANDS:
            self.unknown_commands[cmd] += 1
        return None

    def _message(
        self, data: dict[str, Any], user: dict[str, Any], received: float, **fields: Any
    ) -> ChatMessage:
        """A message from `user` (the data itself, or a guard's user_info)."""
        user_id = _user_id(user)
        return ChatMessage(
            platform=Platform.BILIBILI,
            channel=self.channel,
            user_id=user_id,
            user_name=_str(user, "uname"),
            roles=self._roles(user_id, data),
            platform_time=_time(data),
            received=received,
            **fields,
        )

    def _roles(self, user_id: str, data: dict[str, Any]) -> frozenset[Role]:
        roles: set[Role] = set()
        if self.anchor_open_id and user_id == self.anchor_open_id:
            roles.add(Role.BROADCASTER)
        if data.get("is_admin") in (1, True):
            roles.add(Role.MODERATOR)
        if data.get("guard_level") in GUARD_LEVELS:
            roles.add(Role.GUARD)
        return frozenset(roles)

    def _danmaku(self, data: dict[str, Any], received: float) -> ChatMessage:
        msg_id = data.get("msg_id")
        return self._message(
            data,
            data,
            received,
            message_id=msg_id if isinstance(msg_id, str) and msg_id else _fallback_id(data),
            text=_str(data, "msg"),
            emote_only=data.get("dm_type") == 1,
        )

    def _superchat(self, data: dict[str, Any], received: float) -> ChatMessage:
        return self._message(
            data,
            data,
            received,
            message_id=f"sc:{_int(data, 'message_id')}",
            text=_str(data, "message"),
            paid=Paid(_amount(data, "rmb"), "CNY", PaidKind.SUPERCHAT),
        )

    def _gift(self, data: dict[str, Any], received: float) -> ChatMessage | None:
        paid = data.get("paid")
        if not isinstance(paid, bool):
            raise DecodeError("paid must be true or false")
        if not paid:
            return None  # free gifts: far too many to thank aloud
        num = _int(data, "gift_num")
        # r_price is what was paid (a discounted gift's price is its list price).
        unit = _amount(data, "r_price") if "r_price" in data else _amount(data, "price")
        return self._message(
            data,
            data,
            received,
            message_id=f"gift:{_event_id(data)}",
            text=f"{_str(data, 'gift_name')} x{num}",
            paid=Paid(unit * num / PRICE_PER_CNY, "CNY", PaidKind.GIFT),
            event=EventKind.GIFT,
        )

    def _guard(self, data: dict[str, Any], received: float) -> ChatMessage:
        user = _obj(data, "user_info")
        level = _int(data, "guard_level")
        if level not in GUARD_LEVELS:
            raise DecodeError(f"unknown guard level {level}")
        price = _amount(data, "price") * _int(data, "guard_num")
        return self._message(
            data,
            user,
            received,
            message_id=f"guard:{_event_id(data, user)}",
            text=GUARD_NAMES[level],
            paid=Paid(price / PRICE_PER_CNY, "CNY", PaidKind.GUARD),
            event=EventKind.GUARD,
        )


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _user_id(user: dict[str, Any]) -> str:
    """The sender's open_id (its union_id where the platform left it out)."""
    for key in ("open_id", "union_id"):
        value = user.get(key)
        if isinstance(value, str) and value:
            return value if key == "open_id" else f"union:{value}"
    raise DecodeError("no open_id")


def _amount(data: dict[str, Any], key: str) -> float:
    value = _number(data, key)
    if not (math.isfinite(value) and value >= 0):
        raise DecodeError(f"{key} must be a number of at least 0")
    return value


def _time(data: dict[str, Any]) -> float:
    stamp = data.get("timestamp")
    return float(stamp) if _whole(stamp) else 0.0


def _event_id(data: dict[str, Any], user: dict[str, Any] | None = None) -> str:
    msg_id = data.get("msg_id")
    return msg_id if isinstance(msg_id, str) and msg_id else _fallback_id(data, user)


def _fallback_id(data: dict[str, Any], user: dict[str, Any] | None = None) -> str:
    """An id for a command without msg_id: its sender and time."""
    return f"{_user_id(user if user is not None else data)}:{data.get('timestamp', 0)}"
