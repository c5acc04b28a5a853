"""The asyncio shell around the Twitch codec: one WebSocket, kept alive.

It connects, logs in (anonymously or with a token), joins, answers PINGs,
pings a silent server itself, and reconnects with backoff. Everything it
decodes goes on the bot's event queue; a bad line is logged and skipped.
Once a channel's room id is known (ROOMSTATE), its third-party emotes are
fetched by a task of their own, so they never hold up reading chat.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from adapters.events import ChatEvent, ChatMessage, Connected, Disconnected, Platform, Retraction
from adapters.ratelimit import SlidingWindow
from adapters.reconnect import Attempt, Backoff, Ended, StaleConnectionError, describe, reconnecting
from adapters.twitch import codec, emotes
from adapters.twitch.config import TwitchConfig

log = structlog.get_logger()

#: Twitch PINGs about every 5 minutes; silence longer than this means a dead link.
IDLE_PING_S = 240.0
PONG_TIMEOUT_S = 10.0
#: Twitch drops lines from a non-moderator sender past 20 per 30 s.
SEND_LIMIT = (20, 30.0)
OUTBOX_SIZE = 20
DEFAULT_BACKOFF = Backoff()


class LoginFailedError(Exception):
    """Bad credentials: retrying would only get the account locked out."""


class TwitchClient:
    def __init__(
        self,
        config: TwitchConfig,
        events: asyncio.Queue[ChatEvent],
        *,
        idle_ping_s: float = IDLE_PING_S,
        pong_timeout_s: float = PONG_TIMEOUT_S,
        backoff: Backoff = DEFAULT_BACKOFF,
        rand: Callable[[], float] = random.random,
        send_limit: tuple[int, float] = SEND_LIMIT,
        emote_services: Sequence[emotes.Service] = (),
        emote_cache_dir: Path | None = None,
        emote_refresh_s: float = emotes.REFRESH_S,
    ) -> None:
        self.config = config
        self.url = config.url
        self.channels = list(config.channels)
        self.token = config.token.get_secret_value()
        self.nick = (
            config.nick or f"{codec.ANONYMOUS_PREFIX}{random.randint(10000, 99999)}"
        ).lower()
        self.authenticated = bool(self.token)
        self.connected = False
        self._events = events
        self._idle_ping_s = idle_ping_s
        self._pong_timeout_s = pong_timeout_s
        self._backoff = backoff
        self._rand = rand
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self._send_budget = SlidingWindow(*send_limit)
        self._emote_services = tuple(emote_services)
        self._emote_cache_dir = emote_cache_dir
        self._emote_refresh_s = emote_refresh_s
        #: Per channel: the room id its emotes are fetched for, and the task doing it.
        self._emote_tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}

    def reply(self, message: ChatMessage, text: str) -> None:
        """Queue a chat reply to `message`; anonymous sessions can only log it."""
        if not self.authenticated:
            log.info(
                "twitch.reply_not_sent", reason="anonymous", channel=message.channel, text=text
            )
            return
        line = codec.privmsg(message.channel, text, reply_to=message.message_id)
        try:
            self._outbox.put_nowait(line)
        except asyncio.QueueFull:
            log.warning("twitch.reply_dropped", reason="outbox full", channel=message.channel)

    async def run(self) -> None:
        """Stay connected until cancelled, or until the login is refused."""
        try:
            await reconnecting(self._connect_once, self._lost, self._backoff, self._rand)
        except LoginFailedError as exc:
            log.error(
                "twitch.login_failed",
                reason=str(exc),
                hint="check platforms.twitch.nick and the token (ISHOWTTS_TWITCH_TOKEN)",
            )
            await self._lost(f"login failed: {exc}")
        finally:
            await self._stop_emotes()

    async def _connect_once(self, attempt: Attempt) -> Ended:
        async with connect(
            self.url, proxy=None, open_timeout=10, max_size=2**20, compression=None
        ) as ws:
            attempt.up()
            await self._session(ws)
        return Ended("server asked to reconnect", at_once=True)

    async def _lost(self, reason: str, **fields: object) -> None:
        log.warning("twitch.disconnected", reason=reason, **fields)
        if self.connected:
            self.connected = False
            for channel in self.channels:
                await self._events.put(Disconnected(Platform.TWITCH, channel, reason))

    def down(self, reason: str) -> list[Disconnected]:
        """After run() crashed: not connected, and the events that tell the bot so
        (sent even if it never connected, so the status shows the channels down)."""
        self.connected = False
        return [Disconnected(Platform.TWITCH, c, reason) for c in self.channels or [""]]

    async def _session(self, ws: ClientConnection) -> None:
        """Run one connection until the server asks us to reconnect (or it fails)."""
        decoder = codec.TwitchCodec(self.nick)
        for line in codec.handshake(self.nick, self.token, self.channels):
            await ws.send(line)
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            ping_token = ""
            while True:
                try:
                    async with asyncio.timeout(
                        self._pong_timeout_s if ping_token else self._idle_ping_s
                    ):
                        frame = await ws.recv(decode=False)
                except TimeoutError:
                    if ping_token:
                        raise StaleConnectionError(
                            f"no PONG within {self._pong_timeout_s:g} s"
                        ) from None
                    ping_token = secrets.token_hex(4)
                    await ws.send(codec.ping(ping_token))
                    continue
                ping_token = ""  # any traffic proves the link is alive
                for event in decoder.feed(frame, time.monotonic()):
                    if await self._handle(ws, event):
                        return
        finally:
            sender.cancel()

    async def _handle(self, ws: ClientConnection, event: codec.TwitchEvent) -> bool:
        match event:
            case ChatMessage() | Retraction():
                await self._events.put(event)
            case codec.SendLine(line=line):
                await ws.send(line)
            case codec.Joined(channel=channel):
                self.connected = True
                log.info(
                    "twitch.connected",
                    channel=channel,
                    nick=self.nick,
                    authenticated=self.authenticated,
                )
                await self._events.put(Connected(Platform.TWITCH, channel))
            case codec.RoomState(channel=channel, room_id=room_id):
                self._watch_emotes(channel, room_id)
            case codec.ReconnectRequested():
                return True
            case codec.LoginFailed(reason=reason):
                raise LoginFailedError(reason)
            case codec.Notice(msg_id=msg_id, text=text):
                log.info("twitch.notice", msg_id=msg_id, text=text)
            case codec.DecodeFailed(error=error, excerpt=excerpt):
                log.warning("twitch.decode_error", error=error, line=excerpt)
        return False

    def _watch_emotes(self, channel: str, room_id: str) -> None:
        """Start fetching a joined channel's third-party emotes, once per room id
        (a reconnect to the same room keeps the task it has)."""
        if not self._emote_services or channel not in self.channels:
            return
        running = self._emote_tasks.get(channel)
        if running is not None:
            if running[0] == room_id and not running[1].done():
                return
            running[1].cancel()
        fetcher = emotes.EmoteFetcher(
            channel,
            room_id,
            self._emote_services,
            self._events,
            apis=self.config.emote_apis,
            cache_dir=self._emote_cache_dir,
            refresh_s=self._emote_refresh_s,
        )
        task = asyncio.create_task(fetcher.run(), name=f"twitch-emotes-{channel}")
        self._emote_tasks[channel] = (room_id, task)

    async def _stop_emotes(self) -> None:
        tasks = [task for _, task in self._emote_tasks.values()]
        self._emote_tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_loop(self, ws: ClientConnection) -> None:
        while True:
            line = await self._outbox.get()
            wait = self._send_budget.wait_s(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            self._send_budget.record(time.monotonic())
            try:
                await ws.send(line)
            except WebSocketException as exc:
                log.warning("twitch.reply_dropped", reason=describe(exc))
                return
