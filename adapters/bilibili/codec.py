"""Bilibili live danmaku's binary protocol, sans I/O: frames in, events out.

A frame holds packets back to back (16-byte big-endian header + body); a
packet may be a zlib or brotli batch of further packets. Lengths are checked
before they are trusted, nesting is bounded, and one WebSocket frame has one
budget, shared by every batch in it however nested: inflated bytes and
packets. A bad packet yields `DecodeFailed` for that packet only; a frame over
its budget yields one `DecodeFailed` and the rest of it is dropped;
`BilibiliCodec.feed` never raises (whatever else a packet provokes is caught
there and becomes a `DecodeFailed` too).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Generic, TypeVar

import brotli

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

HEADER = struct.Struct(">IHHII")
HEADER_LEN = HEADER.size

VER_JSON = 0
VER_RAW = 1
VER_ZLIB = 2
VER_BROTLI = 3

OP_HEARTBEAT = 2
OP_HEARTBEAT_REPLY = 3
OP_MESSAGE = 5
OP_AUTH = 7
OP_AUTH_REPLY = 8

#: A batch inflating past this is a bomb (real batches are tens of KB).
MAX_INFLATED = 2 * 1024 * 1024
#: All the batches of one WebSocket frame together, however nested, inflate to
#: at most this; past it the rest of the frame is dropped.
MAX_FRAME_INFLATED = 4 * 1024 * 1024
#: Packets in one WebSocket frame, those inside batches included (a busy room
#: sends a few hundred at most); past it the rest of the frame is dropped.
MAX_FRAME_PACKETS = 5000
#: Batches inside batches: the server nests one level; allow one more.
MAX_DEPTH = 2
#: JSON nested deeper than this is refused unparsed (real commands nest ~6
#: deep; a few thousand levels would exhaust the parser's recursion limit).
MAX_JSON_DEPTH = 64
#: Frames at least this long, or holding a batch, are decoded off the event
#: loop (see `is_heavy`); heartbeat and auth replies are a few dozen bytes.
HEAVY_FRAME_BYTES = 1024

#: Commands seen often that the bot deliberately does not read.
IGNORED_COMMANDS = frozenset(
    {
        "INTERACT_WORD",
        "INTERACT_WORD_V2",
        "SUPER_CHAT_MESSAGE_JPN",  # twin of SUPER_CHAT_MESSAGE: read once
        "USER_TOAST_MSG",
        "USER_TOAST_MSG_V2",  # twin of GUARD_BUY
        "DANMU_MSG_MIRROR",  # another room's chat
        "SEND_GIFT_V2",
        "ONLINE_RANK_COUNT",
        "ONLINE_RANK_V2",
        "WATCHED_CHANGE",
        "LIKE_INFO_V3_UPDATE",
        "ENTRY_EFFECT",
        "COMBO_SEND",  # a combo's running total: its gifts each come as SEND_GIFT too
        "NOTICE_MSG",
        "STOP_LIVE_ROOM_LIST",
        "LIVE",
        "PREPARING",
    }
)

#: Bilibili guard levels: 1 总督, 2 提督, 3 舰长.
GUARD_LEVELS = frozenset({1, 2, 3})
#: Gift prices are in gold coins; 1000 coins are 1 CNY.
COINS_PER_CNY = 1000


_ID_STR = re.compile(r'"id_str"\s*:\s*"([0-9A-Za-z_:-]+)"')


class DecodeError(ValueError):
    """A packet that is not valid danmaku protocol; skipped, the rest still decodes."""


class FrameOverBudget(Exception):
    """The frame inflates or holds more than one frame may: the rest is dropped."""


class FrameBudget:
    """What is left for one WebSocket frame, across all its (nested) batches."""

    def __init__(
        self, inflated: int = MAX_FRAME_INFLATED, packets: int = MAX_FRAME_PACKETS
    ) -> None:
        self.max_inflated = inflated
        self.max_packets = packets
        self.inflated = 0
        self.packets = 0

    @property
    def inflate_left(self) -> int:
        return max(0, self.max_inflated - self.inflated)

    def count_packet(self) -> None:
        self.packets += 1
        if self.packets > self.max_packets:
            raise FrameOverBudget(
                f"frame holds over {self.max_packets} packets; the rest of it is dropped"
            )

    def charge(self, inflated: int) -> None:
        self.inflated += inflated
        if self.inflated > self.max_inflated:
            raise FrameOverBudget(
                f"frame inflates past {self.max_inflated} bytes; the rest of it is dropped"
            )


@dataclass(frozen=True, slots=True)
class Packet:
    ver: int
    op: int
    body: bytes
    seq: int = 1


@dataclass(frozen=True, slots=True)
class AuthReply:
    code: int


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    popularity: int


@dataclass(frozen=True, slots=True)
class LoginNotice:
    """The server masks user names from now on (anonymous session)."""

    text: str


@dataclass(frozen=True, slots=True)
class DecodeFailed:
    error: str


BilibiliEvent = ChatEvent | AuthReply | HeartbeatReply | LoginNotice | DecodeFailed

#: What a codec makes of a command.
E = TypeVar("E")
#: What every frame may hold besides commands.
FrameEvent = AuthReply | HeartbeatReply | DecodeFailed


def encode_packet(op: int, body: bytes = b"", ver: int = VER_RAW, seq: int = 1) -> bytes:
    return HEADER.pack(HEADER_LEN + len(body), HEADER_LEN, ver, op, seq) + body


def auth_packet(uid: int, room_id: int, key: str, buvid: str, protover: int = VER_BROTLI) -> bytes:
    body: dict[str, Any] = {
        "uid": uid,
        "roomid": room_id,
        "protover": protover,
        "platform": "web",
        "type": 2,
    }
    if key:
        body["key"] = key
    if buvid:
        body["buvid"] = buvid
    return encode_packet(OP_AUTH, json.dumps(body, separators=(",", ":")).encode())


def heartbeat_packet() -> bytes:
    return encode_packet(OP_HEARTBEAT)


def split_packets(
    buf: bytes, depth: int = 0, budget: FrameBudget | None = None
) -> Iterator[Packet | DecodeFailed]:
    """Packets in a frame (or inflated batch), batches opened; stops at a lying
    length, and at the end of the frame's budget (one `DecodeFailed` says so)."""
    if budget is None:
        budget = FrameBudget()
        try:
            yield from split_packets(buf, depth, budget)
        except FrameOverBudget as exc:
            yield DecodeFailed(str(exc))
        return
    if depth > MAX_DEPTH:
        yield DecodeFailed(f"batches nested deeper than {MAX_DEPTH}")
        return
    off = 0
    while off < len(buf):
        if len(buf) - off < HEADER_LEN:
            yield DecodeFailed(f"truncated header ({len(buf) - off} bytes)")
            return
        budget.count_packet()
        packet_len, header_len, ver, op, seq = HEADER.unpack_from(buf, off)
        if header_len < HEADER_LEN or packet_len < header_len:
            yield DecodeFailed(f"bad lengths (packet {packet_len}, header {header_len})")
            return
        if off + packet_len > len(buf):
            if op == OP_HEARTBEAT_REPLY and len(buf) - off >= header_len + 4:
                # Known quirk: the reply's length may not cover what follows it.
                packet_len = len(buf) - off
            else:
                yield DecodeFailed(f"packet of {packet_len} bytes overruns the frame")
                return
        body = bytes(buf[off + header_len : off + packet_len])
        off += packet_len
        if op == OP_HEARTBEAT_REPLY and len(buf) - off < HEADER_LEN:
            off = len(buf)  # the echoed heartbeat bytes the length does not cover
        if op == OP_MESSAGE and ver in (VER_ZLIB, VER_BROTLI):
            try:
                inner = _inflate(body, ver, budget)
            except DecodeError as exc:
                yield DecodeFailed(str(exc))
                continue
            yield from split_packets(inner, depth + 1, budget)
        else:
            yield Packet(ver, op, body, seq)


