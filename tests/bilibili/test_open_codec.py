from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bilibili import codec, open_codec
from adapters.bilibili.codec import AuthReply, DecodeFailed
from adapters.bilibili.open_codec import (
    LiveStatus,
    OpenApiError,
    OpenLiveCodec,
    OpenReplyError,
    SessionEnded,
)
from adapters.events import ChatMessage, EventKind, Paid, PaidKind, Platform, Retraction, Role
from tests.bilibili import fixtures as fx
from tests.bilibili import open_fixtures as ofx

NOW = 12.5


def one(doc: dict[str, Any]) -> Any:
    (event,) = OpenLiveCodec(fx.ROOM, ofx.ANCHOR_OPEN_ID).feed(fx.message_packet(doc), NOW)
    return event


# Signing ------------------------------------------------------------------------
def test_signature_follows_the_documented_algorithm() -> None:
    body = b'{"code":"C8AB6X2LKZ4QP","app_id":1650000000001}'
    headers = open_codec.signed_headers(body, "key-id", "key-secret", 1732500000, "nonce-1")
    md5 = hashlib.md5(body).hexdigest()
    # The x-bili-* headers as name:value lines, sorted by name, no final newline.
    string_to_sign = (
        "x-bili-accesskeyid:key-id\n"
        f"x-bili-content-md5:{md5}\n"
        "x-bili-signature-method:HMAC-SHA256\n"
        "x-bili-signature-nonce:nonce-1\n"
        "x-bili-signature-version:1.0\n"
        "x-bili-timestamp:1732500000"
    )
    expected = hmac.new(b"key-secret", string_to_sign.encode(), hashlib.sha256).hexdigest()
    assert headers == {
        "x-bili-accesskeyid": "key-id",
        "x-bili-content-md5": md5,
        "x-bili-signature-method": "HMAC-SHA256",
        "x-bili-signature-nonce": "nonce-1",
        "x-bili-signature-version": "1.0",
        "x-bili-timestamp": "1732500000",
        "Authorization": expected,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    # The same vector from md5sum and `openssl dgst -sha256 -hmac key-secret`.
    assert md5 == "74fd8ef0e32a49faa0a482441d7598b8"
    assert expected == "49c6d51211e3f9fb3a9c8b70874e7f86cc94e8813daf198de5c76918a8beb373"


def test_request_bodies() -> None:
    assert json.loads(open_codec.start_body("CODE", 7)) == {"code": "CODE", "app_id": 7}
    assert json.loads(open_codec.heartbeat_body("g1")) == {"game_id": "g1"}
    assert json.loads(open_codec.end_body(7, "g1")) == {"app_id": 7, "game_id": "g1"}


# Replies ------------------------------------------------------------------------
def start_reply(**data: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "game_info": {"game_id": "g-1"},
        "websocket_info": {
            "auth_body": '{"roomid":1,"key":"k"}',
            "wss_link": ["wss://a.example/sub", "https://not-a-socket/", 5, "wss://b.example/sub"],
        },
        "anchor_info": {"room_id": 99, "uname": "主播", "open_id": "anchor", "uid": 1},
    }
    reply.update(data)
    return reply


def test_start_reply_gives_the_session() -> None:
    body = json.dumps({"code": 0, "message": "0", "data": start_reply()}).encode()
    game = open_codec.parse_start(open_codec.reply_data(body))
    assert game == open_codec.Game(
        game_id="g-1",
        auth_body='{"roomid":1,"key":"k"}',
        links=("wss://a.example/sub", "wss://b.example/sub"),
        room_id=99,
        anchor_name="主播",
        anchor_open_id="anchor",
    )


@pytest.mark.parametrize(
    "data",
    [
        {"game_info": {}},
        {"game_info": {"game_id": ""}},
        {"websocket_info": {"auth_body": "x", "wss_link": []}},
        {"websocket_info": {"auth_body": 5, "wss_link": ["wss://a/"]}},
        {"anchor_info": {"room_id": "99"}},
        {"anchor_info": None},
    ],
)
def test_a_start_reply_missing_a_part_is_a_reply_error(data: dict[str, Any]) -> None:
    with pytest.raises(OpenReplyError):
        open_codec.parse_start(start_reply(**data))


def test_a_refusal_carries_the_platforms_code_and_message() -> None:
    body = json.dumps({"code": 7007, "message": "身份码错误", "request_id": "r1", "data": {}})
    with pytest.raises(OpenApiError) as info:
        open_codec.reply_data(body.encode())
    refusal = info.value
    assert (refusal.code, refusal.message, refusal.request_id) == (7007, "身份码错误", "r1")
    assert str(info.value) == "code 7007 (身份码错误)"
    assert info.value.stops
    assert "身份码" in info.value.hint


@pytest.mark.parametrize(
    ("code", "stops"),
    [
        *[(code, True) for code in (7007, 4002, 4001, 8002, 4003)],
        *[(code, False) for code in (7002, 7010, 7001, 5000, 4009, 4004)],
    ],
)
def test_which_refusals_stop(code: int, stops: bool) -> None:
    assert OpenApiError(code, "").stops is stops


@pytest.mark.parametrize(
    "body",
    [b"<html>502</html>", b"[1]", b'{"message":"x"}', b'{"code":"0"}', b"\xff\xfe", b"[" * 5000],
)
def test_a_reply_that_is_not_the_envelope_is_a_reply_error(body: bytes) -> None:
    with pytest.raises(OpenReplyError):
        open_codec.reply_data(body)


def test_auth_packet_is_the_auth_body_as_given() -> None:
    packet = open_codec.auth_packet('{"roomid":1,"key":"ü"}')
    length, header_len, ver, op, seq = codec.HEADER.unpack(packet[:16])
    assert (length, header_len, ver, op, seq) == (len(packet), 16, 1, codec.OP_AUTH, 1)
    assert packet[16:] == '{"roomid":1,"key":"ü"}'.encode()


# Commands -----------------------------------------------------------------------
def test_danmaku_with_its_name_and_open_id() -> None:
    event = one(ofx.danmaku("你好", msg_id="m-1"))
    assert event == ChatMessage(
        platform=Platform.BILIBILI,
        channel=str(fx.ROOM),
        message_id="m-1",
        user_id=ofx.VIEWER_OPEN_ID,
        user_name="小明",
        text="你好",
        platform_time=1732500000.0,
        received=NOW,
    )


@pytest.mark.parametrize(
    ("fields", "roles"),
    [
        ({"open_id": ofx.ANCHOR_OPEN_ID}, {Role.BROADCASTER}),
        ({"is_admin": 1}, {Role.MODERATOR}),
        ({"guard_level": 2}, {Role.GUARD}),
        ({"guard_level": 7}, set()),
    ],
)
def test_danmaku_roles(fields: dict[str, Any], roles: set[Role]) -> None:
    assert one(ofx.danmaku(**fields)).roles == roles


def test_a_sticker_danmaku_is_emote_only() -> None:
    assert one(ofx.danmaku("[dog]", dm_type=1)).emote_only
    assert not one(ofx.danmaku("[dog]")).emote_only


def test_superchat_and_its_deletion_share_the_web_paths_ids() -> None:
    sc = one(ofx.superchat(message_id=9001, rmb=50, message="冲"))
    assert (sc.message_id, sc.user_name, sc.text) == ("sc:9001", "大佬", "冲")
    assert sc.paid == Paid(50.0, "CNY", PaidKind.SUPERCHAT)
    assert sc.roles == {Role.GUARD}
    web = codec.BilibiliCodec(fx.ROOM).command_event(fx.superchat(sc_id=9001), NOW)
    assert isinstance(web, ChatMessage) and web.message_id == sc.message_id
    assert one(ofx.superchat_delete(9001, 9002)) == Retraction(
        Platform.BILIBILI,
        str(fx.ROOM),
        message_ids=frozenset({"sc:9001", "sc:9002"}),
        reason="superchat_deleted",
    )


def test_a_paid_gift_is_worth_what_was_paid_and_reads_like_the_web_paths() -> None:
    event = one(ofx.gift(price=1000, r_price=900, num=3, name="牛哇牛哇", msg_id="g-7"))
    assert (event.message_id, event.text, event.user_name) == ("gift:g-7", "牛哇牛哇 x3", "送礼人")
    assert event.event is EventKind.GIFT
    assert event.paid == Paid(2.7, "CNY", PaidKind.GIFT)


def test_a_free_gift_is_not_read() -> None:
    assert OpenLiveCodec(fx.ROOM).feed(fx.message_packet(ofx.gift(paid=False)), NOW) == []


def test_a_guard_with_the_buyers_name_and_price() -> None:
    event = one(ofx.guard(level=3, num=2, price=198000))
    assert (event.user_id, event.user_name) == ("guard-buyer-open-id", "舰长大人")
    assert event.text == "舰长"
    assert (event.message_id, event.event) == ("guard:guard-1", EventKind.GUARD)
    assert event.paid == Paid(396.0, "CNY", PaidKind.GUARD)
    assert event.roles == {Role.GUARD}


def test_session_end_and_live_status() -> None:
    assert one(ofx.interaction_end("g-1")) == SessionEnded("g-1")
    assert one(ofx.live(start=True)) == LiveStatus(True, "今天唱歌")
    assert one(ofx.live(start=False)) == LiveStatus(False, "今天唱歌")


def test_likes_are_ignored_and_unknown_commands_counted() -> None:
    decoder = OpenLiveCodec(fx.ROOM)
    frame = fx.message_packet(ofx.like()) + fx.message_packet({"cmd": "SOMETHING_NEW", "data": {}})
    assert decoder.feed(frame, NOW) == []
    assert dict(decoder.unknown_commands) == {"SOMETHING_NEW": 1}


def test_a_zlib_batch_and_the_auth_reply_decode_with_the_web_framing() -> None:
    frame = codec.encode_packet(codec.OP_AUTH_REPLY, b'{"code":0}') + fx.zlib_batch(
        ofx.danmaku(msg_id="a"), ofx.danmaku(msg_id="b")
    )
    events = OpenLiveCodec(fx.ROOM).feed(frame, NOW)
    assert events[0] == AuthReply(0)
    assert [e.message_id for e in events[1:]] == ["a", "b"]


def broken(doc: dict[str, Any], *path: str, value: Any) -> dict[str, Any]:
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (broken(ofx.danmaku(), "data", "open_id", value=""), "LIVE_OPEN_PLATFORM_DM: no open_id"),
        (broken(ofx.danmaku(), "data", "msg", value=None), "msg must be text"),
        (broken(ofx.danmaku(), "data", value=[1]), "data must be an object"),
        (broken(ofx.superchat(), "data", "message_id", value="1"), "message_id must be a whole"),
        (broken(ofx.superchat(), "data", "rmb", value=-30), "rmb must be a number of at least 0"),
        (broken(ofx.superchat_delete(1), "data", "message_ids", value=[True]), "message_ids"),
        (broken(ofx.gift(), "data", "paid", value="yes"), "paid must be true or false"),
        (broken(ofx.gift(), "data", "gift_num", value=None), "gift_num must be a whole"),
        (broken(ofx.guard(), "data", "user_info", value="x"), "user_info must be an object"),
        (broken(ofx.guard(), "data", "guard_level", value=9), "unknown guard level 9"),
        ({"cmd": 5, "data": {}}, "command without a cmd string"),
    ],
)
def test_malformed_commands_are_decode_failures_naming_the_fault(
    doc: dict[str, Any], error: str
) -> None:
    event = one(doc)
    assert isinstance(event, DecodeFailed)
    assert error in event.error


