"""The bot's side of `ishowtts serve`: `RemoteEngine`, a client of an engine server
with the surface the bot uses of a local engine (`stream`, `voices`, `start`,
`wait_ready`, `wait_available`, `state`, `close`), so the speaker, the panel's
previews and `ishowtts say` work the same over the network.

One WebSocket carries every request, multiplexed by id (engine/wire.py). While
it is down, `stream` raises `EngineUnavailable` at once, a request in flight
when it drops raises it too, and the client reconnects with backoff; the
speaker waits on `wait_available` before it takes the next line, so what is
queued waits (within its TTL) rather than being skipped. The voices are the
server's, as its `ready` and `voices` messages list them; voices in the bot's
own folder that the server lacks are uploaded once per connection (a voice of
the same name on the server is taken to be the same voice).

Nothing here imports torch: a bot with `engine.url` loads no model.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import numpy as np
import structlog
import yaml
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.reconnect import CONNECTION_ERRORS, Attempt, Backoff, Ended, reconnecting
from engine import wire
from engine.config import EngineConfig
from engine.voices import IMPLICIT_DEFAULT, VoiceError, VoiceLibrary, VoiceSettings
from engine.worker import MAX_SPEED, MIN_SPEED, SynthesisError, SynthesisStalled

log = structlog.get_logger()

#: Reconnecting to an engine server: 0.5 s, doubling to 5 s apart (a restarted
#: server is found within seconds of being back); quick again after 30 s up.
ENGINE_BACKOFF = Backoff(base_s=0.5, cap_s=5.0, jitter_s=0.5, stable_s=30.0)
#: Pings this often; a server silent this long after one is taken for gone.
KEEPALIVE_S = 5.0
OPEN_TIMEOUT_S = 10.0
#: How often the server's voice list is asked for again (uploads are pushed).
VOICES_REFRESH_S = 30.0
#: The largest frame taken from a server (a long sentence's audio is a few MB).
MAX_FRAME = 64 * 2**20
CLIENT_NAME = "ishowtts"
#: The server's engine fields `engine.ready` repeats (those a local engine logs).
ENGINE_FIELDS = ("device", "dtype", "path", "kernels", "nfe_steps")


class EngineUnavailable(SynthesisError):
    """The engine server cannot be reached now: this line is skipped, the next waits."""


class RequestRefused(SynthesisError):
    """The server refused one request (`code`: rate_limited, too_large, unknown_voice…)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class EngineRefused(Exception):
    """The server refused this client as a whole (wrong token, another wire
    version, not an engine server): trying again as configured will not help."""


class _ServerBusy(ConnectionError):
    """Refused for now (busy, rate limited): a connection error, retried with backoff."""


class RemoteVoices:
    """The engine server's voices, as it last listed them."""

    def __init__(self) -> None:
        self._names: list[str] = []
        #: The server's default voice (its engine.default_voice, or what stands in).
        self.default: str | None = None

    def names(self) -> list[str]:
        return list(self._names)

    def update(self, names: tuple[str, ...], default: str) -> None:
        self._names, self.default = list(names), default

    def choose_default(self, configured: str) -> tuple[str, str | None]:
        """The bot's voice when none is asked for, and why, if it is not `configured`:
        `configured` where the server has it; left unset, the server's default; a
        name the user set that the server lacks is an error (VoiceError)."""
        if configured in self._names:
            return configured, None
        have = ", ".join(self._names) or "none"
        if configured != IMPLICIT_DEFAULT or self.default not in self._names:
            raise VoiceError(f"voice {configured!r} not found on the engine server (have: {have})")
        return self.default, (
            f"no voice {configured!r} on the engine server; using its default, "
            f"{self.default!r} (set engine.default_voice to choose)"
        )


Pending = asyncio.Queue[np.ndarray | BaseException | None]


