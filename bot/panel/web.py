"""The streamer's control panel, its JSON API, /metrics and the OBS overlay.

Every action goes through `bot.control`, the same code the chat commands use.

Only the panel's own pages may drive the bot, token or not: a request must name
this machine (the Host header: DNS rebinding is refused), must not come from
another site's page (fetch metadata), and a request that changes anything must
carry this panel's Origin, unless it proves itself with the token in an
`Authorization: Bearer` header, which no other page can send. JSON endpoints
take `application/json` only.

When a token is configured, every route but the login form needs it (as a
Bearer header, the session cookie the login form sets, or `?token=`). The OBS
overlay takes a read-only token of its own, derived from the panel's
(`overlay_token`): its URL shows captions (and plays the speech, bot/panel/audio_feed.py)
and nothing else. An overlay refused for any reason is an empty transparent page,
never a login form or an error text: OBS would put either on air. Wrong tokens are
counted per client address; after a few, that address waits longer each time.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import io
import ipaddress
import json
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import hdrs, web

from adapters.events import ChatMessage
from bot.audio.speaker import PreviewBusy
from bot.chat import outcomes
from bot.chat.router import QUEUE_FULL
from bot.config import WebConfig
from bot.control import READ_MODES, UNUSABLE_VOICE, Listing, Reply
from bot.panel import audio_feed
from bot.panel.metrics import CONTENT_TYPE, Metrics
from bot.panel.parts import PARTS_KEY, Parts
from bot.remote_engine import EngineUnavailable
from engine.access import ThrottledWarnings, WrongTokens
from engine.audio import SAMPLE_RATE
from engine.config import VOICE_NAME
from engine.voices import VoiceError
from engine.worker import SynthesisError, SynthesisStalled

if TYPE_CHECKING:  # the app assembles these; the panel only uses them
    from bot.app import Bot
    from bot.audio.browser import Broadcast
    from bot.audio.speaker import Speaker
    from bot.remote_engine import RemoteEngine
    from engine.synth import Engine

log = structlog.get_logger()

MAX_BODY = 64 * 1024
MAX_SAY_CHARS = 1000
RECENT_EVENTS = 50
COOKIE = "ishowtts_token"
#: How often pages get a fresh snapshot over server-sent events.
PUSH_INTERVAL_S = 0.25

BOT_KEY: web.AppKey[Bot] = web.AppKey("bot")
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
FEED_KEY: web.AppKey[Feed] = web.AppKey("feed")
NAMES_KEY: web.AppKey[ShownNames] = web.AppKey("names")
#: Set when the server shuts down: long-lived responses (the event stream) end then.
STOPPING_KEY: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
#: Seconds other requests get to finish at shutdown before they are cancelled.
SHUTDOWN_TIMEOUT_S = 2.0
#: Only one preview is made at a time; a second one meanwhile is refused (429).

#: A repeated refusal is logged at most this often (a hostile page can send many).
REFUSAL_LOG_EVERY_S = 10.0

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Responses without a policy of their own (JSON, the login form) load nothing.
DEFAULT_CSP = "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::[0-9]{1,5})?")
#: What a refused overlay shows: nothing, on a transparent page.
REFUSED_OVERLAY = (
    '<!doctype html><html><head><meta charset="utf-8"><title>iShowTTS overlay</title>'
    "<style>html, body { background: transparent; margin: 0; }</style></head><body></body></html>"
)
#: Terminal events the overlay is told of (ids only): whether the line it shows
#: was read to the end (the caption lingers) or cut (it goes at once).
OVERLAY_EVENTS = frozenset({outcomes.SPOKEN, outcomes.SKIPPED, outcomes.RETRACTED})


def overlay_token(token: str) -> str:
    """The overlay's read-only token, derived from the panel's: the URL pasted into
    OBS (and seen on screen while setting it up) cannot control the bot."""
    if not token:
        return ""
    return hmac.new(token.encode(), b"ishowtts overlay", hashlib.sha256).hexdigest()[:32]


THROTTLE_KEY: web.AppKey[WrongTokens] = web.AppKey("throttle", WrongTokens)


def attach(
    app: web.Application,
    speaker: Speaker,
    engine: Engine | RemoteEngine,
    audio: Broadcast | None = None,
) -> None:
    """The speaker, the engine and the browser audio, once warm: the panel goes
    from starting to live."""
    parts = app[PARTS_KEY]
    parts.speaker, parts.engine, parts.audio = speaker, engine, audio
    app[METRICS_KEY].attach_engine(engine)


def set_progress(app: web.Application, text: str) -> None:
    """The start-up line the panel shows while starting (one attribute: any thread)."""
    app[PARTS_KEY].progress = text


#: Ends whose text the history does not keep.
_TEXT_KEPT_FROM = frozenset({outcomes.FILTERED, outcomes.RETRACTED})


class Feed:
    """The last terminal events, numbered, for the panel's list and live updates.

    Names are shown cleaned (`clean_name`), and what the filters dropped is not
    shown at all: a panel captured on stream must not put it on air."""

    def __init__(self, clean_name: Callable[[str], str] = lambda name: name) -> None:
        self._clean_name = clean_name
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.seq = 0
        self._changed = asyncio.Event()
        #: Why the last line on air failed in the engine (a stall, an error), until
        #: one is spoken again; None while speech works.
        self.engine_trouble: str | None = None
        outcomes.add_listener(self._on_outcome)

    async def changed(self) -> None:
        """Until the next terminal event (the pages are told at once: a skipped
        line leaves the overlay then, not at the next push)."""
        await self._changed.wait()

    def close(self) -> None:
        outcomes.remove_listener(self._on_outcome)

    def _on_outcome(self, event: str, message: ChatMessage, fields: dict[str, Any]) -> None:
        if event == outcomes.SPOKEN:
            self.engine_trouble = None
        elif event == outcomes.SKIPPED and fields.get("reason") in ENGINE_TROUBLE:
            self.engine_trouble = ENGINE_TROUBLE[fields["reason"]]
        self.seq += 1
        self.events.append(
            {
                "seq": self.seq,
                "event": event,
                "id": f"{message.platform.value}:{message.message_id}",
                "user": self._clean_name(message.user_name),
                # Neither what the filters dropped nor what a moderator deleted is
                # shown (or offered to read again): a panel on stream must not air it.
                "text": "" if event in _TEXT_KEPT_FROM else message.text[:200],
                # What was said (template, clean-up, pacing): beside the original.
                "spoken": str(fields.get("text") or "")[:400] if event == outcomes.SPOKEN else "",
                "reason": fields.get("reason"),
                "voice": fields.get("voice"),
                "at": time.time(),
            }
        )
        self._changed.set()
        self._changed = asyncio.Event()

    def since(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["seq"] > seq]

    def find(self, seq: int) -> dict[str, Any] | None:
        return next((e for e in self.events if e["seq"] == seq), None)


#: What the panel says when the last line on air failed in the engine.
ENGINE_TROUBLE = {
    "engine_stalled": (
        "the voice engine stalled on the last line (it made no progress and was skipped); "
        "it was restarted: the next line shows whether it recovered"
    ),
    "engine_error": (
        "the voice engine failed on the last line (it was skipped): see engine.error in the log"
    ),
}


def create_app(
    config: WebConfig,
    bot: Bot,
    speaker: Speaker | None = None,
    engine: Engine | RemoteEngine | None = None,
    audio: Broadcast | None = None,
) -> web.Application:
    """The app; `audio`: the player's broadcast, for the overlay's `?audio=1`."""
    token = config.token.get_secret_value()
    throttle = WrongTokens()
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[_errors, _guard(config, token, throttle)]
    )
    app[BOT_KEY] = bot
    app[PARTS_KEY] = Parts(speaker, engine, audio)
    app[METRICS_KEY] = Metrics(bot.queue, bot.control, engine, bot.lag)
    app[FEED_KEY] = Feed(lambda name: str(bot.policy.clean_name(name).shown))
    app[NAMES_KEY] = ShownNames(bot)
    app[STOPPING_KEY] = asyncio.Event()
    app[THROTTLE_KEY] = throttle

    async def shutdown(app: web.Application) -> None:
        app[STOPPING_KEY].set()
        if (audio := app[PARTS_KEY].audio) is not None:
            audio.close()  # open audio sockets end, so none holds up the exit

    async def cleanup(app: web.Application) -> None:
        app[METRICS_KEY].close()
        app[FEED_KEY].close()

    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    app.add_routes(
        [
            web.get("/", _page("panel.html")),
            web.get("/overlay", _page("overlay.html")),
            web.get("/login", _login_form),
            web.post("/login", _login(token, throttle)),
            web.get("/api/overlay", _overlay_url(token)),
            web.get("/metrics", _metrics),
            web.get("/api/status", _status),
            web.get("/api/queue", _queue),
            web.delete("/api/queue/{id}", _remove),
            web.get("/api/events", functools.partial(_events, everything=True)),
            web.get("/api/audio", audio_feed.audio_socket),
            web.get(audio_feed.WORKLET_PATH, audio_feed.worklet()),
            web.post("/api/skip", _action("skip")),
            web.post("/api/pause", _action("pause")),
            web.post("/api/resume", _action("resume")),
            web.post("/api/clear", _action("clear")),
            web.post("/api/voice", _voice),
            web.post("/api/mute", _mute),
            web.post("/api/volume", _volume),
            web.post("/api/say", _say),
            web.post("/api/synthesize", _synthesize),
            # The streamer's side of what moderators do from chat, and more.
            web.post("/api/unmute", _unmute),
            web.post("/api/nick", _nick),
            web.post("/api/uservoice", _user_voice),
            web.post("/api/mode", _mode),
            web.post("/api/blocked", _blocked),
            web.post("/api/queue/{id}/next", _play_next),
            web.post("/api/replay/{seq}", _replay),
        ]
    )
    return app


async def serve(
    config: WebConfig, app: web.Application, sock: socket.socket | None = None
) -> web.AppRunner:
    """Serve `app` on `sock` (bound early by bot.instance), else on the configured port."""
    # Handlers are cancelled when their client goes away: a preview nobody waits
    # for any more stops sampling (its engine job is cancelled with it).
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handler_cancellation=True
    )
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


def _guard(config: WebConfig, token: str, throttle: WrongTokens) -> Any:
    """Host, site, token, origin and content type, checked before any handler runs."""
    read_only = overlay_token(token)
    refusals = _Refusals()
    overlay_routes: dict[tuple[str, str], Any] = {
        ("GET", "/overlay"): _page("overlay.html"),
        ("GET", "/api/events"): functools.partial(_events, everything=False),
        ("GET", "/api/audio"): audio_feed.audio_socket,
        ("GET", audio_feed.WORKLET_PATH): audio_feed.worklet(),
    }

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST, "")
        if not _allowed_host(config, host):
            if _is_overlay_page(request):
                return refusals.overlay(request, 421, "host")
            return refusals.refuse(
                request,
                421,
                "host",
                f"this panel does not answer to host {host[:100]!r}: open it by its address, "
                "or add the name to web.allowed_hosts",
            )
        if _from_another_site(request):
            if _is_overlay_page(request):
                return refusals.overlay(request, 403, "cross_site")
            return refusals.refuse(request, 403, "cross_site", "requests from other sites refused")
        # A WebSocket is no simple request either: browsers open one from any site.
        unsafe = request.method not in SAFE_METHODS or _is_websocket(request)
        checked = await _check_token(request, token, read_only, throttle, refusals)
        if isinstance(checked, web.StreamResponse):
            return checked
        scope, by_header = checked
        if unsafe and not by_header and not _same_origin(request):
            return refusals.refuse(
                request,
                403,
                "origin",
                "a change must come from this panel's own page (Origin), or carry the "
                "token as Authorization: Bearer",
            )
        # A body is JSON or nothing (an empty one may come with any type).
        if (
            unsafe
            and request.path.startswith("/api/")
            and request.body_exists
            and not _is_json(request)
        ):
            raise _json_error(web.HTTPUnsupportedMediaType, _JSON_ONLY)
        if scope == "overlay":
            handler = overlay_routes.get((request.method, request.path))
            if handler is None:
                return _bad("the overlay token is read-only: it shows captions only", 403)
        response: web.StreamResponse = await handler(request)
        return response

    return guard


async def _check_token(
    request: web.Request,
    token: str,
    read_only: str,
    throttle: WrongTokens,
    refusals: _Refusals,
) -> tuple[str, bool] | web.StreamResponse:
    """("full" or "overlay", whether the token came in the Authorization header),
    or the response for a request without a right token (for the overlay page,
    an empty transparent one)."""
    if not token:
        return "full", False
    if request.path == "/login":
        return "none", False
    page = request.method == "GET" and not request.path.startswith(("/api/", "/metrics"))
    overlay = _is_overlay_page(request)
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        # A link followed here from another site's page (all else from there is
        # refused already): its tokens are never read, so such a page can neither
        # guess nor lock this address (the streamer's browser, OBS) out.
        if overlay:
            return refusals.overlay(request, 403, "cross_site")
        raise web.HTTPFound("/login")
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    given, via = "", ""
    for value, source in (
        (header[7:] if header.startswith("Bearer ") else "", "header"),
        (request.cookies.get(COOKIE, ""), "cookie"),
        (request.query.get("token", ""), "query"),
    ):
        if value:
            given, via = value, source
            break
    if not given:
        if overlay:
            return refusals.overlay(request, 401, "no_token")
        if page:
            raise web.HTTPFound("/login")
        return _bad("token required", 401)
    address = request.remote or "unknown"
    wait = throttle.retry_after(address)
    if wait:
        if overlay:
            return refusals.overlay(request, 429, "locked_out")
        return _locked_out(request, wait)
    if _equal(given, token):
        throttle.succeeded(address)
        return "full", via == "header"
    if _equal(given, read_only):
        return "overlay", False
    failures, lockout = throttle.failed(address)
    log.warning("web.login_failed", client=address, via=via, failures=failures, locked_s=lockout)
    if overlay:
        return refusals.overlay(request, 401, "wrong_token")
    response = web.HTTPFound("/login") if page else _bad("wrong token", 401)
    if via == "cookie":  # a stale session is counted once, not on every request
        response.del_cookie(COOKIE)
    if isinstance(response, web.HTTPFound):
        raise response
    return response


def _locked_out(request: web.Request, wait: float) -> web.Response:
    retry = {hdrs.RETRY_AFTER: str(int(wait) + 1)}
    message = f"too many wrong tokens from this address: try again in {int(wait) + 1} s"
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=429, headers=retry)
    return web.Response(status=429, text=message, content_type="text/plain", headers=retry)


def _equal(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _allowed_host(config: WebConfig, value: str) -> bool:
    """A name in web.allowed_hosts, "localhost", or an address (one of this machine's
    loopback addresses where the panel listens on loopback). Other names are refused:
    anyone can point one at 127.0.0.1 and serve a page under it (DNS rebinding)."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    name = (match.group(1) or match.group(2)).lower().removesuffix(".")
    if name == "localhost" or name in config.allowed_hosts:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or not config.on_loopback


