"""The streamer's control panel, its JSON API, /metrics and the OBS overlay.

Every action goes through `bot.control`, the same code the chat commands use.
When a token is configured, every route but the login form needs it (as a
Bearer header, the session cookie the login form sets, or `?token=` for OBS
browser sources).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import socket
import time
import uuid
from collections import deque
from importlib import resources
from typing import Any

import numpy as np
import structlog
from aiohttp import web

from adapters.events import ChatMessage, Platform, Role
from bot import outcomes
from bot.config import WebConfig
from bot.control import Reply
from bot.metrics import CONTENT_TYPE, Metrics
from bot.policy import Drop, SpeakableItem
from engine.audio import SAMPLE_RATE
from engine.config import VOICE_NAME

log = structlog.get_logger()

MAX_BODY = 64 * 1024
MAX_SAY_CHARS = 1000
RECENT_EVENTS = 50
COOKIE = "ishowtts_token"
#: How often pages get a fresh snapshot over server-sent events.
PUSH_INTERVAL_S = 0.25

BOT_KEY: web.AppKey[Any] = web.AppKey("bot", object)
SPEAKER_KEY: web.AppKey[Any] = web.AppKey("speaker", object)
ENGINE_KEY: web.AppKey[Any] = web.AppKey("engine", object)
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
FEED_KEY: web.AppKey[Any] = web.AppKey("feed", object)
#: Set when the server shuts down: long-lived responses (the event stream) end then.
STOPPING_KEY: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
#: Seconds other requests get to finish at shutdown before they are cancelled.
SHUTDOWN_TIMEOUT_S = 2.0


class Feed:
    """The last terminal events, numbered, for the panel's list and live updates."""

    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.seq = 0
        outcomes.add_listener(self._on_outcome)

    def close(self) -> None:
        outcomes.remove_listener(self._on_outcome)

    def _on_outcome(self, event: str, message: ChatMessage, fields: dict[str, Any]) -> None:
        self.seq += 1
        self.events.append(
            {
                "seq": self.seq,
                "event": event,
                "id": f"{message.platform.value}:{message.message_id}",
                "user": message.user_name,
                "text": message.text[:200],
                "reason": fields.get("reason"),
                "voice": fields.get("voice"),
                "at": time.time(),
            }
        )

    def since(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["seq"] > seq]


def create_app(
    config: WebConfig, bot: Any, speaker: Any = None, engine: Any = None
) -> web.Application:
    token = config.token.get_secret_value()
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors, _auth(token)])
    app[BOT_KEY] = bot
    app[SPEAKER_KEY] = speaker
    app[ENGINE_KEY] = engine
    app[METRICS_KEY] = Metrics(bot.queue, bot.control, engine, bot.lag)
    app[FEED_KEY] = Feed()
    app[STOPPING_KEY] = asyncio.Event()

    async def shutdown(app: web.Application) -> None:
        app[STOPPING_KEY].set()

    async def cleanup(app: web.Application) -> None:
        app[METRICS_KEY].close()
        app[FEED_KEY].close()

    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    app.add_routes(
        [
            web.get("/", _page("panel.html")),
            web.get("/overlay", _page("overlay.html")),
            web.get("/login", _login_form),
            web.post("/login", _login(token)),
            web.get("/metrics", _metrics),
            web.get("/api/status", _status),
            web.get("/api/queue", _queue),
            web.delete("/api/queue/{id}", _remove),
            web.get("/api/events", _events),
            web.post("/api/skip", _action("skip")),
            web.post("/api/pause", _action("pause")),
            web.post("/api/resume", _action("resume")),
            web.post("/api/clear", _action("clear")),
            web.post("/api/voice", _voice),
            web.post("/api/mute", _mute),
            web.post("/api/volume", _volume),
            web.post("/api/say", _say),
            web.post("/api/synthesize", _synthesize),
        ]
    )
    return app