class RemoteEngine:
    """An engine server's client with a local engine's surface (see the module)."""

    def __init__(
        self,
        config: EngineConfig,
        voices: RemoteVoices | None = None,
        *,
        local_voices: VoiceLibrary | None = None,
        backoff: Backoff = ENGINE_BACKOFF,
        keepalive_s: float = KEEPALIVE_S,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if config.url is None:
            raise ValueError("RemoteEngine needs engine.url")
        self.url = config.url
        self.config = config
        self.voices = voices if voices is not None else RemoteVoices()
        self.device = "remote"
        #: What the server's engine runs on, from its `ready`.
        self.info: dict[str, Any] = {}
        self.limits: wire.Limits | None = None
        self.errors = 0  # requests that failed (a metric)
        self.stalls = 0  # of which the server's watchdog abandoned (a metric)
        self._local = local_voices
        self._token = config.token.get_secret_value()
        self._audio: wire.AudioFormat = config.wire_format
        self._backoff = backoff
        self._keepalive_s = keepalive_s
        self._rand = rand
        self._ws: ClientConnection | None = None
        self._up = asyncio.Event()
        self._requests: dict[int, Pending] = {}
        self._next_seq: dict[int, int] = {}
        self._uploads: dict[int, asyncio.Future[wire.Uploaded]] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        self._was_up = False
        self._down_since = time.monotonic()
        self._reason = "not connected yet"

    @property
    def state(self) -> str:
        """ "up" while connected, else "unavailable" (the panel and /metrics show it)."""
        return "up" if self._ws is not None else "unavailable"

    def start(self) -> None:
        """Connect (and keep reconnecting) in a task on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._task = self._loop.create_task(self._run(), name="ishowtts-remote-engine")

    async def wait_ready(self) -> None:
        """Until the server first answers `ready` (retrying while it cannot be
        reached); EngineRefused if it refuses this client."""
        assert self._ready is not None, "start() first"
        await asyncio.shield(self._ready)

    async def wait_available(self) -> None:
        """Until the connection is up."""
        await self._up.wait()

    def close(self, timeout: float = 0.0) -> None:
        """Stop: the connection closes, requests in flight end. Safe from any thread."""
        task, loop = self._task, self._loop
        if task is None or loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(task.cancel)

    async def aclose(self) -> None:
        """Stop, and wait until the connection is closed."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def stream(
        self,
        text: str,
        voice: str,
        seed: int | None = None,
        *,
        preview: bool = False,
        speed: float = 1.0,
        steps: int | None = None,
    ) -> AsyncGenerator[np.ndarray, None]:
        """Audio for `text` in `voice` from the server, one chunk per sentence as it
        arrives (the local engine's `stream`). EngineUnavailable when the server
        cannot be reached, now or before the line is done."""
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be within {MIN_SPEED}-{MAX_SPEED}, got {speed}")
        ws = self._ws
        if ws is None:
            raise EngineUnavailable(f"the engine server {self.url} is unavailable ({self._reason})")
        if self.limits is not None and len(text) > self.limits.max_text_chars:
            raise self._failed(
                wire.Error(
                    wire.TOO_LARGE,
                    f"text of {len(text)} characters; the server takes "
                    f"{self.limits.max_text_chars} at most",
                )
            )
        id = self._new_id()
        out: Pending = asyncio.Queue()
        self._requests[id] = out
        self._next_seq[id] = 0
        finished = False
        try:
            request = wire.Synthesize(id, text, voice, speed, steps, seed, preview)
            try:
                await ws.send(wire.encode(request))
            except ConnectionClosed:
                raise EngineUnavailable(
                    f"lost the connection to the engine server {self.url}"
                ) from None
            while True:
                item = await out.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            self._requests.pop(id, None)
            self._next_seq.pop(id, None)
            if not finished and self._ws is ws:
                # Left early (a skip, a retraction): the server stops sampling it.
                self._spawn(self._send_quietly(ws, wire.Cancel(id)))

    # the connection ---------------------------------------------------------------
    async def _run(self) -> None:
        assert self._ready is not None
        try:
            await reconnecting(self._connect_once, self._lost, self._backoff, self._rand)
        except EngineRefused as exc:
            log.error("engine.refused", url=self.url, reason=str(exc))
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            for helper in list(self._helpers):
                helper.cancel()
            if not self._ready.done():
                self._ready.set_exception(EngineUnavailable("the engine client was closed"))
                self._ready.exception()  # retrieved: nobody may be waiting

    async def _connect_once(self, attempt: Attempt) -> Ended:
        attempt.fields["url"] = self.url
        async with connect(
            self.url,
            open_timeout=OPEN_TIMEOUT_S,
            ping_interval=self._keepalive_s,
            ping_timeout=self._keepalive_s,
            close_timeout=1.0,
            max_size=MAX_FRAME,
            compression=None,
            proxy=None,
        ) as ws:
            hello = wire.Hello(token=self._token, audio=self._audio, client=CLIENT_NAME)
            await ws.send(wire.encode(hello))
            async with asyncio.timeout(wire.HELLO_TIMEOUT_S):
                first = await ws.recv()
            try:
                ready = self._greeted(first)
            except EngineRefused as exc:
                if self._ready is None or not self._ready.done():
                    raise
                log.error("engine.refused", url=self.url, reason=str(exc))
                return Ended(f"refused: {exc}")
            attempt.up()
            self._connected(ws, ready)
            helpers = [
                self._spawn(self._refresh_voices(ws)),
                self._spawn(self._upload_missing(ws, ready.limits)),
            ]
            try:
                async for frame in ws:
                    self._dispatch(frame)
            finally:
                for helper in helpers:
                    helper.cancel()
                self._disconnected()
        return Ended("the engine server closed the connection")

    def _greeted(self, first: str | bytes) -> wire.Ready:
        """The server's answer to hello: its `ready`, or why it refused."""
        if isinstance(first, bytes):
            raise EngineRefused("not an ishowtts engine server (it answered with binary data)")
        try:
            answer = wire.decode_server(first)
        except wire.WireError as exc:
            raise EngineRefused(f"not an engine server this bot understands: {exc}") from None
        if isinstance(answer, wire.Ready):
            return answer
        if isinstance(answer, wire.Error):
            if answer.code in (wire.BUSY, wire.RATE_LIMITED):
                raise _ServerBusy(f"{answer.code}: {answer.message}")
            hint = (
                " (set engine.token or ISHOWTTS_ENGINE_TOKEN)" if answer.code == wire.AUTH else ""
            )
            raise EngineRefused(f"{answer.code}: {answer.message}{hint}")
        raise EngineRefused(f"the engine server said {type(answer).__name__} before ready")

    def _connected(self, ws: ClientConnection, ready: wire.Ready) -> None:
        assert self._ready is not None
        self._ws = ws
        self.limits = ready.limits
        self.info = dict(ready.engine)
        self.voices.update(ready.voices, ready.default_voice)
        shown = {k: self.info[k] for k in ENGINE_FIELDS if k in self.info}
        if not self._ready.done():
            log.info("engine.ready", url=self.url, remote=True, voices=len(ready.voices), **shown)
            self._ready.set_result(None)
        else:
            down_s = round(time.monotonic() - self._down_since, 1)
            log.info("engine.reconnected", url=self.url, down_s=down_s, **shown)
        self._was_up = True
        self._up.set()

    def _disconnected(self) -> None:
        """Every request in flight ends EngineUnavailable; new ones fail at once."""
        self._ws = None
        self._up.clear()
        self._down_since = time.monotonic()
        for out in self._requests.values():
            out.put_nowait(
                EngineUnavailable(f"lost the connection to the engine server {self.url}")
            )
        for future in self._uploads.values():
            if not future.done():
                future.set_exception(EngineUnavailable("lost the connection"))

    async def _lost(self, reason: str, **fields: object) -> None:
        self._reason = reason
        event = "engine.disconnected" if self._was_up else "engine.unreachable"
        self._was_up = False
        log.warning(event, reason=reason, **fields)

    def _dispatch(self, frame: str | bytes) -> None:
        """One frame from the server; a frame that breaks the protocol ends the
        connection (a new one starts clean)."""
        try:
            message: wire.ServerMessage | wire.Audio | wire.Clip = (
                wire.decode_binary(frame) if isinstance(frame, bytes) else wire.decode_server(frame)
            )
        except wire.WireError as exc:
            raise ConnectionError(f"the engine server sent a bad frame: {exc}") from None
        match message:
            case wire.Audio(id=id, seq=seq, samples=samples):
                out = self._requests.get(id)
                if out is None:
                    return  # a request left early: its last frames are dropped
                if seq != self._next_seq.get(id):
                    out.put_nowait(
                        SynthesisError(f"audio frame {seq} of request {id} out of order")
                    )
                    self._requests.pop(id, None)
                    return
                self._next_seq[id] = seq + 1
                out.put_nowait(samples)
            case wire.Done(id=id):
                out = self._requests.pop(id, None)
                if out is not None:
                    out.put_nowait(None)
            case wire.Error(id=None, code=code, message=text):
                log.warning("engine.server_error", url=self.url, code=code, message=text[:200])
            case wire.Error(id=id):
                assert id is not None
                upload = self._uploads.get(id)
                if upload is not None and not upload.done():
                    upload.set_exception(RequestRefused(message.code, message.message))
                out = self._requests.pop(id, None)
                if out is not None:
                    out.put_nowait(self._failed(message))
            case wire.VoiceList(voices=names, default_voice=default):
                self.voices.update(names, default)
            case wire.Uploaded(id=id, voices=names):
                self.voices.update(names, self.voices.default or "")
                upload = self._uploads.get(id)
                if upload is not None and not upload.done():
                    upload.set_result(message)
            case wire.Clip() | wire.Ready():
                raise ConnectionError(f"the engine server sent {type(message).__name__} unasked")

    def _failed(self, error: wire.Error) -> SynthesisError:
        """A request's error as the exception its `stream` raises, counted and logged."""
        self.errors += 1
        if error.code == wire.STALLED:
            self.stalls += 1
            log.error("engine.stalled", url=self.url, error=error.message[:300])
            return SynthesisStalled(error.message)
        if error.code == wire.SYNTHESIS:
            log.error("engine.error", url=self.url, error=error.message[:300])
            return SynthesisError(error.message)
        log.warning("engine.request_refused", url=self.url, code=error.code, error=error.message)
        return RequestRefused(error.code, error.message)

    # helpers ----------------------------------------------------------------------
    def _new_id(self) -> int:
        return (next(self._ids) - 1) % wire.MAX_ID + 1

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
        return task

    async def _send_quietly(self, ws: ClientConnection, message: wire.ClientMessage) -> None:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await ws.send(wire.encode(message))

    async def _refresh_voices(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(VOICES_REFRESH_S)
            await self._send_quietly(ws, wire.ListVoices())

    async def _upload_missing(self, ws: ClientConnection, limits: wire.Limits) -> None:
        """The bot's own voices the server lacks, uploaded one by one (the server
        checks each as it checks its own; a refusal is logged, never fatal)."""
        if self._local is None:
            return
        local = self._local
        try:
            own = await asyncio.to_thread(local.user_names)
        except OSError as exc:
            log.warning("engine.voices_not_uploaded", reason=str(exc))
            return
        for name in own:
            if name.lower() in {n.lower() for n in self.voices.names()}:
                continue
            try:
                upload, data = await asyncio.to_thread(_read_voice, local, name, self._new_id())
                if len(data) > limits.max_upload_bytes:
                    raise VoiceError(
                        f"its clip is {len(data)} bytes; the server takes "
                        f"{limits.max_upload_bytes} at most"
                    )
                done: asyncio.Future[wire.Uploaded] = asyncio.get_running_loop().create_future()
                self._uploads[upload.id] = done
                try:
                    await ws.send(wire.encode(upload))
                    await ws.send(wire.encode_clip(upload.id, data))
                    await done
                finally:
                    self._uploads.pop(upload.id, None)
            except (VoiceError, RequestRefused) as exc:
                log.warning("engine.voice_not_uploaded", name=name, reason=str(exc))
                continue
            except (EngineUnavailable, *CONNECTION_ERRORS):
                return
            log.info("engine.voice_uploaded", url=self.url, name=name)


def _read_voice(library: VoiceLibrary, name: str, id: int) -> tuple[wire.UploadVoice, bytes]:
    """One of the bot's voices as an upload: VoiceError where it cannot be one."""
    problem = wire.upload_name_problem(name)
    if problem is not None:
        raise VoiceError(problem)
    files = library.files(name)
    suffix = files.audio.suffix.lower().lstrip(".")
    formats = {f: f for f in wire.UPLOAD_FORMATS}
    if suffix not in formats:
        raise VoiceError(f"its clip {files.audio.name} is not one of {', '.join(formats)}")
    try:
        transcript = files.transcript.read_text(encoding="utf-8").strip()
        data = files.audio.read_bytes()
        settings = None
        if files.settings is not None:
            raw = yaml.safe_load(files.settings.read_text(encoding="utf-8")) or {}
            settings = VoiceSettings.model_validate(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise VoiceError(f"cannot read it ({type(exc).__name__}: {exc})") from None
    if len(transcript) > wire.MAX_TRANSCRIPT_CHARS:
        raise VoiceError(f"its transcript is over {wire.MAX_TRANSCRIPT_CHARS} characters")
    upload = wire.UploadVoice(
        id=id,
        name=name,
        transcript=transcript,
        format=formats[suffix],
        size=len(data),
        settings=settings,
    )
    return upload, data
