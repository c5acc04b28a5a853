"""The asyncio shell around the Bilibili codec: HTTP bootstrap, then one
WebSocket, kept alive with heartbeats and reconnected with backoff."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeVar

import aiohttp
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from adapters.bilibili import codec, wbi
from adapters.bilibili.config import BilibiliConfig
from adapters.events import ChatEvent, ChatMessage, Connected, Disconnected, Platform, Retraction
from adapters.reconnect import Attempt, Backoff, Ended, StaleConnectionError, describe, reconnecting

log = structlog.get_logger()

#: The token is tied to the User-Agent: HTTP and WebSocket must send the same one.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
HEARTBEAT_S = 30.0
#: Silence past a heartbeat period (plus slack) means a dead link.
RECEIVE_TIMEOUT_S = 35.0
AUTH_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
DEFAULT_BACKOFF = Backoff()

E = TypeVar("E")


class BootstrapError(Exception):
    pass


class AuthRejectedError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Room:
    """What the HTTP bootstrap learns: where and how to connect."""

    room_id: int
    owner_uid: int = 0
    uid: int = 0
    token: str = ""
    buvid: str = ""
    hosts: tuple[tuple[str, int], ...] = field(default_factory=tuple)


class BilibiliClient:
    def __init__(
        self,
        config: BilibiliConfig,
        events: asyncio.Queue[ChatEvent],
        *,
        heartbeat_s: float = HEARTBEAT_S,
        receive_timeout_s: float = RECEIVE_TIMEOUT_S,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        backoff: Backoff = DEFAULT_BACKOFF,
        rand: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.connected = False
        self.room: Room | None = None
        self._events = events
        self._heartbeat_s = heartbeat_s
        self._receive_timeout_s = receive_timeout_s
        self._auth_timeout_s = auth_timeout_s
        self._backoff = backoff
        self._rand = rand
        self._wall_clock = wall_clock
        self._cookies = _parse_cookie(config.cookie.get_secret_value())
        self._reported_commands: set[str] = set()

    async def run(self) -> None:
        """Stay connected until cancelled."""
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT}, timeout=timeout, trust_env=False
        ) as http:
            tries = 0  # connections tried with this room's token and servers
            room: Room | None = None

            async def connect_once(attempt: Attempt) -> Ended:
                nonlocal tries, room
                if room is None or tries >= max(3, len(room.hosts)):
                    room = await self._bootstrap(http)
                    tries = 0
                host, port = room.hosts[tries % len(room.hosts)]
                tries += 1
                url = f"{self.config.ws_scheme}://{host}:{port}/sub"
                attempt.fields["url"] = url
                try:
                    async with connect(
                        url,
                        proxy=None,
                        open_timeout=10,
                        max_size=4 * 2**20,
                        compression=None,
                        user_agent_header=USER_AGENT,
                    ) as ws:
                        attempt.up()
                        await self._session(ws, room)
                except AuthRejectedError as exc:
                    room = None
                    return Ended(f"auth rejected ({exc}); fetching a new token")
                return Ended("closed")

            await reconnecting(connect_once, self._lost, self._backoff, self._rand)

    async def _lost(self, reason: str, **fields: object) -> None:
        log.warning("bilibili.disconnected", reason=reason, **fields)
        if self.connected and self.room is not None:
            self.connected = False
            await self._events.put(Disconnected(Platform.BILIBILI, str(self.room.room_id), reason))

    def down(self, reason: str) -> list[Disconnected]:
        """After run() crashed: not connected, and the event that tells the bot so
        (sent even if it never connected, so the status shows the room down)."""
        self.connected = False
        room_id = self.room.room_id if self.room is not None else self.config.room_id
        return [Disconnected(Platform.BILIBILI, str(room_id), reason)]

    async def _bootstrap(self, http: aiohttp.ClientSession) -> Room:
        """Room id, owner, token and servers; on failure the fallback server, no token."""
        try:
            room = await self._fetch_room(http)
        except (aiohttp.ClientError, TimeoutError, ValueError, BootstrapError) as exc:
            log.warning(
                "bilibili.bootstrap_failed",
                reason=describe(exc),
                fallback=self.config.fallback_host,
            )
            room = Room(
                room_id=self.config.room_id,
                buvid=self._cookies.get("buvid3", ""),
                hosts=(self._fallback(),),
            )
        self.room = room
        return room

    async def _fetch_room(self, http: aiohttp.ClientSession) -> Room:
        cfg = self.config
        if "buvid3" not in self._cookies:
            async with http.get(cfg.home_url) as resp:
                morsel = resp.cookies.get("buvid3")
                if morsel is not None:
                    self._cookies["buvid3"] = morsel.value
        nav = await self._get_json(http, f"{_base(cfg.api_url)}/x/web-interface/nav", {})
        nav_data = _dict(nav, "data")
        images = _dict(nav_data, "wbi_img")
        key = wbi.mixin_key(str(images.get("img_url", "")), str(images.get("sub_url", "")))
        uid = nav_data.get("mid", 0) if nav_data.get("isLogin") else 0
        info = await self._get_json(
            http,
            f"{_base(cfg.live_api_url)}/room/v1/Room/get_info",
            {"room_id": str(cfg.room_id)},
            need_ok=True,
        )
        info_data = _dict(info, "data")
        room_id, owner = info_data.get("room_id"), info_data.get("uid", 0)
        if not isinstance(room_id, int) or not isinstance(owner, int):
            raise BootstrapError("get_info: room_id/uid missing")
        params = wbi.sign({"id": room_id, "type": 0}, key, int(self._wall_clock()))
        danmu = await self._get_json(
            http,
            f"{_base(cfg.live_api_url)}/xlive/web-room/v1/index/getDanmuInfo",
            params,
            need_ok=True,
        )
        danmu_data = _dict(danmu, "data")
        port_key = "wss_port" if cfg.ws_scheme == "wss" else "ws_port"
        hosts = tuple(
            (h["host"], h[port_key])
            for h in danmu_data.get("host_list") or []
            if isinstance(h, dict)
            and isinstance(h.get("host"), str)
            and isinstance(h.get(port_key), int)
        )
        room = Room(
            room_id=room_id,
            owner_uid=owner,
            uid=uid if isinstance(uid, int) else 0,
            token=str(danmu_data.get("token", "")),
            buvid=self._cookies.get("buvid3", ""),
            hosts=(*hosts, self._fallback()),
        )
        log.info(
            "bilibili.bootstrapped",
            room_id=room_id,
            short_id=cfg.room_id,
            logged_in=bool(room.uid),
            hosts=len(hosts),
        )
        return room

    def _fallback(self) -> tuple[str, int]:
        host, _, port = self.config.fallback_host.partition(":")
        default = 443 if self.config.ws_scheme == "wss" else 80
        return host, int(port) if port.isascii() and port.isdigit() else default

    async def _get_json(
        self,
        http: aiohttp.ClientSession,
        url: str,
        params: dict[str, str],
        need_ok: bool = False,
    ) -> dict[str, Any]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self._cookies.items())}
        async with http.get(url, params=params, headers=headers) as resp:
            if resp.status != 200:
                raise BootstrapError(f"{url}: HTTP {resp.status}")
            doc = await resp.json(content_type=None)
        if not isinstance(doc, dict):
            raise BootstrapError(f"{url}: not a JSON object")
        if need_ok and doc.get("code") != 0:
            raise BootstrapError(f"{url}: code {doc.get('code')} ({doc.get('message', '')})")
        return doc

    async def _session(self, ws: ClientConnection, room: Room) -> None:
        decoder = codec.BilibiliCodec(room.room_id, room.owner_uid)
        await ws.send(codec.auth_packet(room.uid, room.room_id, room.token, room.buvid))
        heartbeats: asyncio.Task[None] | None = None
        try:
            while True:
                if heartbeats:
                    frame = await next_frame(ws, self._receive_timeout_s, "data")
                else:
                    frame = await next_frame(ws, self._auth_timeout_s, "the auth reply")
                if frame is None:
                    continue
                events = await decode(decoder.feed, frame)
                for event in events:
                    if isinstance(event, codec.AuthReply):
                        if event.code != 0:
                            raise AuthRejectedError(f"code {event.code}")
                        if heartbeats is None:
                            heartbeats = asyncio.create_task(heartbeat_loop(ws, self._heartbeat_s))
                            await self._up(room)
                    else:
                        await self._handle(event)
                self._report_unknown(decoder)
        finally:
            if heartbeats is not None:
                heartbeats.cancel()

    async def _up(self, room: Room) -> None:
        self.connected = True
        log.info("bilibili.connected", room_id=room.room_id, logged_in=bool(room.uid))
        await self._events.put(Connected(Platform.BILIBILI, str(room.room_id)))

    async def _handle(self, event: codec.BilibiliEvent) -> None:
        match event:
            case ChatMessage() | Retraction():
                await self._events.put(event)
            case codec.LoginNotice(text=text):
                log.warning(
                    "bilibili.names_masked",
                    text=text,
                    hint="set ISHOWTTS_BILIBILI_COOKIE to a logged-in cookie for real names",
                )
            case codec.DecodeFailed(error=error):
                log.warning("bilibili.decode_error", error=error)

    def _report_unknown(self, decoder: codec.BilibiliCodec) -> None:
        for name in decoder.unknown_commands.keys() - self._reported_commands:
            self._reported_commands.add(name)
            log.info("bilibili.unknown_command", cmd=name)


async def next_frame(ws: ClientConnection, limit_s: float, waiting_for: str) -> bytes | None:
    """The next binary frame (None for a text frame, logged and skipped);
    StaleConnectionError when nothing comes within `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            frame = await ws.recv()
    except TimeoutError:
        raise StaleConnectionError(f"no {waiting_for} within {limit_s:g} s") from None
    if isinstance(frame, str):
        log.info("bilibili.text_frame_ignored", length=len(frame))
        return None
    return frame


async def decode(feed: Callable[[bytes, float], list[E]], frame: bytes) -> list[E]:
    """One frame through a codec's `feed`; a heavy one off the loop."""
    received = time.monotonic()
    if codec.is_heavy(frame):
        # Inflating a batch can take milliseconds (a bomb, up to the frame's
        # budget): off the loop, awaited here so order holds.
        return await asyncio.to_thread(feed, frame, received)
    return feed(frame, received)


async def heartbeat_loop(ws: ClientConnection, period_s: float) -> None:
    """The socket's heartbeat packet every `period_s`, until the socket closes."""
    while True:
        try:
            await ws.send(codec.heartbeat_packet())
        except WebSocketException:
            return  # the receive loop sees the close and reconnects
        await asyncio.sleep(period_s)


def _parse_cookie(raw: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        log.warning("bilibili.bad_cookie", hint="expected 'SESSDATA=...; buvid3=...'")
        return {}
    return {k: m.value for k, m in jar.items()}


def _dict(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise BootstrapError(f"{key} missing in reply")
    return value


def _base(url: str) -> str:
    return url.rstrip("/")
