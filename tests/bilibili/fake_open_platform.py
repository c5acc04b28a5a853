"""Loopback Bilibili open live platform: the signed start / heartbeat / end
calls (aiohttp), checked the way the platform checks them, and the session's
WebSocket speaking the real binary framing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.protocol import State

from adapters.bilibili import codec
from tests.bilibili import fixtures as fx
from tests.bilibili import open_fixtures as ofx

APP_ID = 1650000000001
CODE = "C8AB6X2LKZ4QP"
KEY_ID = "fake-access-key-id"
KEY_SECRET = "fake-access-key-secret"
ANCHOR_NAME = "主播本人"

MESSAGES = {
    4001: "应用无效",
    4002: "签名异常",
    4003: "请求过期",
    4004: "重复请求",
    4005: "签名method异常",
    4006: "版本异常",
    4011: "Content-Type不为application/json",
    4012: "MD5校验失败",
    4013: "Accept不为application/json",
    7002: "房间重复游戏",
    7003: "心跳过期或GameId错误",
    7007: "身份码错误",
    8002: "项目无权限访问",
}


class FakeOpenPlatform:
    def __init__(self) -> None:
        #: Every call that passed the signature check: (path, body).
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: Calls refused before their body was read: (path, code).
        self.refused: list[tuple[str, int]] = []
        #: Live sessions: game id → time.monotonic() of the start or last heartbeat.
        self.games: dict[str, float] = {}
        self.auth_bodies: dict[str, str] = {}
        #: A session lives this long after its last heartbeat.
        self.session_timeout_s = 60.0
        #: Force this code on every start (None: answer as the platform would).
        self.start_code: int | None = None
        #: Answer this many starts with a reply larger than any real one, streamed.
        self.oversize_starts = 0
        #: Answer app heartbeats at all (False: they hang until the client gives up).
        self.answer_heartbeats = True
        #: Force this code on every end (None: end the session).
        self.end_code: int | None = None
        #: Refuse this many socket auths, whatever they carry.
        self.refuse_auth = 0
        #: WebSocket links handed out; a dead one first, to exercise the fallback.
        self.dead_link_first = True
        self.nonces: set[str] = set()
        self.connections: list[ServerConnection] = []
        self.authed: list[tuple[str, ServerConnection]] = []
        self.heartbeats = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ws: Server | None = None
        self.http_port = 0
        self.ws_port = 0

    async def __aenter__(self) -> FakeOpenPlatform:
        app = web.Application()
        app.router.add_post("/v2/app/start", self._start)
        app.router.add_post("/v2/app/heartbeat", self._heartbeat)
        app.router.add_post("/v2/app/end", self._end)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ws = await serve(self._socket, "127.0.0.1", 0, compression=None)
        self.ws_port = next(iter(self._ws.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._ws is not None and self._runner is not None
        self._release.set()
        self._ws.close()
        await self._ws.wait_closed()
        await self._runner.cleanup()

    def config(self, **overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "enabled": True,
            "mode": "open",
            "identity_code": CODE,
            "app_id": APP_ID,
            "access_key_id": KEY_ID,
            "access_key_secret": KEY_SECRET,
            "open_api_url": f"http://127.0.0.1:{self.http_port}",
        }
        cfg.update(overrides)
        return cfg

    def paths(self) -> list[str]:
        """The accepted calls in order, as `start`, `heartbeat`, `end:<game id>`."""
        out = []
        for path, body in self.calls:
            name = path.rsplit("/", 1)[-1]
            out.append(f"end:{body.get('game_id')}" if name == "end" else name)
        return out

    @property
    def newest_game(self) -> str:
        return list(self.auth_bodies)[-1]

    # HTTP --------------------------------------------------------------------
    def _check(self, request: web.Request, body: bytes) -> int:
        """The platform's checks, in its order; 0 when the call may proceed."""
        headers = request.headers
        if headers.get("Content-Type") != "application/json":
            return 4011
        if headers.get("Accept") != "application/json":
            return 4013
        if headers.get("x-bili-accesskeyid") != KEY_ID:
            return 4001
        if headers.get("x-bili-signature-method") != "HMAC-SHA256":
            return 4005
        if headers.get("x-bili-signature-version") != "1.0":
            return 4006
        if headers.get("x-bili-content-md5") != hashlib.md5(body).hexdigest():
            return 4012
        stamp = headers.get("x-bili-timestamp", "")
        if not stamp.isdigit() or abs(int(stamp) - time.time()) > 600:
            return 4003
        nonce = headers.get("x-bili-signature-nonce", "")
        if not nonce or nonce in self.nonces:
            return 4004
        self.nonces.add(nonce)
        signed = sorted(
            (name.lower(), value)
            for name, value in headers.items()
            if name.lower().startswith("x-bili-")
        )
        text = "\n".join(f"{name}:{value}" for name, value in signed)
        expected = hmac.new(KEY_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("Authorization", ""), expected):
            return 4002
        return 0

    async def _accept(self, request: web.Request) -> dict[str, Any] | web.Response:
        body = await request.read()
        code = self._check(request, body)
        if code:
            self.refused.append((request.path, code))
            return _reply(code)
        doc = json.loads(body)
        self.calls.append((request.path, doc))
        self._expire()
        return dict(doc)

    def _expire(self) -> None:
        now = time.monotonic()
        for game_id, last in list(self.games.items()):
            if now - last > self.session_timeout_s:
                del self.games[game_id]

    async def _start(self, request: web.Request) -> web.Response:
        doc = await self._accept(request)
        if isinstance(doc, web.Response):
            return doc
        if self.start_code is not None:
            return _reply(self.start_code)
        if self.oversize_starts:
            self.oversize_starts -= 1
            stream = web.StreamResponse()  # chunked: no length announced
            await stream.prepare(request)
            for _ in range(64):
                await stream.write(b" " * 16384)
            return stream  # type: ignore[return-value]
        if doc.get("code") != CODE:
            return _reply(7007)
        if doc.get("app_id") != APP_ID:
            return _reply(8002)
        if self.games:  # one session per identity code
            return _reply(7002)
        game_id = str(uuid.uuid4())
        self.games[game_id] = time.monotonic()
        self.auth_bodies[game_id] = json.dumps(
            {"roomid": fx.ROOM, "protoover": 2, "uid": 0, "key": uuid.uuid4().hex, "group": "open"}
        )
        live = f"ws://127.0.0.1:{self.ws_port}/sub"
        dead = "ws://127.0.0.1:1/sub"
        data = {
            "game_info": {"game_id": game_id},
            "websocket_info": {
                "auth_body": self.auth_bodies[game_id],
                "wss_link": [dead, live] if self.dead_link_first else [live],
            },
            "anchor_info": {
                "room_id": fx.ROOM,
                "uname": ANCHOR_NAME,
                "uface": "",
                "uid": 0,
                "open_id": ofx.ANCHOR_OPEN_ID,
                "union_id": "",
            },
        }
        return _reply(0, data)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        doc = await self._accept(request)
        if isinstance(doc, web.Response):
            return doc
        if not self.answer_heartbeats:
            await self._release.wait()
        game_id = doc.get("game_id")
        if game_id not in self.games:
            return _reply(7003)
        self.games[game_id] = time.monotonic()
        return _reply(0)

    async def _end(self, request: web.Request) -> web.Response:
        doc = await self._accept(request)
        if isinstance(doc, web.Response):
            return doc
        if self.end_code is not None:
            return _reply(self.end_code)
        if doc.get("app_id") != APP_ID:
            return _reply(8002)
        if self.games.pop(str(doc.get("game_id")), None) is None:
            return _reply(7003)
        return _reply(0)

    def hold_session(self) -> str:
        """A session started by someone else (an earlier run): live, not ours."""
        game_id = str(uuid.uuid4())
        self.games[game_id] = time.monotonic()
        return game_id

    # WebSocket ---------------------------------------------------------------
    @property
    def live(self) -> bool:
        return bool(self.authed) and self.authed[-1][1].state is State.OPEN

    async def _socket(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        with contextlib.suppress(Exception):
            first = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(first, bytes)
            length, header_len, _, op, _ = codec.HEADER.unpack(first[:16])
            assert op == codec.OP_AUTH and length == len(first)
            body = first[header_len:].decode()
            game_id = next((g for g, b in self.auth_bodies.items() if b == body), "")
            ok = game_id in self.games and not self.refuse_auth
            self.refuse_auth = max(0, self.refuse_auth - 1)
            reply = json.dumps({"code": 0 if ok else -101}).encode()
            await ws.send(codec.encode_packet(codec.OP_AUTH_REPLY, reply))
            if not ok:
                await ws.close()
                return
            self.authed.append((game_id, ws))
            async for frame in ws:
                if isinstance(frame, bytes) and codec.HEADER.unpack(frame[:16])[3] == 2:
                    self.heartbeats += 1
                    await ws.send(
                        codec.encode_packet(codec.OP_HEARTBEAT_REPLY, (1).to_bytes(4, "big"))
                    )

    async def send(self, frame: bytes | str) -> None:
        await self.authed[-1][1].send(frame)

    async def end_session(self) -> str:
        """The platform ends the newest session and tells its socket so."""
        game_id, ws = self.authed[-1]
        self.games.pop(game_id, None)
        await ws.send(fx.message_packet(ofx.interaction_end(game_id)))
        return game_id

    def drop(self) -> None:
        self.authed[-1][1].transport.abort()

    async def wait_authed(self, count: int, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while len(self.authed) < count or not self.live:
                await asyncio.sleep(0.01)


def _reply(code: int, data: dict[str, Any] | None = None) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": "0" if code == 0 else MESSAGES.get(code, "error"),
            "request_id": uuid.uuid4().hex[:16],
            "data": data if data is not None else {},
        }
    )
