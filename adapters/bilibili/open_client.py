"""The asyncio shell around the open platform's codec: a session started with
the streamer's identity code, kept with the app heartbeat, its WebSocket read,
and ended on the way out; a lost session is replaced with backoff.

The platform holds a session for about a minute after its last heartbeat and
limits the sessions of one app in one room, so a session this client started
is always ended before the next start: at once when it is lost, or, when that
end fails (or the process died), before the next start. The id of the session
in hand is recorded on disk for that, and removed once it is ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import platformdirs
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from adapters.bilibili import open_codec
from adapters.bilibili.client import decode, heartbeat_loop, next_frame
from adapters.bilibili.codec import AuthReply, DecodeFailed
from adapters.bilibili.config import BilibiliConfig
from adapters.bilibili.open_codec import Game, OpenApiError, OpenLiveCodec, OpenReplyError
from adapters.events import ChatEvent, ChatMessage, Connected, Disconnected, Platform, Retraction
from adapters.http import ReplyTooLarge, read_capped
from adapters.reconnect import Attempt, Backoff, Ended, describe, reconnecting

log = structlog.get_logger()

#: The socket's heartbeat, and the silence that means a dead link (as on the web path).
HEARTBEAT_S = 30.0
RECEIVE_TIMEOUT_S = 35.0
AUTH_TIMEOUT_S = 10.0
#: The app heartbeat: the platform closes a session about 60 s after the last one.
APP_HEARTBEAT_S = 20.0
HTTP_TIMEOUT_S = 10.0
#: Ending a session is best effort, and on shutdown must not hold the stop up.
END_TIMEOUT_S = 3.0
#: A reply is read up to this size; the platform's are a few KB.
MAX_REPLY_BYTES = 256 * 1024
#: A recorded session id longer than this is not one.
MAX_GAME_ID_CHARS = 200
DEFAULT_BACKOFF = Backoff()


def default_record_dir() -> Path:
    return platformdirs.user_cache_path("ishowtts", appauthor=False) / "bilibili-open"


class BilibiliOpenClient:
    """Reads one room through the open platform; `run()` until cancelled, or
    until the platform refuses the identity code or the keys."""

    def __init__(
        self,
        config: BilibiliConfig,
        events: asyncio.Queue[ChatEvent],
        *,
        heartbeat_s: float = HEARTBEAT_S,
        receive_timeout_s: float = RECEIVE_TIMEOUT_S,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        app_heartbeat_s: float = APP_HEARTBEAT_S,
        http_timeout_s: float = HTTP_TIMEOUT_S,
        end_timeout_s: float = END_TIMEOUT_S,
        backoff: Backoff = DEFAULT_BACKOFF,
        rand: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
        record_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.connected = False
        #: The session in hand (None before the first start).
        self.game: Game | None = None
        self._events = events
        self._heartbeat_s = heartbeat_s
        self._receive_timeout_s = receive_timeout_s
        self._auth_timeout_s = auth_timeout_s
        self._app_heartbeat_s = app_heartbeat_s
        self._http_timeout_s = http_timeout_s
        self._end_timeout_s = end_timeout_s
        self._backoff = backoff
        self._rand = rand
        self._wall_clock = wall_clock
        self._nonce = nonce
        self._base = config.open_api_url.rstrip("/")
        code = config.identity_code.get_secret_value()
        digest = hashlib.sha256(f"{config.app_id}:{code}".encode()).hexdigest()[:16]
        self._record = (record_dir or default_record_dir()) / f"{digest}.json"
        #: A session started and not known to be ended: ended before the next start.
        self._held: str | None = None
        self._record_read = False
        self._reported_commands: set[str] = set()

    @property
    def channel(self) -> str:
        """The room's id once a session named it."""
        if self.game is not None:
            return str(self.game.room_id)
        return str(self.config.room_id) if self.config.room_id else ""

    async def run(self) -> None:
        """Stay connected until cancelled, or until a start is refused for good."""
        timeout = aiohttp.ClientTimeout(total=self._http_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:

            async def connect_once(attempt: Attempt) -> Ended:
                return await self._connect_once(http, attempt)

            try:
                await reconnecting(connect_once, self._lost, self._backoff, self._rand)
            except OpenApiError as exc:
                log.error(
                    "bilibili.open_failed",
                    code=exc.code,
                    message=exc.message,
                    request_id=exc.request_id,
                    stopped=True,
                    hint=exc.hint,
                )
                await self._lost(f"open platform refused the session: {exc}")

    def down(self, reason: str) -> list[Disconnected]:
        """After run() crashed: not connected, and the event that tells the bot so."""
        self.connected = False
        return [Disconnected(Platform.BILIBILI, self.channel, reason)]

    async def _lost(self, reason: str, **fields: object) -> None:
        log.warning("bilibili.disconnected", reason=reason, **fields)
        if self.connected:
            self.connected = False
            await self._events.put(Disconnected(Platform.BILIBILI, self.channel, reason))

    # The session ---------------------------------------------------------------
    async def _connect_once(self, http: aiohttp.ClientSession, attempt: Attempt) -> Ended:
        """One session: end the one held, start, read, end. A refusal that
        retrying cannot cure escapes as OpenApiError."""
        await self._end_held(http)
        cfg = self.config
        body = open_codec.start_body(cfg.identity_code.get_secret_value(), cfg.app_id)
        try:
            game = open_codec.parse_start(await self._call(http, open_codec.START_PATH, body))
        except OpenApiError as exc:
            if exc.stops:
                raise
            log.warning(
                "bilibili.open_failed",
                code=exc.code,
                message=exc.message,
                request_id=exc.request_id,
                stopped=False,
                hint=exc.hint,
            )
            return Ended(f"start refused: {exc}")
        except (aiohttp.ClientError, OpenReplyError, TimeoutError) as exc:
            return Ended(f"start failed: {_reason(exc, self._http_timeout_s)}")
        self.game, self._held = game, game.game_id
        await self._remember(game.game_id)
        log.info(
            "bilibili.open_started",
            game_id=game.game_id,
            room_id=game.room_id,
            anchor=game.anchor_name,
            links=len(game.links),
        )
        try:
            return await self._play(http, game, attempt)
        finally:
            await self._end(http, game.game_id)

    async def _play(self, http: aiohttp.ClientSession, game: Game, attempt: Attempt) -> Ended:
        """The socket and the app heartbeat together: whichever ends first ends both."""
        tasks = {
            asyncio.create_task(self._app_heartbeats(http, game)),
            asyncio.create_task(self._socket(game, attempt)),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return done.pop().result()

    async def _app_heartbeats(self, http: aiohttp.ClientSession, game: Game) -> Ended:
        body = open_codec.heartbeat_body(game.game_id)
        while True:
            await asyncio.sleep(self._app_heartbeat_s)
            try:
                await self._call(http, open_codec.HEARTBEAT_PATH, body)
            except OpenApiError as exc:
                reason = f"refused: {exc}"
            except (aiohttp.ClientError, OpenReplyError, TimeoutError) as exc:
                reason = _reason(exc, self._http_timeout_s)
            else:
                continue
            log.warning("bilibili.open_heartbeat_failed", game_id=game.game_id, reason=reason)
            return Ended(f"session lost: app heartbeat {reason}")

    async def _socket(self, game: Game, attempt: Attempt) -> Ended:
        """Connect to the first link that answers, then read it."""
        for index, link in enumerate(game.links):
            attempt.fields["url"] = link
            try:
                ws = await connect(
                    link, proxy=None, open_timeout=10, max_size=4 * 2**20, compression=None
                )
            except (OSError, WebSocketException, TimeoutError) as exc:
                if index == len(game.links) - 1:
                    raise
                log.info("bilibili.open_link_failed", url=link, reason=describe(exc))
                continue
            attempt.up()
            try:
                return await self._read(ws, game)
            finally:
                await ws.close()
        raise AssertionError("a session has at least one link")  # parse_start checks

    async def _read(self, ws: ClientConnection, game: Game) -> Ended:
        decoder = OpenLiveCodec(game.room_id, game.anchor_open_id)
        await ws.send(open_codec.auth_packet(game.auth_body))
        heartbeats: asyncio.Task[None] | None = None
        try:
            while True:
                if heartbeats is None:
                    frame = await next_frame(ws, self._auth_timeout_s, "the auth reply")
                else:
                    frame = await next_frame(ws, self._receive_timeout_s, "data")
                if frame is None:
                    continue
                for event in await decode(decoder.feed, frame):
                    match event:
                        case AuthReply(code=code):
                            if code != 0:
                                return Ended(f"auth rejected (code {code}); starting a new session")
                            if heartbeats is None:
                                heartbeats = asyncio.create_task(
                                    heartbeat_loop(ws, self._heartbeat_s)
                                )
                                await self._up(game)
                        case open_codec.SessionEnded(game_id=ended):
                            if ended in ("", game.game_id):
                                log.warning("bilibili.open_ended_by_platform", game_id=ended)
                                return Ended("the platform ended the session")
                        case _:
                            await self._handle(event)
                self._report_unknown(decoder)
        finally:
            if heartbeats is not None:
                heartbeats.cancel()

    async def _up(self, game: Game) -> None:
        self.connected = True
        log.info(
            "bilibili.connected",
            room_id=game.room_id,
            mode="open",
            anchor=game.anchor_name,
        )
        await self._events.put(Connected(Platform.BILIBILI, str(game.room_id)))

    async def _handle(self, event: open_codec.OpenFrameEvent) -> None:
        match event:
            case ChatMessage() | Retraction():
                await self._events.put(event)
            case open_codec.LiveStatus(live=live, title=title):
                log.info("bilibili.live_started" if live else "bilibili.live_ended", title=title)
            case DecodeFailed(error=error):
                log.warning("bilibili.decode_error", error=error)

    def _report_unknown(self, decoder: OpenLiveCodec) -> None:
        for name in decoder.unknown_commands.keys() - self._reported_commands:
            self._reported_commands.add(name)
            log.info("bilibili.unknown_command", cmd=name)

    # HTTP ------------------------------------------------------------------------
    async def _call(self, http: aiohttp.ClientSession, path: str, body: bytes) -> dict[str, Any]:
        """One signed call; its reply's data, or OpenApiError / OpenReplyError."""
        cfg = self.config
        headers = open_codec.signed_headers(
            body,
            cfg.access_key_id.get_secret_value(),
            cfg.access_key_secret.get_secret_value(),
            int(self._wall_clock()),
            self._nonce(),
        )
        async with http.post(self._base + path, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise OpenReplyError(f"{path}: HTTP {resp.status}")
            try:
                reply = await read_capped(resp, MAX_REPLY_BYTES)
            except ReplyTooLarge as exc:
                raise OpenReplyError(f"{path}: {exc}") from None
        return open_codec.reply_data(reply)

    async def _end(self, http: aiohttp.ClientSession, game_id: str) -> None:
        """End a session, briefly; one that cannot be ended stays held."""
        body = open_codec.end_body(self.config.app_id, game_id)
        try:
            async with asyncio.timeout(self._end_timeout_s):
                await self._call(http, open_codec.END_PATH, body)
        except OpenApiError as exc:
            if exc.code not in open_codec.SESSION_GONE_CODES:
                log.warning("bilibili.open_end_failed", game_id=game_id, reason=str(exc))
                return
        except (aiohttp.ClientError, OpenReplyError, TimeoutError) as exc:
            reason = _reason(exc, self._end_timeout_s)
            log.warning("bilibili.open_end_failed", game_id=game_id, reason=reason)
            return
        log.info("bilibili.open_ended", game_id=game_id)
        if self._held == game_id:
            self._held = None
            await self._forget()

    async def _end_held(self, http: aiohttp.ClientSession) -> None:
        """End the session left by this client or by an earlier run, if any."""
        if not self._record_read:
            self._record_read = True
            try:
                recorded = await asyncio.to_thread(_read_record, self._record)
            except (OSError, ValueError) as exc:
                log.warning("bilibili.open_record_failed", reason=describe(exc))
                recorded = None
            if recorded is not None and self._held is None:
                log.info("bilibili.open_held", game_id=recorded)
                self._held = recorded
        if self._held is not None:
            await self._end(http, self._held)

    async def _remember(self, game_id: str) -> None:
        try:
            await asyncio.to_thread(_write_record, self._record, game_id)
        except OSError as exc:
            log.warning("bilibili.open_record_failed", reason=describe(exc))

    async def _forget(self) -> None:
        try:
            await asyncio.to_thread(self._record.unlink, missing_ok=True)
        except OSError as exc:
            log.warning("bilibili.open_record_failed", reason=describe(exc))


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no reply within {timeout_s:g} s"
    return describe(exc)


def _read_record(path: Path) -> str | None:
    """The session id an earlier run left (None: none, or not one); OSError or
    ValueError when the file cannot be read as JSON."""
    try:
        with path.open("rb") as file:
            raw = file.read(4096)
    except FileNotFoundError:
        return None
    doc = json.loads(raw)
    game_id = doc.get("game_id") if isinstance(doc, dict) else None
    if isinstance(game_id, str) and 0 < len(game_id) <= MAX_GAME_ID_CHARS:
        return game_id
    return None


def _write_record(path: Path, game_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"game_id": game_id}), encoding="utf-8")
    scratch.replace(path)
