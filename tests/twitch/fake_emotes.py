"""Loopback 7TV, BetterTTV and FrankerFaceZ APIs: one aiohttp server, each
service under its own prefix, answering in the services' real reply shapes
(and, on request, the ways a real one fails)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from adapters.twitch.emotes import Scope, Service

#: How a set answers: its real shape, or one of the failures.
Mode = Literal["ok", "404", "500", "slow", "html", "shape", "huge", "huge_chunked", "truncated"]

DEFAULT_NAMES: dict[tuple[Service, Scope], list[str]] = {
    ("7tv", "global"): ["EZ", "Clap", "RainTime"],
    ("7tv", "channel"): ["catJAM", "KEKW"],
    ("bttv", "global"): ["FeelsBadMan", ":tf:", "SourPls"],
    ("bttv", "channel"): ["monkaS", "OMEGALUL"],
    ("ffz", "global"): ["CatBag", "ZreknarF"],
    ("ffz", "channel"): ["LULW", "Pog"],
}


def seventv_emote(name: str, n: int) -> dict[str, Any]:
    emote_id = f"01GB{n:022d}"
    return {
        "id": emote_id,
        "name": name,
        "flags": 0,
        "timestamp": 1_700_000_000_000 + n,
        "actor_id": None,
        "data": {
            "id": emote_id,
            "name": name,
            "flags": 0,
            "lifecycle": 3,
            "state": ["LISTED"],
            "listed": True,
            "animated": False,
            "owner": {"id": "01F74BZYAR00069YQS4JB48G14", "username": "someone"},
            "host": {"url": f"//cdn.7tv.app/emote/{emote_id}", "files": []},
        },
    }


def seventv_set(names: list[str], set_name: str) -> dict[str, Any]:
    return {
        "id": "01HKQT8EWR000ESSWF3625XCS4",
        "name": set_name,
        "flags": 0,
        "tags": [],
        "immutable": False,
        "privileged": False,
        "emotes": [seventv_emote(name, n) for n, name in enumerate(names)],
        "emote_count": len(names),
        "capacity": 1000,
    }


def bttv_emote(name: str, n: int, shared: bool = False) -> dict[str, Any]:
    emote = {
        "id": f"54fa{n:020x}",
        "code": name,
        "imageType": "png",
        "animated": False,
        "modifier": False,
    }
    if shared:
        emote["user"] = {
            "id": "5561169bd6b9d206222a8c19",
            "name": "someone",
            "displayName": "Someone",
            "providerId": "12345",
        }
    else:
        emote["userId"] = "5561169bd6b9d206222a8c19"
    return emote


def ffz_set(set_id: int, names: list[str], title: str) -> dict[str, Any]:
    return {
        "id": set_id,
        "_type": 0 if title == "Global Emotes" else 1,
        "icon": None,
        "title": title,
        "css": None,
        "emoticons": [
            {
                "id": 25927 + n,
                "name": name,
                "height": 32,
                "width": 32,
                "public": True,
                "hidden": False,
                "modifier": False,
                "modifier_flags": 0,
                "offset": None,
                "margins": None,
                "css": None,
                "owner": {"_id": 1, "name": "sirstendec", "display_name": "SirStendec"},
                "artist": None,
                "urls": {"1": f"https://cdn.frankerfacez.com/emote/{25927 + n}/1"},
                "status": 1,
                "usage_count": 1,
            }
            for n, name in enumerate(names)
        ],
    }


def reply(service: Service, scope: Scope, names: list[str], room_id: str) -> Any:
    """A reply in the service's own shape."""
    match service, scope:
        case "7tv", "global":
            return seventv_set(names, "Global Emotes")
        case "7tv", "channel":
            return {
                "id": "01FE3XY508000AA32JP519W2EW",
                "platform": "TWITCH",
                "username": "somestreamer",
                "display_name": "SomeStreamer",
                "linked_at": 1_629_000_000_000,
                "emote_capacity": 1000,
                "emote_set_id": None,
                "emote_set": seventv_set(names, "SomeStreamer's Emotes"),
                "user": {"id": "01FE3XY508000AA32JP519W2EW", "username": "somestreamer"},
            }
        case "bttv", "global":
            return [bttv_emote(name, n) for n, name in enumerate(names)]
        case "bttv", "channel":
            half = len(names) // 2
            return {
                "id": "5a1b2c3d4e5f",
                "bots": ["nightbot"],
                "avatar": "https://static-cdn.jtvnw.net/jtv_user_pictures/x-300x300.png",
                "channelEmotes": [bttv_emote(name, n) for n, name in enumerate(names[:half])],
                "sharedEmotes": [
                    bttv_emote(name, n, shared=True) for n, name in enumerate(names[half:])
                ],
            }
        case "ffz", "global":
            return {
                "default_sets": [3],
                "sets": {
                    "3": ffz_set(3, names, "Global Emotes"),
                    # A set some users have, not everyone: not global.
                    "4330": ffz_set(4330, ["NotForEveryone"], "Some Users' Emotes"),
                },
                "users": {"4330": ["ronni"]},
            }
        case "ffz", "channel":
            return {
                "room": {
                    "_id": 1234,
                    "twitch_id": int(room_id),
                    "youtube_id": None,
                    "id": "somestreamer",
                    "is_group": False,
                    "display_name": "SomeStreamer",
                    "set": 12345,
                    "moderator_badge": None,
                    "vip_badge": None,
                    "mod_urls": None,
                    "user_badges": {},
                    "user_badge_ids": {},
                    "css": None,
                },
                "sets": {"12345": ffz_set(12345, names, "Channel: SomeStreamer")},
            }
    raise AssertionError((service, scope))