def _from_another_site(request: web.Request) -> bool:
    """Sent by a browser for another site's page (not a link followed to this panel):
    such a request could only be an attack, or a token guess the attacker times."""
    site = request.headers.get("Sec-Fetch-Site")
    if site not in ("cross-site", "same-site"):  # same-site: another port of this host
        return False
    navigation = request.headers.get("Sec-Fetch-Mode") == "navigate"
    return not (navigation and request.method == "GET")


def _is_overlay_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and request.path == "/overlay"


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get(hdrs.ORIGIN, "").lower()
    host = request.headers.get(hdrs.HOST, "").lower()
    return bool(origin) and origin in (f"http://{host}", f"https://{host}")


class _Refusals:
    """Refuses a request, logging `web.refused` at most every `REFUSAL_LOG_EVERY_S` per
    reason, with how many went unlogged since."""

    def __init__(self) -> None:
        self._warnings = ThrottledWarnings(REFUSAL_LOG_EVERY_S)

    def refuse(self, request: web.Request, status: int, reason: str, message: str) -> web.Response:
        self._log("web.refused", request, reason)
        if request.path.startswith("/api/"):
            return _bad(message, status)
        return web.Response(status=status, text=message, content_type="text/plain")

    def overlay(self, request: web.Request, status: int, reason: str) -> web.Response:
        """The overlay refused: an empty transparent page (OBS shows whatever it gets),
        logged as `web.overlay_refused` with the reason and never the token."""
        self._log("web.overlay_refused", request, reason)
        return web.Response(
            status=status,
            text=REFUSED_OVERLAY,
            content_type="text/html",
            headers={
                "Content-Security-Policy": page_policy(REFUSED_OVERLAY),
                "Cache-Control": "no-store",
            },
        )

    def _log(self, event: str, request: web.Request, reason: str) -> None:
        self._warnings.warn(
            f"{event}:{reason}",
            event,
            reason=reason,
            method=request.method,
            path=request.path[:100],
            client=request.remote,
            host=request.headers.get(hdrs.HOST, "")[:100],
            origin=request.headers.get(hdrs.ORIGIN, "")[:100],
        )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """No page may frame ours or sniff our JSON into a script; links leak no token."""
    response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"