def is_heavy(frame: bytes) -> bool:
    """Whether decoding `frame` may take long enough to stall the event loop: a
    long frame, or one holding a batch (tiny compressed input can inflate to
    megabytes). Looks at the first few packet headers only, so it is cheap."""
    if len(frame) >= HEAVY_FRAME_BYTES:
        return True
    off = 0
    while len(frame) - off >= HEADER_LEN:
        packet_len, _, ver, op, _ = HEADER.unpack_from(frame, off)
        if op == OP_MESSAGE and ver in (VER_ZLIB, VER_BROTLI):
            return True
        if packet_len < HEADER_LEN:
            return False
        off += packet_len
    return False


def _inflate(body: bytes, ver: int, budget: FrameBudget) -> bytes:
    """One batch, inflated: at most MAX_INFLATED bytes, and at most what is left
    of the frame's budget (FrameOverBudget past that)."""
    limit = min(MAX_INFLATED, budget.inflate_left) + 1
    if ver == VER_ZLIB:
        z = zlib.decompressobj()
        try:
            out = z.decompress(body, limit)
        except zlib.error as exc:
            raise DecodeError(f"bad zlib batch: {exc}") from None
        budget.charge(len(out))
        if len(out) > MAX_INFLATED or z.unconsumed_tail:
            raise DecodeError(f"zlib batch inflates past {MAX_INFLATED} bytes")
        if not z.eof:
            raise DecodeError("truncated zlib batch")
        return out
    b = brotli.Decompressor()
    try:
        inflated: bytes = b.process(body, output_buffer_limit=limit)
    except brotli.error as exc:
        raise DecodeError(f"bad brotli batch: {exc}") from None
    budget.charge(len(inflated))
    if len(inflated) > MAX_INFLATED:
        raise DecodeError(f"brotli batch inflates past {MAX_INFLATED} bytes")
    if not b.is_finished():
        raise DecodeError("truncated brotli batch")
    return inflated


