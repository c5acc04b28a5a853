"""The open live platform's commands in their documented shapes (as JSON objects)."""

from __future__ import annotations

from typing import Any

from tests.bilibili.fixtures import ROOM

ANCHOR_OPEN_ID = "a5e3a1c0-1d2b-4c3e-9f00-anchor000001"
VIEWER_OPEN_ID = "0f6c1b2a-7d8e-4f90-a1b2-viewer000001"


def medal() -> dict[str, Any]:
    return {"fans_medal_level": 21, "fans_medal_name": "小明粉", "fans_medal_wearing_status": True}


def danmaku(
    text: str = "主播好!",
    *,
    msg_id: str = "dm-1",
    open_id: str = VIEWER_OPEN_ID,
    uname: str = "小明",
    guard_level: int = 0,
    is_admin: int = 0,
    dm_type: int = 0,
) -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_DM",
        "data": {
            "room_id": ROOM,
            "uid": 0,
            "open_id": open_id,
            "union_id": "",
            "uname": uname,
            "uface": "https://i0.hdslb.com/bfs/face/x.jpg",
            "timestamp": 1732500000,
            "msg": text,
            "msg_id": msg_id,
            "guard_level": guard_level,
            **medal(),
            "emoji_img_url": "https://i0.hdslb.com/bfs/emote/x.png" if dm_type == 1 else "",
            "dm_type": dm_type,
            "glory_level": 3,
            "reply_open_id": "",
            "reply_uname": "",
            "is_admin": is_admin,
        },
    }


def superchat(message_id: int = 7001, rmb: int = 30, message: str = "加油!") -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_SUPER_CHAT",
        "data": {
            "room_id": ROOM,
            "uid": 0,
            "open_id": "sc-giver-open-id",
            "union_id": "",
            "uname": "大佬",
            "uface": "",
            "message_id": message_id,
            "message": message,
            "rmb": rmb,
            "timestamp": 1732500100,
            "start_time": 1732500100,
            "end_time": 1732500160,
            "guard_level": 3,
            **medal(),
            "msg_id": f"sc-msg-{message_id}",
        },
    }


def superchat_delete(*ids: int) -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL",
        "data": {"room_id": ROOM, "message_ids": list(ids), "msg_id": "sc-del-1"},
    }


def gift(
    *,
    paid: bool = True,
    price: int = 1000,
    r_price: int | None = None,
    num: int = 1,
    name: str = "牛哇牛哇",
    msg_id: str = "gift-1",
    open_id: str = "gift-giver-open-id",
    uname: str = "送礼人",
) -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_SEND_GIFT",
        "data": {
            "room_id": ROOM,
            "uid": 0,
            "open_id": open_id,
            "union_id": "",
            "uname": uname,
            "uface": "",
            "gift_id": 31039,
            "gift_name": name,
            "gift_num": num,
            "price": price,
            "r_price": price if r_price is None else r_price,
            "paid": paid,
            **medal(),
            "guard_level": 0,
            "timestamp": 1732500200,
            "anchor_info": {
                "uid": 0,
                "open_id": ANCHOR_OPEN_ID,
                "union_id": "",
                "uname": "主播",
                "uface": "",
            },
            "msg_id": msg_id,
            "gift_icon": "",
            "combo_gift": True,
            "combo_info": {
                "combo_base_num": 1,
                "combo_count": 1,
                "combo_id": "combo-1",
                "combo_timeout": 3,
            },
            "blind_gift": {"blind_gift_id": 0, "status": False},
        },
    }


def guard(level: int = 3, num: int = 1, price: int = 198000) -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_GUARD",
        "data": {
            "user_info": {
                "uid": 0,
                "open_id": "guard-buyer-open-id",
                "union_id": "",
                "uname": "舰长大人",
                "uface": "",
            },
            "guard_level": level,
            "guard_num": num,
            "guard_unit": "月",
            "price": price,
            **medal(),
            "room_id": ROOM,
            "msg_id": "guard-1",
            "timestamp": 1732500300,
        },
    }


def like() -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_LIKE",
        "data": {
            "uname": "路人",
            "open_id": "liker",
            "union_id": "",
            "uface": "",
            "timestamp": 1732500400,
            "room_id": ROOM,
            "like_text": "为主播点赞了",
            "like_count": 5,
            **medal(),
            "msg_id": "like-1",
        },
    }


def live(start: bool = True) -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_LIVE_START" if start else "LIVE_OPEN_PLATFORM_LIVE_END",
        "data": {
            "room_id": ROOM,
            "open_id": ANCHOR_OPEN_ID,
            "union_id": "",
            "timestamp": 1732500500,
            "area_name": "虚拟主播",
            "title": "今天唱歌",
            "msg_id": "live-1",
        },
    }


def interaction_end(game_id: str) -> dict[str, Any]:
    return {
        "cmd": "LIVE_OPEN_PLATFORM_INTERACTION_END",
        "data": {"game_id": game_id, "timestamp": 1732500600},
    }