@pytest.mark.parametrize("amount", [b"NaN", b"Infinity"])
def test_nan_and_infinite_amounts_are_refused(amount: bytes) -> None:
    body = fx.body(ofx.superchat()).replace(b'"rmb": 30', b'"rmb": ' + amount)
    frame = codec.encode_packet(codec.OP_MESSAGE, body, ver=codec.VER_JSON)
    (event,) = OpenLiveCodec(fx.ROOM).feed(frame, NOW)
    assert isinstance(event, DecodeFailed)
    assert "rmb must be a number of at least 0" in event.error


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
COMMANDS = [
    "LIVE_OPEN_PLATFORM_DM",
    "LIVE_OPEN_PLATFORM_SEND_GIFT",
    "LIVE_OPEN_PLATFORM_GUARD",
    "LIVE_OPEN_PLATFORM_SUPER_CHAT",
    "LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL",
    "LIVE_OPEN_PLATFORM_INTERACTION_END",
    "LIVE_OPEN_PLATFORM_LIVE_START",
]


@settings(max_examples=200, deadline=None)
@given(
    cmd=st.sampled_from(COMMANDS),
    base=st.sampled_from([ofx.danmaku(), ofx.gift(), ofx.guard(), ofx.superchat()]),
    key=st.sampled_from(
        [
            *("open_id", "uname", "msg", "msg_id", "gift_num", "price", "r_price", "paid"),
            *("rmb", "message_id", "message_ids", "user_info", "guard_level", "guard_num"),
            "game_id",
        ]
    ),
    value=JSON,
)
def test_any_value_anywhere_never_raises(
    cmd: str, base: dict[str, Any], key: str, value: Any
) -> None:
    doc = {"cmd": cmd, "data": {**base["data"], key: value}}
    events = OpenLiveCodec(fx.ROOM).feed(fx.message_packet(doc), NOW)
    assert len(events) <= 1