class FrameCodec(Generic[E]):
    """Frames → events: the framing, heartbeat and auth replies here; what each
    op-5 JSON command means is the subclass's `command_event`."""

    def feed(self, frame: bytes, received: float) -> list[E | FrameEvent]:
        """Decode one WebSocket frame. The codec's one boundary: a packet that
        provokes any exception (a bug, beyond what DecodeError names) costs
        that packet only; one escaping the framing costs the rest of the frame."""
        events: list[E | FrameEvent] = []
        try:
            for packet in split_packets(frame):
                if isinstance(packet, DecodeFailed):
                    events.append(packet)
                    continue
                try:
                    event = self._packet_event(packet, received)
                except DecodeError as exc:
                    events.append(DecodeFailed(str(exc)))
                    continue
                except Exception as exc:
                    events.append(DecodeFailed(_unexpected(exc)))
                    continue
                if event is not None:
                    events.append(event)
        except Exception as exc:
            events.append(DecodeFailed(_unexpected(exc) + "; the rest of the frame is dropped"))
        return events

    def _packet_event(
        self, packet: Packet, received: float
    ) -> E | AuthReply | HeartbeatReply | None:
        if packet.op == OP_HEARTBEAT_REPLY:
            if len(packet.body) < 4:
                raise DecodeError("short heartbeat reply")
            return HeartbeatReply(int.from_bytes(packet.body[:4], "big"))
        if packet.op == OP_AUTH_REPLY:
            reply = _json(packet.body)
            return AuthReply(_int(reply, "code"))
        if packet.op == OP_MESSAGE:
            if packet.ver not in (VER_JSON, VER_RAW):
                raise DecodeError(f"unknown protocol version {packet.ver}")
            return self.command_event(_json(packet.body), received)
        return None  # other ops carry nothing for us

    def command_event(self, doc: dict[str, Any], received: float) -> E | None:
        raise NotImplementedError


