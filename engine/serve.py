"""The engine server (`ishowtts serve`): one loaded engine, many clients, over the
wire protocol (engine/wire.py) on one aiohttp WebSocket route.

Each connection says hello (the wire version, and the token where the server
has one), gets `ready` (the voices, the limits, what the engine runs on), and
then sends requests at will: each synthesis is a task streaming the engine's
chunks back as AUDIO frames the moment they are made, and ends in `done` or an
`error` with its id. A client's `cancel`, or its going away, stops its requests
at the engine's next sampling step.

Access: the token (required by the config where the server listens beyond
this machine) is compared in constant time; wrong ones are counted per client
address, and past a few that address must wait before its next try is even
checked. Each address has a token bucket of requests (`requests_per_minute`,
`burst`); connections at once, requests running per connection, line length,
control frames and uploads are bounded. Every refusal is an `error` frame with
its code and a sentence saying why, logged as `serve.refused` (throttled).

A voice upload is checked exactly as the voices in the folder are (the voice
library prepares it, from a staging folder inside the voices folder), then
moved into place under its own name: a short portable name, never an existing
voice's unless the server allows replacing and the client asks to.

All of this is written against `Connection`, not aiohttp: this module's route
wraps aiohttp's socket in one, and a Ray Serve replica (engine/ray_deployment.py)
wraps Starlette's, so both serve with this same code (`admit`, then `handle`).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog
import yaml
from aiohttp import WSCloseCode, WSMsgType, hdrs, web

from engine import wire
from engine.access import RateLimiter, ThrottledWarnings, WrongTokens
from engine.audio import SAMPLE_RATE
from engine.config import ServeConfig
from engine.voices import AUDIO_SUFFIXES, Voice, VoiceError, VoiceLibrary, choose_default_voice
from engine.worker import SynthesisError, SynthesisStalled

if TYPE_CHECKING:
    from engine.synth import Engine

log = structlog.get_logger()

#: The server pings each client this often, and drops one silent for half of it more.
HEARTBEAT_S = 10.0
#: Requests one connection may have running at once.
MAX_REQUESTS = 8
#: Connections one address may hold before their hello (a slow-hello flood
#: from one peer must not fill the server).
PENDING_PER_ADDRESS = 4
#: A repeated refusal is logged at most this often per code.
REFUSAL_LOG_EVERY_S = 10.0
#: How long the voice list is taken as it was (a request for a voice not on it
#: looks again at once).
VOICES_TTL_S = 2.0
#: Open handlers get this long to finish at shutdown.
SHUTDOWN_TIMEOUT_S = 2.0
#: A client gets this long to answer the server's closing of its connection.
CLOSE_TIMEOUT_S = 2.0

ABOUT = (
    f"iShowTTS engine server (wire version {wire.VERSION}). It speaks WebSocket only: "
    "point a bot's engine.url at ws://THIS-MACHINE:PORT"
)


@dataclass(frozen=True, slots=True)
class Ended:
    """A connection's end, as `Connection.receive` reports it: `error` says why
    where it was not a close (a frame over the size limit)."""

    error: str = ""


class Connection(Protocol):
    """One accepted WebSocket, whichever server holds it: aiohttp's (`EngineServer`'s
    own route) or Starlette's (the Ray Serve replica, engine/ray_deployment.py).
    The protocol, the limits and the uploads are `EngineServer`'s, over this."""

    @property
    def closed(self) -> bool: ...

    async def send_text(self, text: str) -> None:
        """ConnectionError or RuntimeError when the client has gone."""

    async def send_bytes(self, data: bytes) -> None:
        """ConnectionError or RuntimeError when the client has gone."""

    async def receive(self) -> str | bytes | Ended:
        """The next data frame (cancellable: a deadline is the caller's)."""

    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handshake refused before the WebSocket opens: the HTTP status and why."""

    status: int
    text: str


class AiohttpConnection:
    """`Connection` over aiohttp's WebSocketResponse."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def receive(self) -> str | bytes | Ended:
        while True:
            frame = await self.ws.receive()
            if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data: str | bytes = frame.data
                return data
            if frame.type == WSMsgType.ERROR:
                # aiohttp has closed the connection (a frame over the size limit, say).
                return Ended(str(frame.data))
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return Ended()

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode())


