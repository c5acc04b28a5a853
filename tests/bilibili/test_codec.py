from __future__ import annotations

import json
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bilibili import codec
from adapters.bilibili.codec import (
    AuthReply,
    BilibiliCodec,
    DecodeFailed,
    HeartbeatReply,
    LoginNotice,
    Packet,
    encode_packet,
    split_packets,
)
from adapters.events import ChatMessage, EventKind, Paid, PaidKind, Platform, Retraction, Role
from tests.bilibili import fixtures as fx

NOW = 77.0


def decode(frame: bytes) -> list[codec.BilibiliEvent]:
    return BilibiliCodec(fx.ROOM, owner_uid=fx.OWNER).feed(frame, NOW)


def one(frame: bytes) -> codec.BilibiliEvent:
    (event,) = decode(frame)
    return event


def test_auth_packet_bytes_match_the_worked_example() -> None:
    packet = codec.auth_packet(uid=0, room_id=12345, key="TOKEN", buvid="")
    assert packet[:16] == bytes.fromhex("0000005d 0010 0001 00000007 00000001".replace(" ", ""))
    assert json.loads(packet[16:]) == {
        "uid": 0,
        "roomid": 12345,
        "protover": 3,
        "platform": "web",
        "type": 2,
        "key": "TOKEN",
    }
    assert len(packet) == 93


def test_auth_packet_with_buvid_and_no_key() -> None:
    body = json.loads(codec.auth_packet(uid=7, room_id=1, key="", buvid="B-1")[16:])
    assert body["buvid"] == "B-1"
    assert "key" not in body


def test_heartbeat_and_replies_bytes() -> None:
    assert codec.heartbeat_packet() == bytes.fromhex("00000010001000010000000200000001")
    reply = bytes.fromhex("0000001a001000010000000800000001") + b'{"code":0}'
    assert one(reply) == AuthReply(0)
    assert one(encode_packet(codec.OP_AUTH_REPLY, b'{"code":-101}')) == AuthReply(-101)
    hb = bytes.fromhex("0000001400100001000000030000000100000001")
    assert one(hb) == HeartbeatReply(1)


def test_heartbeat_reply_length_quirk_with_echoed_bytes() -> None:
    # The header claims 20 bytes but the frame carries 4 more (the client's echo).
    hb = bytes.fromhex("00000014001000010000000300000001") + (5).to_bytes(4, "big") + b"junk"
    assert decode(hb) == [HeartbeatReply(5)]


def test_header_roundtrip_and_honours_header_len() -> None:
    packet = encode_packet(5, b"xyz", ver=0, seq=9)
    assert codec.HEADER.unpack(packet[:16]) == (19, 16, 0, 5, 9)
    padded = codec.HEADER.pack(16 + 2 + 3, 18, 0, 5, 1) + b"\0\0" + b"xyz"
    assert list(split_packets(padded)) == [Packet(0, 5, b"xyz", 1)]


def test_several_packets_in_one_frame() -> None:
    frame = fx.message_packet(fx.danmaku(id_str="a")) + fx.message_packet(fx.superchat())
    events = decode(frame)
    assert [type(e) for e in events] == [ChatMessage, ChatMessage]


def test_zlib_and_brotli_batches_and_nesting() -> None:
    docs = [fx.danmaku(id_str="z1"), fx.danmaku(id_str="z2"), fx.interact_word()]
    zl = decode(fx.zlib_batch(*docs))
    br = decode(fx.brotli_batch(*docs))
    assert [e.message_id for e in zl if isinstance(e, ChatMessage)] == ["z1", "z2"]
    assert zl == br
    nested = encode_packet(
        codec.OP_MESSAGE, brotli.compress(fx.zlib_batch(fx.danmaku(id_str="n1"))), ver=3
    )
    (event,) = decode(nested)
    assert isinstance(event, ChatMessage) and event.message_id == "n1"


def test_nesting_too_deep_is_refused() -> None:
    packet = fx.message_packet(fx.danmaku())
    for _ in range(codec.MAX_DEPTH + 1):
        packet = encode_packet(codec.OP_MESSAGE, zlib.compress(packet), ver=codec.VER_ZLIB)
    (event,) = decode(packet)
    assert isinstance(event, DecodeFailed) and "nested deeper" in event.error


def test_danmaku_real_shape() -> None:
    event = one(fx.message_packet(fx.danmaku()))
    assert event == ChatMessage(
        platform=Platform.BILIBILI,
        channel=str(fx.ROOM),
        message_id="abc123",
        user_id="12345",
        user_name="小明",
        text="主播好!",
        roles=frozenset(),
        platform_time=1732500000.123,
        received=NOW,
    )


def test_danmaku_roles() -> None:
    admin = one(fx.message_packet(fx.danmaku(admin=1, guard=3)))
    assert isinstance(admin, ChatMessage)
    assert admin.roles == {Role.MODERATOR, Role.GUARD}
    owner = one(fx.message_packet(fx.danmaku(uid=fx.OWNER)))
    assert isinstance(owner, ChatMessage)
    assert owner.roles == {Role.BROADCASTER}