class BilibiliCodec(FrameCodec[BilibiliEvent]):
    """Frames from one room's connection → events."""

    def __init__(self, room_id: int, owner_uid: int = 0) -> None:
        self.channel = str(room_id)
        self.owner_uid = owner_uid
        #: Commands not understood, by name: logged once each by the client.
        self.unknown_commands: Counter[str] = Counter()

    def command_event(self, doc: dict[str, Any], received: float) -> BilibiliEvent | None:
        """One op-5 JSON command → event (None: ignored)."""
        cmd = doc.get("cmd")
        if not isinstance(cmd, str):
            raise DecodeError("command without a cmd string")
        name = cmd.split(":", 1)[0]
        try:
            match name:
                case "DANMU_MSG":
                    return self._danmaku(doc, received)
                case "SUPER_CHAT_MESSAGE":
                    return self._superchat(_obj(doc, "data"), received)
                case "SUPER_CHAT_MESSAGE_DELETE":
                    ids = _obj(doc, "data").get("ids")
                    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                        raise DecodeError("SUPER_CHAT_MESSAGE_DELETE: ids must be numbers")
                    return Retraction(
                        Platform.BILIBILI,
                        self.channel,
                        message_ids=frozenset(f"sc:{i}" for i in ids),
                        reason="superchat_deleted",
                    )
                case "SEND_GIFT":
                    return self._gift(_obj(doc, "data"), received)
                case "GUARD_BUY":
                    return self._guard(_obj(doc, "data"), received)
                case "ROOM_BLOCK_MSG":
                    data = doc.get("data")
                    source = data if isinstance(data, dict) and "uid" in data else doc
                    uid = source.get("uid")
                    digits = isinstance(uid, str) and uid.isascii() and uid.isdigit()
                    if not (isinstance(uid, int) or digits):
                        raise DecodeError("ROOM_BLOCK_MSG: uid must be a number")
                    return Retraction(
                        Platform.BILIBILI, self.channel, user_id=str(uid), reason="ban"
                    )
                case "LOG_IN_NOTICE":
                    data = doc.get("data")
                    text = data.get("notice_msg", "") if isinstance(data, dict) else ""
                    return LoginNotice(str(text))
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"{name}: malformed ({type(exc).__name__}: {exc})") from None
        if name not in IGNORED_COMMANDS:
            self.unknown_commands[name] += 1
        return None

    def _roles(self, uid: int, admin: bool, guard_level: int) -> frozenset[Role]:
        roles: set[Role] = set()
        if uid and uid == self.owner_uid:
            roles.add(Role.BROADCASTER)
        if admin:
            roles.add(Role.MODERATOR)
        if guard_level in GUARD_LEVELS:
            roles.add(Role.GUARD)
        return frozenset(roles)

    def _danmaku(self, doc: dict[str, Any], received: float) -> ChatMessage | None:
        info = doc.get("info")
        if not isinstance(info, list) or len(info) < 3:
            raise DecodeError("DANMU_MSG: info must be a list of at least 3")
        meta, text, user = info[0], info[1], info[2]
        if not isinstance(meta, list) or not isinstance(user, list) or not isinstance(text, str):
            raise DecodeError("DANMU_MSG: info[0], info[1], info[2] have wrong types")
        if _get(meta, 9, 0) not in (0, None):
            return None  # lottery/storm danmaku generated by a gift, not typed by a viewer
        uid = user[0] if user and isinstance(user[0], int) else 0
        name = user[1] if len(user) > 1 and isinstance(user[1], str) else ""
        admin = _get(user, 2, 0) == 1
        ts_ms = _get(meta, 4, 0)
        crc = str(_get(meta, 7, ""))
        guard = _get(info, 7, 0)
        message_id = _danmaku_id(meta) or f"{ts_ms}:{_get(meta, 5, 0)}:{crc}"
        return ChatMessage(
            platform=Platform.BILIBILI,
            channel=self.channel,
            message_id=message_id,
            # Anonymous sessions see uid 0; the uid's CRC32 still tells users apart.
            user_id=str(uid) if uid else f"crc:{crc}",
            user_name=name,
            text=text,
            roles=self._roles(uid, admin, guard if isinstance(guard, int) else 0),
            platform_time=ts_ms / 1000 if isinstance(ts_ms, int | float) else 0.0,
            received=received,
            emote_only=_get(meta, 12, 0) == 1,
            name_masked=not uid and "*" in name,
        )

    def _superchat(self, data: dict[str, Any], received: float) -> ChatMessage:
        user_info = data.get("user_info")
        if not isinstance(user_info, dict):
            user_info = {}
        uid = _int(data, "uid")
        guard = user_info.get("guard_level", 0)
        return ChatMessage(
            platform=Platform.BILIBILI,
            channel=self.channel,
            message_id=f"sc:{_int(data, 'id')}",
            user_id=str(uid),
            user_name=str(user_info.get("uname", "")),
            text=_str(data, "message"),
            roles=self._roles(uid, False, guard if isinstance(guard, int) else 0),
            paid=Paid(float(_number(data, "price")), "CNY", PaidKind.SUPERCHAT),
            platform_time=float(data.get("start_time", 0) or 0),
            received=received,
        )

    def _gift(self, data: dict[str, Any], received: float) -> ChatMessage | None:
        if data.get("coin_type") != "gold":
            return None  # free (silver) gifts: far too many to thank aloud
        uid = _int(data, "uid")
        num = _int(data, "num")
        gift = _str(data, "giftName")
        total = _number(data, "total_coin")
        tid = str(data.get("tid") or data.get("rnd") or f"{uid}:{data.get('timestamp', 0)}")
        return ChatMessage(
            platform=Platform.BILIBILI,
            channel=self.channel,
            message_id=f"gift:{tid}",
            user_id=str(uid),
            user_name=_str(data, "uname"),
            text=f"{gift} x{num}",
            roles=self._roles(uid, False, int(data.get("guard_level", 0) or 0)),
            paid=Paid(total / COINS_PER_CNY, "CNY", PaidKind.GIFT),
            event=EventKind.GIFT,
            platform_time=float(data.get("timestamp", 0) or 0),
            received=received,
        )

    def _guard(self, data: dict[str, Any], received: float) -> ChatMessage:
        uid = _int(data, "uid")
        level = _int(data, "guard_level")
        price = _number(data, "price") * _int(data, "num")
        start = data.get("start_time", 0)
        return ChatMessage(
            platform=Platform.BILIBILI,
            channel=self.channel,
            message_id=f"guard:{uid}:{start}",
            user_id=str(uid),
            user_name=_str(data, "username"),
            text=str(data.get("gift_name", "")),
            roles=self._roles(uid, False, level),
            paid=Paid(price / COINS_PER_CNY, "CNY", PaidKind.GUARD),
            event=EventKind.GUARD,
            platform_time=float(start or 0),
            received=received,
        )


