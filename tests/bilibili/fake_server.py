"""Loopback Bilibili: the HTTP bootstrap endpoints (aiohttp) and a danmaku
WebSocket server speaking the real binary framing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State

from adapters.bilibili import codec, wbi
from tests.bilibili import fixtures as fx

IMG_URL = "https://i0.hdslb.com/bfs/wbi/7cd084941338484aae1ad9425b84077c.png"
SUB_URL = "https://i0.hdslb.com/bfs/wbi/4932caff0ff746eab6f01bf08b70ac45.png"
MIXIN_KEY = wbi.mixin_key(IMG_URL, SUB_URL)
SHORT_ID = 1
TOKEN = "TOKEN123"
BUVID = "FAKE-BUVID3-infoc"


class FakeBilibili:
    def __init__(self) -> None:
        self.auth_bodies: list[dict[str, Any]] = []
        self.danmu_info_queries: list[dict[str, str]] = []
        self.cookies_seen: list[str] = []
        self.heartbeats = 0
        self.auth_code = 0
        self.answer_heartbeats = True
        #: HTTP status for get_info (412 plays Bilibili's risk control).
        self.get_info_status = 200
        self.connections: list[ServerConnection] = []
        #: Connections that passed the auth packet (chat sent to them is read).
        self.authed: list[ServerConnection] = []
        #: Refuse WebSocket handshakes until this time.monotonic() (an outage).
        self.refuse_until = 0.0
        self._runner: web.AppRunner | None = None
        self._ws: Server | None = None
        self.http_port = 0
        self.ws_port = 0

    async def __aenter__(self) -> FakeBilibili:
        app = web.Application()
        app.router.add_get("/", self._home)
        app.router.add_get("/x/web-interface/nav", self._nav)
        app.router.add_get("/room/v1/Room/get_info", self._get_info)
        app.router.add_get("/xlive/web-room/v1/index/getDanmuInfo", self._danmu_info)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ws = await serve(
            self._handle, "127.0.0.1", 0, compression=None, process_request=self._gate
        )
        self.ws_port = next(iter(self._ws.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._ws is not None and self._runner is not None
        self._ws.close()
        await self._ws.wait_closed()
        await self._runner.cleanup()

    def config(self, **overrides: Any) -> dict[str, Any]:
        base = f"http://127.0.0.1:{self.http_port}"
        cfg: dict[str, Any] = {
            "enabled": True,
            "room_id": SHORT_ID,
            "home_url": base + "/",
            "api_url": base,
            "live_api_url": base,
            "ws_scheme": "ws",
            "fallback_host": f"127.0.0.1:{self.ws_port}",
        }
        cfg.update(overrides)
        return cfg

    # HTTP ------------------------------------------------------------------
    async def _home(self, request: web.Request) -> web.Response:
        response = web.Response(text="<html></html>", content_type="text/html")
        response.set_cookie("buvid3", BUVID)
        return response

    async def _nav(self, request: web.Request) -> web.Response:
        cookie = request.headers.get("Cookie", "")
        self.cookies_seen.append(cookie)
        logged_in = "SESSDATA=" in cookie
        data: dict[str, Any] = {
            "isLogin": logged_in,
            "wbi_img": {"img_url": IMG_URL, "sub_url": SUB_URL},
        }
        if logged_in:
            data["mid"] = 99
        return web.json_response({"code": 0 if logged_in else -101, "data": data})

    async def _get_info(self, request: web.Request) -> web.Response:
        if self.get_info_status != 200:
            return web.Response(status=self.get_info_status, text="risk control")
        assert request.query["room_id"] == str(SHORT_ID)
        return web.json_response({"code": 0, "data": {"room_id": fx.ROOM, "uid": fx.OWNER}})

    async def _danmu_info(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.danmu_info_queries.append(query)
        wts, w_rid = query.get("wts", ""), query.get("w_rid", "")
        unsigned = {k: v for k, v in query.items() if k not in ("wts", "w_rid")}
        expected = wbi.sign(unsigned, MIXIN_KEY, int(wts)) if wts.isdigit() else {}
        if not (re.fullmatch(r"[0-9a-f]{32}", w_rid) and expected.get("w_rid") == w_rid):
            return web.json_response({"code": -352, "message": "-352", "data": {}})
        return web.json_response(
            {
                "code": 0,
                "data": {
                    "token": TOKEN,
                    "host_list": [
                        {
                            "host": "127.0.0.1",
                            "port": self.ws_port,
                            "wss_port": 1,
                            "ws_port": self.ws_port,
                        }
                    ],
                },
            }
        )

    # WebSocket ---------------------------------------------------------------
    def _gate(self, _: ServerConnection, request: Request) -> Response | None:
        if time.monotonic() < self.refuse_until:
            return Response(HTTPStatus.SERVICE_UNAVAILABLE.value, "Unavailable", Headers(), b"")
        return None

    @property
    def live(self) -> bool:
        """The newest connection is authenticated and open: chat sent now is read."""
        return bool(self.authed) and self.authed[-1].state is State.OPEN

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        with contextlib.suppress(Exception):
            first = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(first, bytes)
            length, header_len, ver, op, _ = codec.HEADER.unpack(first[:16])
            assert op == codec.OP_AUTH and ver == codec.VER_RAW and length == len(first)
            self.auth_bodies.append(json.loads(first[header_len:]))
            await ws.send(
                codec.encode_packet(
                    codec.OP_AUTH_REPLY, json.dumps({"code": self.auth_code}).encode()
                )
            )
            if self.auth_code != 0:
                await ws.close()
                return
            self.authed.append(ws)
            async for frame in ws:
                if (
                    isinstance(frame, bytes)
                    and codec.HEADER.unpack(frame[:16])[3] == codec.OP_HEARTBEAT
                ):
                    self.heartbeats += 1
                    if self.answer_heartbeats:
                        reply = codec.encode_packet(
                            codec.OP_HEARTBEAT_REPLY, (1).to_bytes(4, "big")
                        )
                        await ws.send(reply + b"\0\0\0\x10")  # the length quirk

    async def send(self, frame: bytes | str) -> None:
        await self.connections[-1].send(frame)

    def drop(self) -> None:
        self.connections[-1].transport.abort()

    async def wait_connections(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.auth_bodies) < count:
                await asyncio.sleep(0.01)