async def serve(
    config: WebConfig, app: web.Application, sock: socket.socket | None = None
) -> web.AppRunner:
    """Serve `app` on `sock` (bound early by bot.instance), else on the configured port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site: web.BaseSite = (
        web.SockSite(runner, sock)
        if sock is not None
        else web.TCPSite(runner, config.host, config.port)
    )
    await site.start()
    log.info("web.started", url=f"http://{config.host}:{config.port}/")
    return runner


# middleware --------------------------------------------------------------------
@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400 and not exc.text:
            return web.json_response({"error": exc.reason}, status=exc.status)
        raise


def _auth(token: str) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if not token or request.path == "/login":
            response: web.StreamResponse = await handler(request)
            return response
        given = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:]
        given = given or request.cookies.get(COOKIE, "") or request.query.get("token", "")
        if given and hmac.compare_digest(given.encode(), token.encode()):
            response = await handler(request)
            return response
        if request.method == "GET" and not request.path.startswith(("/api/", "/metrics")):
            raise web.HTTPFound("/login")
        return web.json_response({"error": "token required"}, status=401)

    return check


# pages -------------------------------------------------------------------------------
def _page(name: str) -> Any:
    html = resources.files("bot").joinpath("static", name).read_text(encoding="utf-8")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    return page


async def _login_form(_: web.Request) -> web.Response:
    return web.Response(
        content_type="text/html",
        text=(
            "<!doctype html><title>iShowTTS login</title>"
            "<form method=post><label>Token <input name=token type=password autofocus></label>"
            "<button>Open panel</button></form>"
        ),
    )


def _login(token: str) -> Any:
    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token", ""))
        if not token or hmac.compare_digest(given.encode(), token.encode()):
            response = web.HTTPFound("/")
            response.set_cookie(COOKIE, given, httponly=True, samesite="Strict")
            raise response
        return web.Response(status=401, text="wrong token", content_type="text/plain")

    return login


# API ----------------------------------------------------------------------------------------
async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # over MAX_BODY raises 413
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not valid JSON"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


def _bad(message: str, status: int = 400, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _reply(reply: Reply) -> web.Response:
    return web.json_response({"ok": reply.ok, "text": reply.text})


def _snapshot(request: web.Request) -> dict[str, Any]:
    bot = request.app[BOT_KEY]
    speaker = request.app[SPEAKER_KEY]
    control = bot.control
    return {
        "now_playing": speaker.now_playing if speaker is not None else None,
        "paused": control.paused,
        "volume": control.volume,
        "voice": control.voice,
        "voices": bot.voices.names(),
        "mode": control.policy_state.read_mode,
        "queue": len(bot.queue),
        "muted": control.muted_list(),
        "connections": {p.value: up for p, up in control.connections.items()},
    }


async def _status(request: web.Request) -> web.Response:
    return web.json_response(_snapshot(request))


async def _queue(request: web.Request) -> web.Response:
    now = time.monotonic()
    items = [
        {
            "id": f"{i.message.platform.value}:{i.message.message_id}",
            "platform": i.message.platform.value,
            "user": i.message.user_name,
            "text": i.text,
            "priority": round(i.priority, 3),
            "age_s": round(now - i.message.received, 1),
        }
        for i in request.app[BOT_KEY].queue.snapshot()
    ]
    return web.json_response(items)


async def _remove(request: web.Request) -> web.Response:
    reply = request.app[BOT_KEY].control.remove_pending(request.match_info["id"])
    if not reply.ok:
        return _bad(reply.text, status=404)
    return _reply(reply)


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a status snapshot plus new terminal events, continuously."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    feed = request.app[FEED_KEY]
    stopping = request.app[STOPPING_KEY]
    seq = max(0, feed.seq - RECENT_EVENTS)
    try:
        while not stopping.is_set():
            new = feed.since(seq)
            if new:
                seq = new[-1]["seq"]
            payload = json.dumps({"status": _snapshot(request), "events": new})
            await response.write(f"data: {payload}\n\n".encode())
            # The stream ends when the bot stops, so an open page never holds up the exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PUSH_INTERVAL_S)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def _action(name: str) -> Any:
    async def act(request: web.Request) -> web.Response:
        control = request.app[BOT_KEY].control
        reply: Reply = getattr(control, name)()
        return _reply(reply)

    return act


async def _voice(request: web.Request) -> web.Response:
    body = await _json_body(request)
    voice = body.get("voice")
    if not isinstance(voice, str):
        return _bad("voice must be a string")
    bot = request.app[BOT_KEY]
    if voice not in bot.voices.names():
        return _bad(f"unknown voice {voice!r}", status=404, voices=bot.voices.names())
    return _reply(bot.control.set_voice(voice))


async def _mute(request: web.Request) -> web.Response:
    body = await _json_body(request)
    user, muted = body.get("user"), body.get("muted", True)
    if not isinstance(user, str) or not user.strip() or not isinstance(muted, bool):
        return _bad('expected {"user": NAME, "muted": true|false}')
    control = request.app[BOT_KEY].control
    return _reply(control.mute(user) if muted else control.unmute(user))


async def _volume(request: web.Request) -> web.Response:
    body = await _json_body(request)
    volume = body.get("volume")
    if isinstance(volume, bool) or not isinstance(volume, int) or not 0 <= volume <= 100:
        return _bad("volume must be a whole number 0-100")
    return _reply(request.app[BOT_KEY].control.set_volume(volume))


def _say_args(request: web.Request, body: dict[str, Any]) -> tuple[str, str] | web.Response:
    text, voice = body.get("text"), body.get("voice")
    if not isinstance(text, str) or not text.strip():
        return _bad("text must be a non-empty string")
    if len(text) > MAX_SAY_CHARS:
        return _bad(f"text longer than {MAX_SAY_CHARS} characters")
    bot = request.app[BOT_KEY]
    if voice is None:
        voice = bot.control.voice
    if (
        not isinstance(voice, str)
        or not VOICE_NAME.fullmatch(voice)
        or voice not in bot.voices.names()
    ):
        return _bad(f"unknown voice {voice!r}", status=404, voices=bot.voices.names())
    return text, voice


async def _say(request: web.Request) -> web.Response:
    """The streamer's own line: read at broadcaster priority, as typed, no announcement."""
    args = _say_args(request, await _json_body(request))
    if isinstance(args, web.Response):
        return args
    text, voice = args
    bot = request.app[BOT_KEY]
    message = ChatMessage(
        platform=Platform.LOCAL,
        channel="panel",
        message_id=uuid.uuid4().hex,
        user_id="streamer",
        user_name="streamer",
        text=text,
        roles=frozenset({Role.BROADCASTER}),
    )
    cleaned = bot.policy.clean_text(text)
    if isinstance(cleaned, Drop) or not cleaned:
        reason = cleaned.reason if isinstance(cleaned, Drop) else "empty"
        outcomes.log_outcome(outcomes.FILTERED, message, reason=reason)
        return _bad(f"nothing to say after filtering ({reason})")
    item = SpeakableItem(
        message=message,
        text=cleaned,
        spoken=cleaned,
        spoken_plain=cleaned,
        priority=float(bot.config.policy.priorities.privileged),
        voice=voice,
    )
    if not bot.queue.push(item):
        return _bad("the queue is full", status=503)
    return web.json_response({"ok": True, "id": f"local:{message.message_id}"})


async def _synthesize(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    if engine is None:
        return _bad("the speech engine is not running", status=503)
    args = _say_args(request, await _json_body(request))
    if isinstance(args, web.Response):
        return args
    text, voice = args
    chunks = [chunk async for chunk in engine.stream(text, voice)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    buffer = io.BytesIO()

    def encode() -> None:
        import soundfile as sf

        sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")

    await asyncio.to_thread(encode)
    return web.Response(body=buffer.getvalue(), content_type="audio/wav")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