def _danmaku_id(meta: list[Any]) -> str:
    """The server's own id for the danmaku, from info[0][15].extra, when present."""
    holder = _get(meta, 15, None)
    if not isinstance(holder, dict):
        return ""
    extra = holder.get("extra")
    if isinstance(extra, dict):
        id_str = extra.get("id_str")
        return id_str if isinstance(id_str, str) else ""
    if isinstance(extra, str):
        # `extra` is JSON inside a JSON string; only its id is needed, and a
        # search is far cheaper than a second parse per danmaku.
        found = _ID_STR.search(extra)
        return found.group(1) if found else ""
    return ""


def _unexpected(exc: BaseException) -> str:
    """The decode error for an exception the codec did not mean to raise."""
    text = str(exc)[:200]
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")


_JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = [1 if b in b"[{" else -1 for b in range(256)]


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects in a JSON text nest, without parsing it:
    linear C-speed passes, no recursion. Escapes go first, so every quote left
    opens or closes a string, and what is inside strings is not counted."""
    outside = b"".join(_JSON_ESCAPE.sub(b"", body).split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_BRACKET_STEP.__getitem__, brackets))))


def _json(body: bytes) -> dict[str, Any]:
    if json_depth(body) > MAX_JSON_DEPTH:
        raise DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH}")
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deep") from None
    except ValueError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("JSON body is not an object")
    return doc


def _get(seq: list[Any], index: int, default: Any) -> Any:
    return seq[index] if len(seq) > index else default


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise DecodeError(f"{key} must be an object")
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{key} must be a whole number, got {type(value).__name__}")
    return value


def _number(doc: dict[str, Any], key: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{key} must be a number, got {type(value).__name__}")
    return float(value)


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise DecodeError(f"{key} must be text, got {type(value).__name__}")
    return value