# pages -------------------------------------------------------------------------------
@functools.cache
def _page(name: str) -> Any:
    html = resources.files("bot.panel").joinpath("static", name).read_text(encoding="utf-8")
    # The overlay loads its audio worklet, a script of ours, by URL.
    policy = page_policy(html, own_scripts=name == "overlay.html")

    async def page(_: web.Request) -> web.Response:
        return web.Response(
            text=html, content_type="text/html", headers={"Content-Security-Policy": policy}
        )

    return page


def page_policy(html: str, own_scripts: bool = False) -> str:
    """The page's Content-Security-Policy: its own inline script and style, by hash
    (nothing else inline runs, whatever text a viewer manages to slip in), scripts
    served by the panel itself where `own_scripts` (the overlay's audio worklet),
    and audio from blob: URLs (the voice preview)."""

    def hashes(tag: str, *sources: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in bodies)
        return " ".join([*sources, *(f"'sha256-{d}'" for d in digests)]) or "'none'"

    scripts = hashes("script", *(["'self'"] if own_scripts else []))
    return (
        f"default-src 'self'; script-src {scripts}; style-src {hashes('style')}; "
        "media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


async def _login_form(_: web.Request) -> web.Response:
    return web.Response(
        content_type="text/html",
        text=(
            "<!doctype html><title>iShowTTS login</title>"
            "<form method=post><label>Token <input name=token type=password autofocus></label>"
            "<button>Open panel</button></form>"
        ),
    )


def _login(token: str, throttle: WrongTokens) -> Any:
    async def login(request: web.Request) -> web.Response:
        address = request.remote or "unknown"
        wait = throttle.retry_after(address)
        if wait:
            return _locked_out(request, wait)
        form = await request.post()
        given = str(form.get("token", ""))
        if not token or _equal(given, token):
            throttle.succeeded(address)
            response = web.HTTPFound("/")
            response.set_cookie(COOKIE, given, httponly=True, samesite="Strict")
            raise response
        failures, lockout = throttle.failed(address)
        log.warning(
            "web.login_failed", client=address, via="form", failures=failures, locked_s=lockout
        )
        return web.Response(status=401, text="wrong token", content_type="text/plain")

    return login


def _overlay_url(token: str) -> Any:
    """Where OBS should point its browser source: the overlay with its read-only
    token; `audio_url` also plays the speech in the page."""
    read_only = overlay_token(token)
    overlay = f"/overlay?token={read_only}" if token else "/overlay"
    with_audio = f"{overlay}{'&' if token else '?'}audio=1"

    async def url(_: web.Request) -> web.Response:
        return web.json_response({"url": overlay, "audio_url": with_audio})

    return url


# API ----------------------------------------------------------------------------------------
_JSON_ONLY = 'send the body as JSON, with "Content-Type: application/json"'


def _is_json(request: web.Request) -> bool:
    return request.content_type == "application/json"


def _json_error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not _is_json(request):  # a form or a no-cors fetch cannot send this type
        raise _json_error(web.HTTPUnsupportedMediaType, _JSON_ONLY)
    raw = await request.read()  # over MAX_BODY raises 413
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise _json_error(web.HTTPBadRequest, "body is nested too deeply") from None
    except ValueError:
        raise _json_error(web.HTTPBadRequest, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _json_error(web.HTTPBadRequest, "body must be a JSON object")
    return body


def _bad(message: str, status: int = 400, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _reply(reply: Reply) -> web.Response:
    return web.json_response({"ok": reply.ok, "text": reply.text})


def _snapshot(request: web.Request) -> dict[str, Any]:
    bot = request.app[BOT_KEY]
    parts = request.app[PARTS_KEY]
    control = bot.control
    state, detail = _state(request)
    checks = bot.voice_checks
    shown = request.app[NAMES_KEY]
    muted = control.muted_entries(MAX_LISTED)
    nicknames = control.nickname_entries(MAX_LISTED)
    user_voices = control.user_voice_entries(MAX_LISTED)
    return {
        "state": state,
        "detail": detail,
        "warnings": _voice_warnings(bot),
        "now_playing": _now_playing(request),
        "paused": control.paused,
        "volume": control.volume,
        "voice": control.voice,
        "voices": [{"name": c.name, "ok": c.ok, "reason": c.reason} for c in checks.checks],
        "voices_checked": checks.ready.is_set(),
        "mode": control.policy_state.read_mode,
        "modes": list(READ_MODES),
        "queue": len(bot.queue),
        "muted": shown.rows(muted),
        "nicknames": shown.rows(nicknames),
        "user_voices": shown.rows(user_voices),
        # How many there are: the lists above stop at MAX_LISTED.
        "totals": {
            "muted": muted.total,
            "nicknames": nicknames.total,
            "user_voices": user_voices.total,
        },
        "blocked_words": control.blocked_words[-MAX_LISTED:],
        "blocked_action": bot.config.policy.blocked_action,
        # Every platform the bot reads, connected or not (yet).
        "connections": {
            **{name: False for name in bot.adapters()},
            **{p.value: up for p, up in control.connections.items()},
        },
        "engine": {
            # "local", or an engine server's "up" / "unavailable" (engine.url).
            "state": parts.speaker.engine_state if parts.speaker is not None else None,
            "errors": getattr(parts.engine, "errors", 0),
            "stalls": getattr(parts.engine, "stalls", 0),
        },
        "rewards": [
            {"id": r.reward_id, "name": r.name, "example": r.example, "count": r.count}
            for r in control.policy_state.rewards.listed()
        ],
        "reward_map": [
            {
                "id": reward_id,
                "name": name,
                "read": rule.read,
                "voice": rule.voice,
                "template": rule.template,
                "priority": rule.priority,
            }
            for reward_id, (name, rule) in bot.policy.rewards.items()
        ],
    }


#: Rows of a per-user list the status carries (the newest first); the rest are counted.
MAX_LISTED = 100
#: Names kept cleaned for the lists, at most.
MAX_SHOWN_NAMES = 4096


class ShownNames:
    """Names from chat as the panel shows them (`clean_name`: the same rules as
    text), kept: the lists go out 4 times a second. Cleaned again once the
    blocked words change (a name with one is not shown)."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot
        self._words: list[str] | None = None
        self._shown: dict[str, str] = {}

    def rows(self, listing: Listing) -> list[dict[str, Any]]:
        """Per-user settings as rows: the key to act on, the name as shown, the
        value, and whether the panel may change it."""
        words = self._bot.control.blocked_words
        if words is not self._words or len(self._shown) > MAX_SHOWN_NAMES:
            self._words, self._shown = words, {}
        rows = []
        for e in listing.entries:
            name = self._shown.get(e.name)
            if name is None:
                name = self._shown[e.name] = self._bot.policy.clean_name(e.name).shown
            rows.append({"key": e.key, "name": name, "value": e.value, "editable": e.editable})
        return rows


def _voice_warnings(bot: Bot) -> list[str]:
    """Voices in use whose files are broken: the lines they would read are skipped."""
    problem = bot.voice_checks.problem
    warnings = []
    if (why := problem(bot.control.voice)) is not None:
        warnings.append(
            f"The current voice {bot.control.voice!r} cannot be used ({why}): pick another."
        )
    for name, rule in bot.policy.rewards.values():
        if rule.voice is not None and (why := problem(rule.voice)) is not None:
            warnings.append(
                f"Reward {name!r} reads in voice {rule.voice!r}, which cannot be used ({why}): "
                "its lines will be skipped until the voice is fixed."
            )
    return warnings


def _now_playing(request: web.Request) -> dict[str, object] | None:
    speaker = request.app[PARTS_KEY].speaker
    return speaker.now_playing if speaker is not None else None


def _state(request: web.Request) -> tuple[str, str]:
    """starting, unreachable (an engine server), stalled, paused or live; and the
    line that says more."""
    parts = request.app[PARTS_KEY]
    if parts.speaker is None:
        return "starting", parts.progress or "starting…"
    if parts.speaker.engine_state == "unavailable":
        return "unreachable", (
            "it is tried again by itself; queued lines wait for it (within their time to live)"
        )
    trouble = request.app[FEED_KEY].engine_trouble
    if trouble is not None:
        return "stalled", trouble
    if request.app[BOT_KEY].control.paused:
        return "paused", "paused: nothing is read until you resume (chat still queues)"
    return "live", ""


def _voice_names(bot: Bot) -> list[str]:
    """The voices there are (checked or not), from the last check once there is one."""
    checks = bot.voice_checks
    return [c.name for c in checks.checks] if checks.ready.is_set() else bot.voices.names()


async def _status(request: web.Request) -> web.Response:
    return web.json_response(_snapshot(request))


async def _queue(request: web.Request) -> web.Response:
    now = time.monotonic()
    items = [
        {
            "id": f"{i.message.platform.value}:{i.message.message_id}",
            "platform": i.message.platform.value,
            "user": i.user,
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


def _overlay_snapshot(request: web.Request, new: list[dict[str, Any]]) -> dict[str, Any]:
    """What the overlay is told: what is on air, whether paused, and which lines
    ended how (ids only)."""
    return {
        "status": {
            "now_playing": _now_playing(request),
            "paused": request.app[BOT_KEY].control.paused,
        },
        "events": [
            {"id": e["id"], "event": e["event"]} for e in new if e["event"] in OVERLAY_EVENTS
        ],
    }


async def _events(request: web.Request, everything: bool) -> web.StreamResponse:
    """Server-sent events: a status snapshot plus new terminal events, continuously;
    with the overlay's token (not `everything`), only what is on air now."""
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
            if everything:
                payload = json.dumps({"status": _snapshot(request), "events": new})
            else:
                payload = json.dumps(_overlay_snapshot(request, new))
            await response.write(f"data: {payload}\n\n".encode())
            # The stream ends when the bot stops, so an open page never holds up the exit.
            waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(feed.changed())]
            try:
                await asyncio.wait(
                    waits, timeout=PUSH_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for wait in waits:
                    wait.cancel()
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
    names = _voice_names(bot)
    if voice not in names:
        return _bad(f"unknown voice {voice!r}", status=404, voices=names)
    reply = bot.control.set_voice(voice)
    if not reply.ok:  # its files are broken
        return _bad(reply.text)
    return _reply(reply)


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
    names = _voice_names(bot)
    if not isinstance(voice, str) or not VOICE_NAME.fullmatch(voice) or voice not in names:
        return _bad(f"unknown voice {voice!r}", status=404, voices=names)
    problem = bot.voice_checks.problem(voice)
    if problem is not None:
        return _bad(f"{UNUSABLE_VOICE} {voice!r}: {problem}")
    return text, voice


async def _say(request: web.Request) -> web.Response:
    """The streamer's own line, through the router like chat (`Router.say`)."""
    args = _say_args(request, await _json_body(request))
    if isinstance(args, web.Response):
        return args
    said = request.app[BOT_KEY].router.say(*args)
    if not said.ok:
        return _bad(said.text, status=503 if said.text == QUEUE_FULL else 400)
    return web.json_response({"ok": True, "id": said.text})


async def _synthesize(request: web.Request) -> web.StreamResponse:
    """A preview as WAV, made by the speaker like speech (after what is on air)."""
    speaker = request.app[PARTS_KEY].speaker
    if speaker is None:
        return _bad("the speech engine is not running yet (still starting)", status=503)
    args = _say_args(request, await _json_body(request))
    if isinstance(args, web.Response):
        return args
    try:
        # Cancelled with the handler when the client leaves (see `serve`).
        audio = await speaker.preview(*args)
    except PreviewBusy:
        return web.json_response(
            {"error": "a preview is being made: try again when it has finished"},
            status=429,
            headers={hdrs.RETRY_AFTER: "1"},
        )
    except EngineUnavailable as exc:  # engine.url: the engine server is out of reach
        return _bad(str(exc), status=503)
    except SynthesisStalled as exc:
        return _bad(f"the voice engine stalled making the preview: {exc}", status=503)
    except SynthesisError as exc:  # a bad voice file, a refusal by the engine server
        if isinstance(exc.__cause__, VoiceError):  # broken since the last check
            return _bad(str(exc.__cause__), status=422)
        return _bad(f"the voice engine failed making the preview: {exc}", status=502)
    buffer = io.BytesIO()

    def encode() -> None:
        import soundfile as sf

        sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")

    await asyncio.to_thread(encode)
    return web.Response(body=buffer.getvalue(), content_type="audio/wav")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


# The streamer's side of what moderators do from chat ------------------------------
MAX_KEY_CHARS = 200
MAX_NAME_CHARS = 100
MAX_NICK_CHARS = 100


def _done(reply: Reply, status: int = 400) -> web.Response:
    """Control's answer: 200 when it was done, else `status` with why not."""
    return _reply(reply) if reply.ok else _bad(reply.text, status=status)


def _text_field(body: dict[str, Any], name: str, limit: int) -> str | web.Response:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        return _bad(f"{name} must be a non-empty string")
    if len(value) > limit:
        return _bad(f"{name} longer than {limit} characters")
    return value


def _whom(body: dict[str, Any]) -> tuple[str, str] | web.Response:
    """("key", an entry's key) or ("user", a name as typed in chat), from the body."""
    if ("key" in body) == ("user" in body):
        return _bad('give either "key" (a row of the list) or "user" (a name seen in chat)')
    field, limit = ("key", MAX_KEY_CHARS) if "key" in body else ("user", MAX_NAME_CHARS)
    value = _text_field(body, field, limit)
    return value if isinstance(value, web.Response) else (field, value)


async def _unmute(request: web.Request) -> web.Response:
    key = _text_field(await _json_body(request), "key", MAX_KEY_CHARS)
    if isinstance(key, web.Response):
        return key
    return _done(request.app[BOT_KEY].control.unmute_key(key))


async def _nick(request: web.Request) -> web.Response:
    """A nickname for a user ("nick": "" removes it)."""
    body = await _json_body(request)
    whom, nick = _whom(body), body.get("nick")
    if isinstance(whom, web.Response):
        return whom
    if not isinstance(nick, str) or len(nick) > MAX_NICK_CHARS:
        return _bad(f"nick must be a string of at most {MAX_NICK_CHARS} characters")
    control = request.app[BOT_KEY].control
    field, value = whom
    if field == "key":
        return _done(control.set_nick_key(value, nick))
    return _done(control.set_nick(value, nick))


async def _user_voice(request: web.Request) -> web.Response:
    """A voice for a user ("voice": null: back to the current voice)."""
    body = await _json_body(request)
    whom, voice = _whom(body), body.get("voice")
    if isinstance(whom, web.Response):
        return whom
    if voice is not None and (not isinstance(voice, str) or not VOICE_NAME.fullmatch(voice)):
        return _bad("voice must be a voice's name, or null")
    control = request.app[BOT_KEY].control
    field, value = whom
    if field == "key":
        return _done(control.set_user_voice_key(value, voice))
    return _done(control.set_user_voice(value, voice))


async def _mode(request: web.Request) -> web.Response:
    mode = (await _json_body(request)).get("mode")
    if not isinstance(mode, str):
        return _bad(f"mode must be one of {', '.join(READ_MODES)}")
    return _done(request.app[BOT_KEY].control.set_mode(mode))


async def _blocked(request: web.Request) -> web.Response:
    """Add ("blocked": true, the default) or remove a blocked word, until the bot stops."""
    body = await _json_body(request)
    word, blocked = body.get("word"), body.get("blocked", True)
    if not isinstance(word, str) or not isinstance(blocked, bool):
        return _bad('expected {"word": WORD, "blocked": true|false}')
    control = request.app[BOT_KEY].control
    return _done(control.block_word(word) if blocked else control.unblock_word(word))


async def _play_next(request: web.Request) -> web.Response:
    return _done(request.app[BOT_KEY].control.play_next(request.match_info["id"]), status=404)


async def _replay(request: web.Request) -> web.Response:
    """A line from the history read again, as the streamer's own, in the voice it had."""
    raw = request.match_info["seq"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        return _bad("the history line is a number")
    event = request.app[FEED_KEY].find(int(raw))
    if event is None:
        return _bad(f"no line {raw} in the history (it keeps the last {RECENT_EVENTS})", 404)
    text = event["spoken"] or event["text"]
    if not text:
        return _bad("that line has no text to read again (filtered lines keep none)")
    bot = request.app[BOT_KEY]
    voice = event["voice"]
    if voice not in _voice_names(bot) or bot.voice_checks.problem(voice) is not None:
        voice = bot.control.voice
    said = bot.router.say(text[:MAX_SAY_CHARS], voice, as_said=bool(event["spoken"]))
    if not said.ok:
        return _bad(said.text, status=503 if said.text == QUEUE_FULL else 400)
    return web.json_response({"ok": True, "id": said.text})