def test_masked_anonymous_user_gets_crc_pseudo_id_and_empty_medal() -> None:
    event = one(fx.message_packet(fx.danmaku(uid=0, name="小***", medal=[])))
    assert isinstance(event, ChatMessage)
    assert event.user_id == "crc:8f3a2b1c"
    assert event.user_name == "小***"
    assert event.roles == frozenset()  # uid 0 is never the owner


def test_emoticon_danmaku_flagged_and_lottery_skipped() -> None:
    sticker = one(fx.message_packet(fx.danmaku(text="[dog]", dm_type=1)))
    assert isinstance(sticker, ChatMessage) and sticker.emote_only
    assert decode(fx.message_packet(fx.danmaku(lottery=1))) == []


def test_danmaku_without_id_str_gets_a_composed_id() -> None:
    doc = fx.danmaku()
    doc["info"][0][15] = {"user": {}, "extra": "not json"}
    event = one(fx.message_packet(doc))
    assert isinstance(event, ChatMessage)
    assert event.message_id == "1732500000123:1732499999:8f3a2b1c"


def test_short_old_style_danmaku_info_still_decodes() -> None:
    doc = {"cmd": "DANMU_MSG", "info": [[0, 1, 25, 0, 1000], "hi", [9, "old"]]}
    event = one(fx.message_packet(doc))
    assert isinstance(event, ChatMessage)
    assert (event.text, event.user_id, event.roles) == ("hi", "9", frozenset())


def test_superchat_and_its_deletion() -> None:
    sc = one(fx.message_packet(fx.superchat(sc_id=7001, price=30)))
    assert isinstance(sc, ChatMessage)
    assert sc.message_id == "sc:7001"
    assert sc.paid == Paid(30.0, "CNY", PaidKind.SUPERCHAT)
    assert sc.text == "加油!"
    assert sc.user_name == "大佬"
    assert sc.roles == {Role.GUARD}
    jpn = dict(fx.superchat(), cmd="SUPER_CHAT_MESSAGE_JPN")
    assert decode(fx.message_packet(jpn)) == []
    assert one(fx.message_packet(fx.superchat_delete(7001, 7002))) == Retraction(
        Platform.BILIBILI,
        str(fx.ROOM),
        message_ids=frozenset({"sc:7001", "sc:7002"}),
        reason="superchat_deleted",
    )


def test_gifts_paid_only_when_gold() -> None:
    gold = one(fx.message_packet(fx.gift("gold", total=5200, num=52)))
    assert isinstance(gold, ChatMessage)
    assert gold.event is EventKind.GIFT
    assert gold.paid == Paid(5.2, "CNY", PaidKind.GIFT)
    assert gold.text == "牛哇牛哇 x52"
    assert gold.message_id == "gift:1732500200111100001"
    assert decode(fx.message_packet(fx.gift("silver"))) == []


def test_guard_buy() -> None:
    event = one(fx.message_packet(fx.guard_buy()))
    assert isinstance(event, ChatMessage)
    assert event.event is EventKind.GUARD
    assert event.paid == Paid(198.0, "CNY", PaidKind.GUARD)
    assert event.roles == {Role.GUARD}
    assert decode(fx.message_packet({"cmd": "USER_TOAST_MSG_V2", "data": {}})) == []


def test_room_block_retracts_user() -> None:
    assert one(fx.message_packet(fx.room_block(12345))) == Retraction(
        Platform.BILIBILI, str(fx.ROOM), user_id="12345", reason="ban"
    )


def test_login_notice() -> None:
    doc = {"cmd": "LOG_IN_NOTICE", "data": {"notice_msg": "未注册登陆用户将无法查看他人昵称"}}
    assert one(fx.message_packet(doc)) == LoginNotice("未注册登陆用户将无法查看他人昵称")