@dataclass(eq=False)
class _Client:
    conn: Connection
    peer: str
    audio: wire.AudioFormat = "float32"
    name: str = ""
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    #: Requests the client cancelled (their task ends with a `done`, cancelled).
    cancelled: set[int] = field(default_factory=set)
    #: The upload whose clip frame comes next.
    upload: wire.UploadVoice | None = None
    #: A refused upload's id: its clip frame, when it comes, is dropped.
    discard: int | None = None
    #: The upload being checked and stored (one at a time: each holds its clip).
    storing: int | None = None
    requests: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def track(self, id: int, task: asyncio.Task[None]) -> None:
        """`task` serves request `id` until it ends."""
        self.tasks[id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.tasks.get(id) is done:
                del self.tasks[id]
                self.cancelled.discard(id)

        task.add_done_callback(forget)

    async def send(self, message: wire.ServerMessage | bytes) -> bool:
        """False when the client has gone (nothing to do about it then)."""
        try:
            async with self.lock:
                if isinstance(message, bytes):
                    await self.conn.send_bytes(message)
                else:
                    await self.conn.send_text(wire.encode(message))
        except (ConnectionError, RuntimeError):
            return False
        return True


def engine_info(engine: Engine) -> dict[str, str | int | float | bool | None]:
    """What the engine runs on, for clients' `engine.ready` lines."""
    return {
        "device": engine.device,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "path": engine.path,
        "kernels": str(engine.kernels),
        "nfe_steps": engine.config.nfe_steps,
    }


class EngineServer:
    """The server over one started engine (`wait_ready` done) and its voice library."""

    def __init__(
        self,
        engine: Engine,
        voices: VoiceLibrary,
        config: ServeConfig,
        *,
        default_voice: str,
        info: dict[str, str | int | float | bool | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.voices = voices
        self.config = config
        self.default_voice = default_voice
        self.info = info if info is not None else engine_info(engine)
        self._token = config.token.get_secret_value()
        self._limits = RateLimiter(config.requests_per_minute, config.burst, clock)
        self._wrong_tokens = WrongTokens(clock)
        self._refusals = ThrottledWarnings(REFUSAL_LOG_EVERY_S, clock)
        self._clock = clock
        self._connections: set[Connection] = set()
        #: Connections per address that have not said hello yet.
        self._pending: collections.Counter[str] = collections.Counter()
        self._clients: set[_Client] = set()
        self._names: list[str] = []
        self._names_at = -VOICES_TTL_S
        self._uploading = asyncio.Lock()
        self._refreshing: asyncio.Task[list[str]] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # lifecycle ---------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._about)
        app.router.add_get("/ws", self._connection)
        return app

    async def start(self, sock: socket.socket | None = None) -> str:
        """Listen (on `sock`, bound early by the caller, else on the configured
        address); returns the WebSocket's URL and logs `serve.started`."""
        self._names = await asyncio.to_thread(self.voices.names)
        self._names_at = self._clock()
        runner = web.AppRunner(
            self.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        site: web.BaseSite = (
            web.SockSite(runner, sock)
            if sock is not None
            else web.TCPSite(runner, self.config.host, self.config.port)
        )
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in str(host) else host
        self.url = f"ws://{shown}:{port}/ws"
        log.info(
            "serve.started",
            url=self.url,
            token=bool(self._token),
            voices=len(self._names),
            default_voice=self.default_voice,
        )
        return self.url

    async def close(self) -> None:
        """Stop listening and close every connection (their requests are cancelled)."""
        going = WSCloseCode.GOING_AWAY
        closing = [conn.close(going, "server stopping") for conn in list(self._connections)]
        await asyncio.gather(*closing, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # connections -------------------------------------------------------------------
    async def _about(self, _: web.Request) -> web.Response:
        return web.Response(text=ABOUT + "\n", content_type="text/plain")

    async def _connection(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            timeout=CLOSE_TIMEOUT_S,
            heartbeat=HEARTBEAT_S,
            max_msg_size=self.max_frame_bytes,
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=426, text=ABOUT + "\n", content_type="text/plain")
        peer = request.remote or "unknown"
        refusal = self.admit(peer, request.headers.get(hdrs.ORIGIN))
        if refusal is not None:
            return web.Response(status=refusal.status, text=refusal.text + "\n")
        await ws.prepare(request)
        await self.handle(AiohttpConnection(ws), peer)
        return ws

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame a client may send (a voice upload's clip)."""
        return self.config.max_upload_bytes + wire.HEADER.size

    def admit(self, peer: str, origin: str | None) -> Refusal | None:
        """Whether a WebSocket handshake from `peer` (with this Origin header, if any)
        may open; refused ones never reach `handle`."""
        if origin is not None:
            # Browsers send an Origin with every WebSocket handshake and apply no
            # CORS to it: any page the streamer opens could otherwise speak (and
            # upload voices) through a server on this machine. Bots send none.
            self._refused(peer, wire.Error(wire.AUTH, "browser page"))
            return Refusal(403, "web pages may not use the engine server")
        if self._pending[peer] >= PENDING_PER_ADDRESS:
            self._refused(peer, wire.Error(wire.BUSY, "too many connections before hello"))
            return Refusal(429, "too many connections from this address")
        return None

    async def handle(self, conn: Connection, peer: str) -> None:
        """Serve one admitted connection, from its hello until it ends."""
        client = _Client(conn, peer)
        self._connections.add(conn)
        greeted = False
        self._pending[peer] += 1
        try:
            try:
                greeted = await self._greet(client)
            finally:
                self._pending[peer] -= 1
                if not self._pending[peer]:
                    del self._pending[peer]
            if greeted:
                self._clients.add(client)
                log.info("serve.client_connected", peer=client.peer, client=client.name)
                await self._serve(client)
        finally:
            self._connections.discard(conn)
            self._clients.discard(client)
            tasks = list(client.tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if greeted:
                log.info("serve.client_left", peer=client.peer, requests=client.requests)
            if not conn.closed:
                await conn.close(WSCloseCode.OK)

    def _refused(self, peer: str, error: wire.Error) -> None:
        """`serve.refused`, at most every REFUSAL_LOG_EVERY_S per code."""
        self._refusals.warn(
            error.code,
            "serve.refused",
            peer=peer,
            code=error.code,
            id=error.id,
            message=error.message[:200],
        )

    async def _refuse(
        self, client: _Client, error: wire.Error, close: WSCloseCode | None = None
    ) -> None:
        """Answer a refusal (and close the connection, for one refused as a whole)."""
        self._refused(client.peer, error)
        await client.send(error)
        if close is not None:
            await client.conn.close(close, error.code)

    async def _greet(self, client: _Client) -> bool:
        """The hello: version, token, limits; True once `ready` is sent."""
        # Only greeted clients count: connections that never say hello time out,
        # and each address may hold only a few of those (PENDING_PER_ADDRESS).
        busy = len(self._clients) >= self.config.max_clients
        if busy:
            message = f"this server takes {self.config.max_clients} connections at once"
            await self._refuse(client, wire.Error(wire.BUSY, message), WSCloseCode.TRY_AGAIN_LATER)
            return False
        wait = self._limits.take(client.peer)
        if wait:
            await self._refuse(client, _rate_limited(wait), WSCloseCode.TRY_AGAIN_LATER)
            return False
        try:
            async with asyncio.timeout(wire.HELLO_TIMEOUT_S):
                first = await client.conn.receive()
        except TimeoutError:
            error = wire.Error(wire.BAD_REQUEST, f"no hello within {wire.HELLO_TIMEOUT_S:g} s")
            await self._refuse(client, error, WSCloseCode.POLICY_VIOLATION)
            return False
        if isinstance(first, Ended):
            return False
        if isinstance(first, bytes):
            error = wire.Error(wire.BAD_REQUEST, "the first frame must be a hello (text)")
            await self._refuse(client, error, WSCloseCode.PROTOCOL_ERROR)
            return False
        try:
            hello = wire.decode_client(first)
        except wire.WireError as exc:
            too_big = exc.code == wire.TOO_LARGE
            code = WSCloseCode.MESSAGE_TOO_BIG if too_big else WSCloseCode.PROTOCOL_ERROR
            await self._refuse(client, wire.Error(exc.code, exc.message), code)
            return False
        if not isinstance(hello, wire.Hello):
            error = wire.Error(wire.BAD_REQUEST, "say hello first")
            await self._refuse(client, error, WSCloseCode.PROTOCOL_ERROR)
            return False
        if self._token:
            locked = self._wrong_tokens.retry_after(client.peer)
            if locked:
                message = (
                    f"too many wrong tokens from this address: try again in {int(locked) + 1} s"
                )
                error = wire.Error(wire.RATE_LIMITED, message, retry_after_s=round(locked, 1))
                await self._refuse(client, error, WSCloseCode.TRY_AGAIN_LATER)
                return False
            if not hmac.compare_digest(hello.token.encode(), self._token.encode()):
                self._wrong_tokens.failed(client.peer)
                message = "wrong token" if hello.token else "this server needs a token"
                await self._refuse(
                    client, wire.Error(wire.AUTH, message), WSCloseCode.POLICY_VIOLATION
                )
                return False
            self._wrong_tokens.succeeded(client.peer)
        client.audio, client.name = hello.audio, hello.client
        ready = wire.Ready(
            voices=tuple(await self._voice_names()),
            default_voice=self.default_voice,
            limits=wire.Limits(
                max_text_chars=self.config.max_text_chars,
                max_upload_bytes=self.config.max_upload_bytes,
                requests_per_minute=self.config.requests_per_minute,
                burst=self.config.burst,
                max_requests=MAX_REQUESTS,
            ),
            audio=hello.audio,
            engine=self.info,
        )
        return await client.send(ready)

    async def _serve(self, client: _Client) -> None:
        while True:
            frame = await client.conn.receive()
            if isinstance(frame, str):
                await self._on_text(client, frame)
            elif isinstance(frame, bytes):
                await self._on_binary(client, frame)
            else:
                if frame.error:
                    error = wire.Error(wire.TOO_LARGE, f"connection ended: {frame.error}")
                    self._refused(client.peer, error)
                return

    async def _on_text(self, client: _Client, text: str) -> None:
        try:
            message = wire.decode_client(text)
        except wire.WireError as exc:
            await self._refuse(client, wire.Error(exc.code, exc.message, id=exc.id))
            return
        if client.upload is not None:
            # The clip must come right after its upload_voice.
            waiting, client.upload = client.upload, None
            error = "its clip frame must follow upload_voice at once"
            await self._refuse(client, wire.Error(wire.BAD_REQUEST, error, id=waiting.id))
        match message:
            case wire.Synthesize():
                await self._start(client, message)
            case wire.Cancel(id=id):
                task = client.tasks.get(id)
                if task is not None and task.cancel():  # one already finished needs nothing
                    client.cancelled.add(id)
            case wire.ListVoices():
                if await self._allowed(client, None):
                    names = await self._voice_names(refresh=True)
                    await client.send(wire.VoiceList(tuple(names), self.default_voice))
            case wire.UploadVoice():
                await self._upload_begins(client, message)
            case wire.Hello():
                await self._refuse(client, wire.Error(wire.BAD_REQUEST, "hello was said already"))

    async def _allowed(self, client: _Client, id: int | None) -> bool:
        wait = self._limits.take(client.peer)
        if wait:
            await self._refuse(client, _rate_limited(wait, id))
        return not wait

    async def _voice_names(self, refresh: bool = False) -> list[str]:
        if refresh or self._clock() - self._names_at >= VOICES_TTL_S:
            self._names = await asyncio.to_thread(self.voices.names)
            self._names_at = self._clock()
        return self._names

    async def _known(self, voice: str) -> bool:
        """Whether the server has `voice`. A voice on the list answers at once (a list
        gone stale is read again in the background, off the request's way); one not
        on it has the folder looked at first."""
        if voice not in self._names:
            return voice in await self._voice_names(refresh=True)
        stale = self._clock() - self._names_at >= VOICES_TTL_S
        if stale and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._voice_names(refresh=True))
        return True

    # synthesis ---------------------------------------------------------------------
    async def _start(self, client: _Client, request: wire.Synthesize) -> None:
        id = request.id
        if not await self._allowed(client, id):
            return
        problem: wire.Error | None = None
        if id in client.tasks:
            problem = wire.Error(wire.BAD_REQUEST, f"id {id} is in use by a running request", id)
        elif len(client.tasks) >= MAX_REQUESTS:
            problem = wire.Error(
                wire.BUSY, f"{MAX_REQUESTS} requests are running on this connection already", id
            )
        elif len(request.text) > self.config.max_text_chars:
            problem = wire.Error(
                wire.TOO_LARGE,
                f"text of {len(request.text)} characters; this server takes "
                f"{self.config.max_text_chars} at most",
                id,
            )
        elif not await self._known(request.voice):
            have = ", ".join(self._names[:20]) or "none"
            problem = wire.Error(
                wire.UNKNOWN_VOICE, f"no voice {request.voice!r} here (have: {have})", id
            )
        if problem is not None:
            await self._refuse(client, problem)
            return
        client.requests += 1
        client.track(id, asyncio.create_task(self._synthesize(client, request)))

    async def _synthesize(self, client: _Client, request: wire.Synthesize) -> None:
        samples = 0
        stream = self.engine.stream(
            request.text,
            request.voice,
            request.seed,
            preview=request.preview,
            speed=request.speed,
            steps=request.steps,
        )
        try:
            seq = 0
            async for chunk in stream:
                if not await client.send(wire.encode_audio(request.id, seq, chunk, client.audio)):
                    return  # the client has gone: the request stops here
                seq += 1
                samples += len(chunk)
            await client.send(wire.Done(request.id, round(samples / SAMPLE_RATE, 3)))
        except asyncio.CancelledError:
            if request.id not in client.cancelled:
                raise  # the connection is closing
            client.cancelled.discard(request.id)
            done = wire.Done(request.id, round(samples / SAMPLE_RATE, 3), cancelled=True)
            await client.send(done)
        except SynthesisStalled as exc:
            await client.send(wire.Error(wire.STALLED, str(exc), request.id))
        except SynthesisError as exc:
            await client.send(wire.Error(wire.SYNTHESIS, str(exc), request.id))
        finally:
            await stream.aclose()

    # voice uploads -----------------------------------------------------------------
    async def _upload_begins(self, client: _Client, upload: wire.UploadVoice) -> None:
        """Check what can be checked before the clip; refused: its clip is dropped."""
        problem: wire.Error | None = None
        if not await self._allowed(client, upload.id):
            client.discard = upload.id
            return
        name_problem = wire.upload_name_problem(upload.name)
        if name_problem is not None:
            problem = wire.Error(wire.BAD_REQUEST, name_problem, upload.id)
        elif upload.size > self.config.max_upload_bytes:
            problem = wire.Error(
                wire.TOO_LARGE,
                f"clip of {upload.size} bytes; this server takes "
                f"{self.config.max_upload_bytes} at most",
                upload.id,
            )
        elif upload.id in client.tasks:
            problem = wire.Error(
                wire.BAD_REQUEST, f"id {upload.id} is in use by a running request", upload.id
            )
        elif client.storing is not None or client.upload is not None:
            problem = wire.Error(
                wire.BUSY,
                "one voice upload at a time: send the next after the last one's answer",
                upload.id,
            )
        else:
            taken = {n.lower(): n for n in await self._voice_names(refresh=True)}
            existing = taken.get(upload.name.lower())
            if existing is not None and not self._may_replace(upload):
                why = (
                    "this server does not replace voices (serve.allow_replace)"
                    if upload.replace
                    else "upload with replace to overwrite it"
                )
                problem = wire.Error(
                    wire.EXISTS, f"voice {existing!r} exists here: {why}", upload.id
                )
        if problem is not None:
            client.discard = upload.id
            await self._refuse(client, problem)
            return
        client.upload = upload

    def _may_replace(self, upload: wire.UploadVoice) -> bool:
        return upload.replace and self.config.allow_replace

    async def _on_binary(self, client: _Client, data: bytes) -> None:
        try:
            frame = wire.decode_binary(data)
        except wire.WireError as exc:
            await self._refuse(client, wire.Error(exc.code, exc.message))
            return
        if isinstance(frame, wire.Audio):
            await self._refuse(client, wire.Error(wire.BAD_REQUEST, "clients send no audio"))
            return
        if client.discard == frame.id:
            client.discard = None
            return
        upload, client.upload = client.upload, None
        if upload is None or upload.id != frame.id:
            error = f"clip for id {frame.id} without its upload_voice"
            await self._refuse(client, wire.Error(wire.BAD_REQUEST, error, frame.id))
            return
        if len(frame.data) != upload.size:
            error = f"clip of {len(frame.data)} bytes; upload_voice said {upload.size}"
            await self._refuse(client, wire.Error(wire.BAD_REQUEST, error, upload.id))
            return
        client.storing = upload.id
        client.track(upload.id, asyncio.create_task(self._store(client, upload, frame.data)))

    async def _store(self, client: _Client, upload: wire.UploadVoice, data: bytes) -> None:
        try:
            await self._store_checked(client, upload, data)
        finally:
            client.storing = None

    async def _store_checked(self, client: _Client, upload: wire.UploadVoice, data: bytes) -> None:
        replace = self._may_replace(upload)
        try:
            async with self._uploading:
                voice = await asyncio.to_thread(
                    store_voice, self.voices.directory, upload, data, replace
                )
        except VoiceError as exc:
            await self._refuse(client, wire.Error(wire.BAD_VOICE, str(exc), upload.id))
            return
        except FileExistsError as exc:
            await self._refuse(client, wire.Error(wire.EXISTS, str(exc), upload.id))
            return
        except OSError as exc:
            log.error("serve.upload_failed", peer=client.peer, name=upload.name, error=str(exc))
            message = f"the server could not store the voice ({exc.strerror or exc})"
            await client.send(wire.Error(wire.BAD_VOICE, message, upload.id))
            return
        names = tuple(await self._voice_names(refresh=True))
        log.info(
            "serve.voice_uploaded",
            peer=client.peer,
            name=upload.name,
            seconds=round(voice.seconds, 2),
            trimmed_from_s=voice.trimmed_from_s,
            replaced=replace,
        )
        await client.send(wire.Uploaded(upload.id, upload.name, names))
        for other in list(self._clients):
            if other is not client:
                await other.send(wire.VoiceList(names, self.default_voice))


def _rate_limited(wait: float, id: int | None = None) -> wire.Error:
    return wire.Error(
        wire.RATE_LIMITED,
        f"too many requests from this address: try again in {wait:.1f} s",
        id,
        retry_after_s=round(wait, 2),
    )


def server_default_voice(voices: VoiceLibrary, configured: str) -> str:
    """The voice for clients that set none of their own: engine.default_voice, or
    what stands in for an unset one, as the bot picks it (`serve.default_voice`
    says which and why); VoiceError when there is none."""
    default, why = choose_default_voice(voices, configured, "en")
    if why is not None:
        log.info("serve.default_voice", voice=default, reason=why)
    return default


def store_voice(directory: Path, upload: wire.UploadVoice, data: bytes, replace: bool) -> Voice:
    """Check an uploaded voice as the library checks any (VoiceError: why not), then
    move it into `directory`: transcript and settings first, the clip (by which
    the library finds a voice) last. FileExistsError where the name is taken and
    `replace` is off."""
    directory.mkdir(parents=True, exist_ok=True)
    name = upload.name
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=directory) as staging:
        staged = Path(staging)
        files = [staged / f"{name}.txt"]
        files[0].write_text(upload.transcript, encoding="utf-8")
        if upload.settings is not None:
            files.append(staged / f"{name}.yaml")
            settings = upload.settings.model_dump(exclude_defaults=True)
            files[-1].write_text(yaml.safe_dump(settings), encoding="utf-8")
        clip = staged / f"{name}.{upload.format}"
        clip.write_bytes(data)
        files.append(clip)
        try:
            voice = VoiceLibrary(staged, builtins=False).get(name)
        except VoiceError as exc:
            # The staging folder is the server's business: the client hears file names.
            reason = str(exc).replace(str(staged) + os.sep, "").replace(str(staged), "")
            raise VoiceError(reason) from None
        own = {".txt", ".yaml", *AUDIO_SUFFIXES}
        present = [
            p
            for p in directory.iterdir()
            if p.is_file() and p.stem.lower() == name.lower() and p.suffix.lower() in own
        ]
        if any(p.suffix.lower() in AUDIO_SUFFIXES for p in present) and not replace:
            raise FileExistsError(f"voice {name!r} exists here")
        for path in present:
            path.unlink()
        for path in files:
            os.replace(path, directory / path.name)
    return voice
