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
    assert event.user_name == "小***" and event.name_masked
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


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b'{"a":[1,[2,{}]]}', 4),
        (b'"[[[["', 0),
        (b'{"a":"x\\"[[[","b":"\\\\"}', 1),
        (b'{"a":"\\\\","b":[[1]]}', 3),
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
        (b"", 0),
    ],
)
def test_json_depth_without_parsing(body: bytes, depth: int) -> None:
    assert codec.json_depth(body) == depth


def test_deeply_nested_json_is_refused_and_the_rest_of_the_frame_decodes() -> None:
    frame = (
        fx.message_packet(fx.danmaku(id_str="before"))
        + fx.deeply_nested(100_000)
        + fx.deeply_nested(codec.MAX_JSON_DEPTH - 1)  # the object around it is one more
        + fx.message_packet(fx.danmaku(id_str="after"))
    )
    events = decode(frame)
    assert [type(e) for e in events] == [ChatMessage, DecodeFailed, DecodeFailed, ChatMessage]
    assert isinstance(events[1], DecodeFailed)
    assert events[1].error == f"JSON nested deeper than {codec.MAX_JSON_DEPTH}"
    # At the limit it is parsed (and refused for its shape, not its depth).
    assert isinstance(events[2], DecodeFailed) and "DANMU_MSG" in events[2].error


def test_brackets_inside_text_are_not_nesting() -> None:
    event = one(fx.message_packet(fx.danmaku(id_str="b", text="[" * 500 + "{" * 500)))
    assert isinstance(event, ChatMessage) and event.text == "[" * 500 + "{" * 500


def test_any_exception_a_packet_provokes_costs_that_packet_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = BilibiliCodec._danmaku

    def buggy(self: BilibiliCodec, doc: dict[str, object], received: float) -> object:
        if "boom" in str(doc):
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, doc, received)  # type: ignore[arg-type]

    monkeypatch.setattr(BilibiliCodec, "_danmaku", buggy)
    events = decode(
        fx.message_packet(fx.danmaku(text="boom")) + fx.message_packet(fx.danmaku(id_str="ok"))
    )
    assert [type(e) for e in events] == [DecodeFailed, ChatMessage]
    assert events[0] == DecodeFailed("unexpected RecursionError: maximum recursion depth exceeded")


def test_an_exception_in_the_framing_drops_the_rest_of_the_frame_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> bytes:
        raise MemoryError

    monkeypatch.setattr(codec, "_inflate", broken)
    dec = BilibiliCodec(fx.ROOM)
    events = dec.feed(
        fx.message_packet(fx.danmaku(id_str="a")) + fx.brotli_batch(fx.danmaku()), NOW
    )
    assert [type(e) for e in events] == [ChatMessage, DecodeFailed]
    assert events[1] == DecodeFailed("unexpected MemoryError; the rest of the frame is dropped")
    (event,) = dec.feed(fx.message_packet(fx.danmaku(id_str="b")), NOW)
    assert isinstance(event, ChatMessage) and event.message_id == "b"


@pytest.fixture
def inflations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each batch inflated to (the codec's own count is what is tested)."""
    sizes: list[int] = []
    real = codec._inflate

    def counted(*args: object) -> bytes:
        out = real(*args)  # type: ignore[arg-type]
        sizes.append(len(out))
        return out

    monkeypatch.setattr(codec, "_inflate", counted)
    return sizes


def over_budget(events: list[codec.BilibiliEvent]) -> list[str]:
    return [e.error for e in events if isinstance(e, DecodeFailed) and "rest of it" in e.error]


def test_many_small_bombs_in_one_frame_share_one_budget(inflations: list[int]) -> None:
    # 200 batches of 2 MiB each: each alone is allowed, together 400 MiB.
    frame = fx.bomb_frame(200) + fx.message_packet(fx.danmaku(id_str="dropped"))
    events = decode(frame)
    assert over_budget(events) == [
        f"frame inflates past {codec.MAX_FRAME_INFLATED} bytes; the rest of it is dropped"
    ]
    assert events == [DecodeFailed(over_budget(events)[0])]
    assert sum(inflations) <= codec.MAX_FRAME_INFLATED
    assert len(inflations) == codec.MAX_FRAME_INFLATED // codec.MAX_INFLATED
    # The budget is per frame: the next one decodes.
    assert isinstance(one(fx.message_packet(fx.danmaku(id_str="next"))), ChatMessage)


# zlib packs 2 MiB into 2 KB at best (brotli: 23 bytes): fewer fit one batch.
@pytest.mark.parametrize(("ver", "count"), [(codec.VER_BROTLI, 10_000), (codec.VER_ZLIB, 500)])
def test_bombs_nested_in_a_batch_share_the_frame_budget(
    inflations: list[int], ver: int, count: int
) -> None:
    inner = fx.inflating_batch(ver=ver) * count
    packed = brotli.compress(inner) if ver == codec.VER_BROTLI else zlib.compress(inner, 9)
    events = decode(encode_packet(5, packed, ver=ver))
    assert len(over_budget(events)) == 1
    assert len(events) == 1
    assert sum(inflations) <= codec.MAX_FRAME_INFLATED


def test_packets_per_frame_are_bounded_nested_ones_included() -> None:
    empty = encode_packet(codec.OP_HEARTBEAT)
    events = decode(empty * (codec.MAX_FRAME_PACKETS + 10))
    assert over_budget(events) == [
        f"frame holds over {codec.MAX_FRAME_PACKETS} packets; the rest of it is dropped"
    ]
    batch = encode_packet(5, zlib.compress(empty * 100_000), ver=codec.VER_ZLIB)
    events = decode(batch + fx.message_packet(fx.danmaku()))
    assert len(events) == 1 and len(over_budget(events)) == 1
    # Real traffic is far from it.
    busy = fx.brotli_batch(*(fx.danmaku(id_str=f"m{i}") for i in range(1000)))
    assert len(decode(busy)) == 1000


def test_one_lone_bomb_still_costs_only_itself(brotli_bomb: bytes) -> None:
    frame = (
        encode_packet(5, brotli_bomb, ver=3)
        + fx.inflating_batch(1024)
        + fx.message_packet(fx.danmaku(id_str="ok"))
    )
    events = decode(frame)
    assert [type(e) for e in events] == [DecodeFailed, ChatMessage]


def test_heavy_frames_are_told_apart_cheaply() -> None:
    assert not codec.is_heavy(codec.heartbeat_packet())
    assert not codec.is_heavy(fx.message_packet({"cmd": "X"}))
    assert not codec.is_heavy(b"\x00" * 40)
    assert codec.is_heavy(fx.inflating_batch())
    assert codec.is_heavy(fx.nested_bomb_frame(3))
    assert codec.is_heavy(encode_packet(codec.OP_HEARTBEAT) + fx.brotli_batch(fx.danmaku()))
    assert codec.is_heavy(fx.message_packet(fx.danmaku(text="x" * 2000)))