def test_ignored_and_unknown_commands_counted() -> None:
    dec = BilibiliCodec(fx.ROOM)
    frame = b"".join(
        fx.message_packet(d)
        for d in (fx.interact_word(), {"cmd": "BRAND_NEW_THING"}, {"cmd": "BRAND_NEW_THING:1"})
    )
    assert dec.feed(frame, NOW) == []
    assert dec.unknown_commands == {"BRAND_NEW_THING": 2}


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\x00" * 10, "truncated header"),
        (codec.HEADER.pack(100, 16, 0, 5, 0) + b"{}", "overruns the frame"),
        (codec.HEADER.pack(8, 16, 0, 5, 0) + b"{}", "bad lengths"),
        (codec.HEADER.pack(16, 12, 0, 5, 0), "bad lengths"),
        (encode_packet(5, b'{"cmd": "DANMU_MSG", ', ver=0), "invalid JSON"),
        (encode_packet(5, b'{"cmd": "\xff\xfe"}', ver=0), "invalid UTF-8"),
        (encode_packet(5, b"[1, 2]", ver=0), "not an object"),
        (encode_packet(5, b'{"cmd": 5}', ver=0), "without a cmd"),
        (encode_packet(5, b"garbage", ver=2), "bad zlib batch"),
        (encode_packet(5, zlib.compress(b"x" * 100)[:-5], ver=2), "truncated zlib"),
        (encode_packet(5, b"garbage", ver=3), "bad brotli batch"),
        (encode_packet(5, b"{}", ver=9), "unknown protocol version 9"),
        (encode_packet(3, b"\x00", ver=1), "short heartbeat reply"),
        (fx.message_packet({"cmd": "DANMU_MSG", "info": "x"}), "info must be a list"),
        (fx.message_packet({"cmd": "DANMU_MSG", "info": [[], 5, []]}), "wrong types"),
        (fx.message_packet(dict(fx.superchat(), data={"id": "x"})), "id must be a whole number"),
        (fx.message_packet({"cmd": "SUPER_CHAT_MESSAGE", "data": []}), "data must be an object"),
        (
            fx.message_packet({"cmd": "SUPER_CHAT_MESSAGE_DELETE", "data": {"ids": ["a"]}}),
            "ids must be numbers",
        ),
        (fx.message_packet(dict(fx.gift(), data={**fx.gift()["data"], "num": "1"})), "num must"),
        (fx.message_packet({"cmd": "ROOM_BLOCK_MSG", "uid": "x"}), "uid must be a number"),
    ],
)
def test_malformed_packets_give_decode_failed(frame: bytes, error: str) -> None:
    events = decode(frame)
    assert len(events) == 1
    assert isinstance(events[0], DecodeFailed)
    assert error in events[0].error


def test_bad_packet_does_not_stop_the_rest_of_the_frame() -> None:
    frame = (
        fx.message_packet(fx.danmaku(id_str="before"))
        + encode_packet(5, b"{not json", ver=0)
        + encode_packet(5, b"garbage", ver=3)
        + fx.message_packet(fx.danmaku(id_str="after"))
    )
    events = decode(frame)
    assert [type(e) for e in events] == [ChatMessage, DecodeFailed, DecodeFailed, ChatMessage]


@pytest.fixture(scope="module")
def brotli_bomb() -> bytes:
    """1 GiB of zeros brotli-compressed to about 200 KB."""
    comp = brotli.Compressor(quality=1)
    chunk = b"\0" * (1 << 24)
    data = b"".join(comp.process(chunk) for _ in range(64)) + comp.finish()
    assert len(data) < 1 << 20
    return data


def test_brotli_bomb_is_refused_quickly(brotli_bomb: bytes) -> None:
    frame = encode_packet(5, brotli_bomb, ver=3) + fx.message_packet(fx.danmaku(id_str="ok"))
    events = decode(frame)
    assert isinstance(events[0], DecodeFailed)
    assert "inflates past" in events[0].error
    assert isinstance(events[1], ChatMessage) and events[1].message_id == "ok"


def test_zlib_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\0" * (64 << 20), 9)
    (event,) = decode(encode_packet(5, bomb, ver=2))
    assert isinstance(event, DecodeFailed) and "inflates past" in event.error


@given(st.binary(max_size=600))
@settings(max_examples=500)
def test_fuzz_frames_only_decode_failures(frame: bytes) -> None:
    for event in decode(frame):
        assert isinstance(event, codec.BilibiliEvent)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(
    cmd=st.sampled_from(
        [
            "DANMU_MSG",
            "SUPER_CHAT_MESSAGE",
            "SUPER_CHAT_MESSAGE_DELETE",
            "SEND_GIFT",
            "GUARD_BUY",
            "ROOM_BLOCK_MSG",
            "LOG_IN_NOTICE",
            "WHATEVER",
        ]
    ),
    data=json_values,
    info=json_values,
)
@settings(max_examples=500)
def test_fuzz_commands_with_wrong_field_types(cmd: str, data: object, info: object) -> None:
    frame = encode_packet(5, json.dumps({"cmd": cmd, "data": data, "info": info}).encode(), ver=0)
    for event in decode(frame):
        assert isinstance(event, codec.BilibiliEvent)


@given(st.lists(st.sampled_from(["danmaku", "sc", "del", "gift", "junk"]), max_size=6), st.data())
@settings(max_examples=100)
def test_fuzz_mutated_real_frames(kinds: list[str], data: st.DataObject) -> None:
    docs = {
        "danmaku": fx.danmaku(),
        "sc": fx.superchat(),
        "del": fx.superchat_delete(1),
        "gift": fx.gift(),
        "junk": {"cmd": "X"},
    }
    frame = bytearray(fx.brotli_batch(*(docs[k] for k in kinds)) if kinds else b"")
    for _ in range(data.draw(st.integers(0, 3))):
        if frame:
            i = data.draw(st.integers(0, len(frame) - 1))
            frame[i] = data.draw(st.integers(0, 255))
    for event in decode(bytes(frame)):
        assert isinstance(event, codec.BilibiliEvent)
