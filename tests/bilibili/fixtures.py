"""Real-shape Bilibili command bodies (as JSON objects) and framing helpers."""

from __future__ import annotations

import json
import zlib
from typing import Any

import brotli

from adapters.bilibili.codec import (
    MAX_INFLATED,
    OP_HEARTBEAT,
    OP_MESSAGE,
    VER_BROTLI,
    VER_JSON,
    VER_ZLIB,
    encode_packet,
)

ROOM = 21452505
OWNER = 1000


def extra(id_str: str) -> str:
    return json.dumps({"id_str": id_str, "content": "", "emots": None}, ensure_ascii=False)


def danmaku(
    text: str = "主播好!",
    uid: int = 12345,
    name: str = "小明",
    admin: int = 0,
    guard: int = 0,
    dm_type: int = 0,
    id_str: str = "abc123",
    lottery: int = 0,
    medal: list[Any] | None = None,
    cmd: str = "DANMU_MSG:4:0:2:2:2:0",
) -> dict[str, Any]:
    meta = [
        0,
        1,
        25,
        16777215,
        1732500000123,
        1732499999,
        0,
        "8f3a2b1c",
        0,
        lottery,
        0,
        "",
        0,
        "{}" if dm_type != 1 else {"emoticon_unique": "official_13", "url": "https://x/y.png"},
        "{}",
        {"user": {"uid": uid, "base": {"name": name}}, "extra": extra(id_str)},
    ]
    meta[12] = dm_type
    return {
        "cmd": cmd,
        "info": [
            meta,
            text,
            [uid, name, admin, 0, 0, 10000, 1, ""],
            medal if medal is not None else [21, "小明粉", "主播", ROOM, 398668, "", 0],
            [12, 0, 6406234, ">50000"],
            ["", ""],
            0,
            guard,
            None,
            {"ts": 1732499999, "ct": "ABCDEF"},
            0,
            0,
            None,
            None,
            0,
            210,
            [3],
        ],
        "dm_v2": "",
    }


def superchat(sc_id: int = 7001, price: int = 30, message: str = "加油!") -> dict[str, Any]:
    return {
        "cmd": "SUPER_CHAT_MESSAGE",
        "data": {
            "id": sc_id,
            "uid": 4242,
            "price": price,
            "message": message,
            "message_trans": "",
            "start_time": 1732500100,
            "end_time": 1732500160,
            "time": 60,
            "user_info": {"uname": "大佬", "guard_level": 3, "face": ""},
            "medal_info": None,
        },
        "roomid": ROOM,
    }


def superchat_delete(*ids: int) -> dict[str, Any]:
    return {"cmd": "SUPER_CHAT_MESSAGE_DELETE", "data": {"ids": list(ids)}, "roomid": ROOM}


def gift(
    coin_type: str = "gold",
    total: int = 1000,
    num: int = 1,
    *,
    uid: int = 5555,
    uname: str = "送礼人",
    name: str | None = None,
    tid: str = "1732500200111100001",
) -> dict[str, Any]:
    return {
        "cmd": "SEND_GIFT",
        "data": {
            "giftName": name or ("小心心" if coin_type == "silver" else "牛哇牛哇"),
            "giftId": 31039,
            "num": num,
            "uid": uid,
            "uname": uname,
            "price": total // max(num, 1),
            "coin_type": coin_type,
            "total_coin": total,
            "action": "投喂",
            "timestamp": 1732500200,
            "guard_level": 0,
            "tid": tid,
            "rnd": "1732500200",
            "blind_gift": None,
        },
    }


def combo_send(
    combo_num: int, *, uid: int = 5555, name: str = "牛哇牛哇", price: int = 100
) -> dict[str, Any]:
    """The running total Bilibili sends beside a combo's SEND_GIFTs (blivedm's fields)."""
    return {
        "cmd": "COMBO_SEND",
        "data": {
            "uid": uid,
            "uname": "送礼人",
            "gift_name": name,
            "gift_id": 31039,
            "action": "投喂",
            "combo_num": combo_num,
            "batch_combo_num": combo_num,
            "total_num": combo_num,
            "combo_total_coin": combo_num * price,
            "coin_type": "gold",
            "batch_combo_id": "batch:gift:combo_id:5555:1000:31039:1732500200.1",
        },
        "roomid": ROOM,
    }


def guard_buy() -> dict[str, Any]:
    return {
        "cmd": "GUARD_BUY",
        "data": {
            "uid": 6666,
            "username": "舰长大人",
            "guard_level": 3,
            "num": 1,
            "price": 198000,
            "gift_id": 10003,
            "gift_name": "舰长",
            "start_time": 1732500300,
            "end_time": 1732500300,
        },
    }


def interact_word() -> dict[str, Any]:
    return {"cmd": "INTERACT_WORD", "data": {"uid": 1, "uname": "路人", "msg_type": 1}}


def room_block(uid: int = 12345) -> dict[str, Any]:
    return {
        "cmd": "ROOM_BLOCK_MSG",
        "uid": str(uid),
        "uname": "小明",
        "data": {"uid": uid, "uname": "小明", "operator": 1},
    }


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def message_packet(doc: dict[str, Any]) -> bytes:
    return encode_packet(OP_MESSAGE, body(doc), ver=VER_JSON, seq=0)


def zlib_batch(*docs: dict[str, Any]) -> bytes:
    inner = b"".join(message_packet(d) for d in docs)
    return encode_packet(OP_MESSAGE, zlib.compress(inner), ver=VER_ZLIB, seq=0)


def brotli_batch(*docs: dict[str, Any]) -> bytes:
    inner = b"".join(message_packet(d) for d in docs)
    # Quality 5: the default (11) costs ~3 ms a batch, which at flood rates is a
    # third of a core taken from the bot under test; decoding is the same.
    return encode_packet(OP_MESSAGE, brotli.compress(inner, quality=5), ver=VER_BROTLI, seq=0)


def deeply_nested(depth: int) -> bytes:
    """A DANMU_MSG packet whose info nests `depth` arrays deep (past ~1000, more
    than json.loads can recurse)."""
    doc = b'{"cmd":"DANMU_MSG","info":' + b"[" * depth + b"]" * depth + b"}"
    return encode_packet(OP_MESSAGE, doc, ver=VER_JSON, seq=0)


def inflating_batch(size: int = MAX_INFLATED, ver: int = VER_BROTLI) -> bytes:
    """A batch of a few dozen bytes that inflates to `size` (the most one batch
    may): one packet of spaces, with an op the codec ignores."""
    inner = encode_packet(OP_HEARTBEAT, b" " * (size - 16))
    packed = brotli.compress(inner) if ver == VER_BROTLI else zlib.compress(inner, 9)
    return encode_packet(OP_MESSAGE, packed, ver=ver, seq=0)


def bomb_frame(count: int = 200) -> bytes:
    """`count` tiny batches, each inflating to 2 MiB: each within the per-batch
    limit, hundreds of MiB together."""
    return inflating_batch() * count


def nested_bomb_frame(count: int = 10_000) -> bytes:
    """One compressed batch holding `count` compressed batches of 2 MiB each."""
    inner = inflating_batch() * count
    return encode_packet(OP_MESSAGE, brotli.compress(inner), ver=VER_BROTLI, seq=0)