#: What each service answers for a channel it does not know (HTTP 404).
NOT_FOUND: dict[Service, Any] = {
    "7tv": {"status_code": 404, "status": "Not Found", "error": "user not found"},
    "bttv": {"message": "user not found"},
    "ffz": {"error": "Not Found", "status": 404, "message": "No such room"},
}

_ROUTES: dict[tuple[Service, Scope], str] = {
    ("7tv", "global"): "/7tv/v3/emote-sets/global",
    ("7tv", "channel"): "/7tv/v3/users/twitch/{room_id}",
    ("bttv", "global"): "/bttv/3/cached/emotes/global",
    ("bttv", "channel"): "/bttv/3/cached/users/twitch/{room_id}",
    ("ffz", "global"): "/ffz/v1/set/global",
    ("ffz", "channel"): "/ffz/v1/room/id/{room_id}",
}


class FakeEmoteApis:
    def __init__(self) -> None:
        self.names: dict[tuple[Service, Scope], list[str]] = {
            key: list(names) for key, names in DEFAULT_NAMES.items()
        }
        #: How each set answers (default: "ok").
        self.modes: dict[tuple[Service, Scope], Mode] = {}
        #: Every request: (service, scope, room id or "").
        self.requests: list[tuple[Service, Scope, str]] = []
        #: Size of the "huge" replies.
        self.huge_bytes = 3 * 1024 * 1024
        self._runner: web.AppRunner | None = None
        self._port = 0

    def set_all(self, mode: Mode) -> None:
        self.modes = dict.fromkeys(DEFAULT_NAMES, mode)

    async def __aenter__(self) -> FakeEmoteApis:
        app = web.Application()
        for (service, scope), route in _ROUTES.items():
            app.router.add_get(route, self._handler(service, scope))
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def apis(self) -> dict[Service, str]:
        """Base addresses for `platforms.twitch.emote_apis`."""
        return {s: f"http://127.0.0.1:{self._port}/{s}" for s in ("7tv", "bttv", "ffz")}

    def union(self, *keys: tuple[Service, Scope]) -> frozenset[str]:
        chosen = keys or tuple(self.names)
        return frozenset(name for key in chosen for name in self.names[key])

    def rounds(self) -> int:
        """How many times the set asked least often was asked for."""
        counts = [sum(1 for s, c, _ in self.requests if (s, c) == key) for key in DEFAULT_NAMES]
        return min(counts)

    def _handler(self, service: Service, scope: Scope) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            room_id = request.match_info.get("room_id", "")
            self.requests.append((service, scope, room_id))
            mode = self.modes.get((service, scope), "ok")
            if mode == "404":
                return web.json_response(NOT_FOUND[service], status=404)
            if mode == "500":
                return web.Response(status=500, text="Internal Server Error")
            if mode == "slow":
                await asyncio.sleep(30)
            if mode == "html":
                return web.Response(
                    text="<html><body>Cloudflare: checking your browser</body></html>",
                    content_type="text/html",
                )
            if mode == "shape":
                return web.json_response({"error": "rate limited", "emotes": 42})
            if mode == "huge":
                return web.Response(body=b" " * self.huge_bytes, content_type="application/json")
            if mode == "huge_chunked":
                response = web.StreamResponse()
                response.enable_chunked_encoding()
                await response.prepare(request)
                chunk = b"[" + b"0," * 32 * 1024
                with contextlib.suppress(ConnectionError):  # the client gives up first
                    for _ in range(self.huge_bytes // len(chunk) + 1):
                        await response.write(chunk)
                return response
            body = json.dumps(reply(service, scope, self.names[service, scope], room_id or "1"))
            if mode == "truncated":
                body = body[: len(body) // 2]
            return web.Response(text=body, content_type="application/json")

        return handle
