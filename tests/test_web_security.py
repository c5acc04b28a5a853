"""The panel against requests it must refuse: foreign hosts (DNS rebinding), other
sites' pages (forged forms and no-cors fetches), non-JSON bodies, hostile JSON,
the overlay's read-only token, token guessing; and previews that must not hold up
speech on air. aiohttp's test client and a real server on a loopback socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from bot.app import Bot
from bot.audio.player import Player
from bot.audio.speaker import Speaker
from bot.config import WebConfig
from bot.panel.web import (
    MAX_SAY_CHARS,
    REFUSED_OVERLAY,
    THROTTLE_KEY,
    create_app,
    overlay_token,
    page_policy,
    serve,
)
from engine.checkpoints import ModelFiles
from engine.synth import Engine
from tests.factories import chat
from tests.test_web import make_bot

TOKEN = "s3cret"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def open_panel(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Bot]]:
    """The default: loopback, no token."""
    bot = make_bot(tmp_path)
    async with TestClient(TestServer(create_app(WebConfig(), bot))) as c:
        yield c, bot


@pytest.fixture
async def locked_panel(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Bot]]:
    bot = make_bot(tmp_path)
    async with TestClient(TestServer(create_app(WebConfig(token=TOKEN), bot))) as c:
        yield c, bot


def own_origin(c: TestClient[Any, Any]) -> dict[str, str]:
    return {"Origin": f"http://{c.host}:{c.port}"}


def untouched(bot: Bot) -> None:
    """Nothing an attacker tried took effect."""
    assert not bot.control.paused
    assert bot.control.volume != 100
    assert not bot.control.policy_state.muted
    assert len(bot.queue) == 0


async def test_a_host_name_other_than_this_machines_is_refused(open_panel: Any) -> None:
    c, _ = open_panel
    for path in ("/", "/overlay", "/api/status", "/api/queue", "/api/events", "/metrics"):
        for host in ("evil.example", f"evil.example:{c.port}", "127.0.0.1.evil.example", ""):
            r = await c.get(path, headers={"Host": host})
            assert r.status == 421, (path, host)
            assert "evil" not in r.headers.get("Access-Control-Allow-Origin", "")
    for host in (f"127.0.0.1:{c.port}", f"localhost:{c.port}", f"[::1]:{c.port}", "LOCALHOST"):
        assert (await c.get("/api/status", headers={"Host": host})).status == 200, host
    # Bound to loopback, other addresses are not this panel's either.
    assert (await c.get("/api/status", headers={"Host": "192.168.1.20:8765"})).status == 421


async def test_names_in_allowed_hosts_and_any_address_off_loopback(tmp_path: Path) -> None:
    config = WebConfig(host="0.0.0.0", token=TOKEN, allowed_hosts=["StreamPC.lan"])
    app = create_app(config, make_bot(tmp_path))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(app)) as c:
        for host in ("streampc.lan:8765", "192.168.1.20:8765", "[fe80::1]:8765", "localhost"):
            r = await c.get("/api/status", headers={**auth, "Host": host})
            assert r.status == 200, host
        r = await c.get("/api/status", headers={**auth, "Host": "rebound.example:8765"})
        assert r.status == 421
        assert "web.allowed_hosts" in (await r.json())["error"]


@pytest.mark.parametrize("name", ["streampc.lan:8765", "http://streampc.lan", "a b", "[::1]"])
def test_allowed_hosts_are_bare_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"must be host names like streampc\.lan"):
        WebConfig(allowed_hosts=[name])


async def test_a_change_must_come_from_this_panels_own_page(open_panel: Any) -> None:
    c, bot = open_panel
    with capture_logs() as logs:
        for origin in (None, "null", f"http://127.0.0.1:{c.port + 1}", "http://evil.example"):
            headers = {} if origin is None else {"Origin": origin}
            assert (await c.post("/api/pause", headers=headers)).status == 403, origin
            r = await c.post("/api/volume", json={"volume": 100}, headers=headers)
            assert r.status == 403
            r = await c.post("/api/say", json={"text": "attacker text"}, headers=headers)
            assert r.status == 403
            r = await c.post("/api/mute", json={"user": "streamer"}, headers=headers)
            assert r.status == 403
            assert (await c.delete("/api/queue/x", headers=headers)).status == 403
    untouched(bot)
    refused = [e for e in logs if e["event"] == "web.refused"]
    assert refused and refused[0]["reason"] == "origin" and refused[0]["path"] == "/api/pause"
    # The panel's own page, which sends its Origin, still does everything.
    assert (await c.post("/api/pause", headers=own_origin(c))).status == 200
    assert bot.control.paused


async def test_with_a_token_only_the_bearer_header_skips_the_origin_check(
    locked_panel: Any,
) -> None:
    c, bot = locked_panel
    cookie = {"Cookie": f"ishowtts_token={TOKEN}"}
    # The session cookie is sent by the browser whoever asks (other ports of
    # 127.0.0.1 are the same site), and a ?token= can be put in a form's URL.
    assert (await c.post("/api/pause", headers=cookie)).status == 403
    assert (await c.post(f"/api/pause?token={TOKEN}")).status == 403
    untouched(bot)
    assert (await c.post("/api/pause", headers={**cookie, **own_origin(c)})).status == 200
    assert (await c.post("/api/resume", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
    assert not bot.control.paused


async def test_json_endpoints_take_json_only(open_panel: Any) -> None:
    c, bot = open_panel
    headers = own_origin(c)
    for content_type, body in (
        ("text/plain", '{"text": "attacker text"}'),  # a no-cors fetch
        ("application/x-www-form-urlencoded", "text=attacker+text"),  # a form
        ("multipart/form-data; boundary=x", '--x\r\n\r\n{"text": "a"}\r\n--x--'),
        (None, '{"text": "attacker text"}'),
    ):
        sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
        for path in ("/api/say", "/api/volume", "/api/pause"):
            r = await c.post(path, data=body.encode(), headers=sent)
            assert r.status == 415, (path, content_type)
            assert "application/json" in (await r.json())["error"]
    untouched(bot)
    r = await c.post("/api/say", json={"text": "mine"}, headers=headers)
    assert r.status == 200
    r = await c.post("/api/say", data=b'{"text": "mine too"}', headers={**headers, **JSON})
    assert r.status == 200 and len(bot.queue) == 2


async def test_other_sites_pages_are_refused_before_anything_else(open_panel: Any) -> None:
    c, bot = open_panel
    for site in ("cross-site", "same-site"):
        fetch = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}
        assert (await c.get("/api/status", headers=fetch)).status == 403
        assert (await c.get("/api/events?token=guess", headers=fetch)).status == 403
        form = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate", **own_origin(c)}
        assert (await c.post("/api/pause", headers=form)).status == 403
    untouched(bot)
    # A link to the panel from elsewhere still opens it.
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert (await c.get("/", headers=link)).status == 200
    own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", **own_origin(c)}
    assert (await c.post("/api/pause", headers=own)).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 60_000,
        b'{"text": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"voice": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
    ],
)
async def test_deeply_nested_json_is_a_clear_400(open_panel: Any, body: bytes) -> None:
    c, _ = open_panel
    for path in ("/api/say", "/api/voice"):
        r = await c.post(path, data=body, headers={**JSON, **own_origin(c)})
        assert r.status == 400
        assert (await r.json()) == {"error": "body is nested too deeply"}


async def test_the_overlay_token_shows_captions_and_nothing_else(locked_panel: Any) -> None:
    c, bot = locked_panel
    bot.router.handle(chat("a secret queued line", message_id="s1"))
    read_only = overlay_token(TOKEN)
    assert read_only and read_only != TOKEN
    # The panel (full token) hands out the overlay's URL, which carries only the read-only one.
    r = await c.get("/api/overlay", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (await r.json()) == {
        "url": f"/overlay?token={read_only}",
        "audio_url": f"/overlay?token={read_only}&audio=1",
    }
    page = await c.get(f"/overlay?token={read_only}")
    assert page.status == 200 and "caption" in await page.text()
    events = await c.get(f"/api/events?token={read_only}")
    payload = json.loads((await events.content.readline()).decode().removeprefix("data: "))
    # What is on air, whether paused, and how lines ended (ids only): never the queue.
    assert payload == {"status": {"now_playing": None, "paused": False}, "events": []}
    events.close()
    as_query = {"params": {"token": read_only}}
    as_header = {"headers": {"Authorization": f"Bearer {read_only}", **own_origin(c)}}
    for how in (as_query, as_header):
        for method, path in [
            ("GET", "/"), ("GET", "/api/status"), ("GET", "/api/queue"), ("GET", "/metrics"),
            ("GET", "/api/overlay"), ("POST", "/api/pause"), ("POST", "/api/skip"),
            ("POST", "/api/clear"), ("DELETE", "/api/queue/twitch:s1"),
        ]:  # fmt: skip
            r = await c.request(method, path, **how)  # type: ignore[arg-type]
            assert r.status == 403, (method, path, how)
        r = await c.post("/api/volume", json={"volume": 100}, **how)  # type: ignore[arg-type]
        assert r.status == 403
    assert not bot.control.paused and bot.control.volume != 100 and len(bot.queue) == 1


async def test_a_refused_overlay_is_an_empty_transparent_page(locked_panel: Any) -> None:
    # OBS puts on air whatever page it gets: never a login form, never an error text.
    c, _ = locked_panel
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    cases = [
        ({}, {}, 401, "no_token"),
        ({"token": "guess-1"}, {}, 401, "wrong_token"),
        ({"token": overlay_token(TOKEN)}, {"Host": "evil.example"}, 421, "host"),
        ({"token": overlay_token(TOKEN)}, link, 403, "cross_site"),
        *[({"token": f"guess-{n}"}, {}, 401, "wrong_token") for n in range(2, 6)],
        ({"token": overlay_token(TOKEN)}, {}, 429, "locked_out"),  # after 5 wrong ones
    ]
    with capture_logs() as logs:
        for params, headers, status, _ in cases:
            r = await c.get("/overlay", params=params, headers=headers, allow_redirects=False)
            assert r.status == status, (params, headers)
            assert await r.text() == REFUSED_OVERLAY
            assert r.headers["Content-Security-Policy"] == page_policy(REFUSED_OVERLAY)
            assert r.headers["Cache-Control"] == "no-store"
    assert "<form" not in REFUSED_OVERLAY and "<input" not in REFUSED_OVERLAY
    refused = [e for e in logs if e["event"] == "web.overlay_refused"]
    # Each reason once (a flood is counted, not logged line by line); never a token.
    assert [e["reason"] for e in refused] == [
        "no_token", "wrong_token", "host", "cross_site", "locked_out",
    ]  # fmt: skip
    assert all(e["path"] == "/overlay" for e in refused)
    assert "guess" not in json.dumps(logs) and overlay_token(TOKEN) not in json.dumps(logs)
    # The panel's own pages still go to the login form.
    assert (await c.get("/", allow_redirects=False)).headers["Location"] == "/login"


async def test_wrong_tokens_lock_the_address_out_for_longer_each_time(locked_panel: Any) -> None:
    c, _ = locked_panel
    throttle = c.server.app[THROTTLE_KEY]
    now = [1000.0]
    throttle.clock = lambda: now[0]
    form = own_origin(c)

    async def login(token: str) -> Any:
        return await c.post("/login", data={"token": token}, headers=form, allow_redirects=False)

    with capture_logs() as logs:
        for _ in range(4):
            assert (await login("guess")).status == 401
        wrong = await c.get("/api/status", headers={"Authorization": "Bearer guess"})
        assert wrong.status == 401  # API guesses count too: the fifth locks the address out
        locked = await login(TOKEN)  # even the right token waits: a guess is not checked
        assert locked.status == 429 and locked.headers["Retry-After"] == "2"
        r = await c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 429 and "try again" in (await r.json())["error"]
        now[0] += 1.0
        assert (await login("guess")).status == 401  # the sixth: 2 s this time
        assert (await login(TOKEN)).status == 429
        now[0] += 2.0
        assert (await login(TOKEN)).status == 302  # and the count starts over
        assert (await login("guess")).status == 401
    failed = [e for e in logs if e["event"] == "web.login_failed"]
    assert [(e["failures"], e["locked_s"], e["via"]) for e in failed] == [
        (1, 0.0, "form"),
        (2, 0.0, "form"),
        (3, 0.0, "form"),
        (4, 0.0, "form"),
        (5, 1.0, "header"),
        (6, 2.0, "form"),
        (1, 0.0, "form"),
    ]
    assert all(e["client"] == "127.0.0.1" for e in failed)
    assert all(TOKEN not in json.dumps(e) for e in logs)


async def test_pages_allow_their_own_inline_code_only_and_no_framing(open_panel: Any) -> None:
    c, _ = open_panel
    for path in ("/", "/overlay"):
        r = await c.get(path)
        html = await r.text()
        policy = r.headers["Content-Security-Policy"]
        (script,) = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        (sources,) = re.findall(r"script-src ([^;]*);", policy)
        # The overlay also loads its audio worklet from the panel ('self'); nothing else.
        assert (
            sources == f"'self' 'sha256-{digest}'" if path == "/overlay" else f"'sha256-{digest}'"
        )
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert not re.search(r"\sstyle=|\son[a-z]+=", html)  # nothing inline the policy would block
    for path in ("/api/status", "/login", "/nowhere"):
        r = await c.get(path)
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    for r in (await c.get("/api/status"), await c.get("/", headers={"Host": "evil.example"})):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"


# Previews ---------------------------------------------------------------------
async def started_panel(bot: Bot, engine: Engine) -> tuple[Any, int]:
    """The app on a loopback socket through `serve`, as `ishowtts run` serves it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = int(sock.getsockname()[1])
    speaker = Speaker(bot.queue, engine, Player(bot.config.audio), bot.control)
    app = create_app(WebConfig(), bot, speaker=speaker, engine=engine)
    runner = await serve(WebConfig(port=port), app, sock)
    return runner, port


async def until(condition: Any, what: str) -> None:
    try:
        async with asyncio.timeout(30):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"waited 30 s for {what}")


async def test_a_preview_stops_when_its_client_leaves_and_only_one_runs(
    tmp_path: Path, tiny_files: ModelFiles
) -> None:
    bot = make_bot(tmp_path)
    engine = Engine(bot.config.engine, bot.voices, tiny_files)
    engine.start()
    await engine.wait_ready()
    runner, port = await started_panel(bot, engine)
    text = ("Short sentence here. " * 60)[:MAX_SAY_CHARS]
    body = json.dumps({"text": text, "voice": "mei"}).encode()
    request = (
        f"POST /api/synthesize HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Origin: http://127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        with capture_logs() as logs:
            before = engine.steps_run
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await until(lambda: engine.steps_run > before, "the preview to start")
            # A second preview meanwhile is turned away, not queued behind the first.
            async with ClientSession() as session:
                second = await session.post(
                    f"http://127.0.0.1:{port}/api/synthesize",
                    data=body,
                    headers={"Origin": f"http://127.0.0.1:{port}", **JSON},
                )
                assert second.status == 429 and second.headers["Retry-After"] == "1"
            writer.close()  # the browser tab is closed
            await until(lambda: any(e["event"] == "engine.cancelled" for e in logs), "cancel")
        # Sampling stopped: the next line's steps are all the engine makes from now on.
        stopped_at = engine.steps_run
        chunks = [c async for c in engine.stream("One more.", "mei")]
        assert len(chunks) == 1
        assert engine.steps_run - stopped_at == bot.config.engine.nfe_steps
        assert not [e for e in logs if e["event"] == "engine.error"]
    finally:
        await runner.cleanup()
        engine.close()


async def test_another_sites_page_cannot_lock_the_streamer_out(locked_panel: Any) -> None:
    # Hidden frames or links from a hostile page, each with a wrong ?token=: never
    # read, never counted, so the overlay and the panel keep working.
    c, _ = locked_panel
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    with capture_logs() as logs:
        for site in ("cross-site", "same-site") * 10:
            r = await c.get(
                "/",
                params={"token": "guess"},
                headers={**link, "Sec-Fetch-Site": site},
                allow_redirects=False,
            )
            assert r.status == 302 and r.headers["Location"] == "/login"
    assert not [e for e in logs if e["event"] == "web.login_failed"]
    overlay = await c.get("/overlay", params={"token": overlay_token(TOKEN)})
    assert overlay.status == 200
    status = await c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status.status == 200


NEW_ROUTES = [
    ("/api/unmute", {"key": "twitch:3"}),  # the muted viewer's key
    ("/api/nick", {"user": "viewer", "nick": "attacker"}),
    ("/api/uservoice", {"user": "viewer", "voice": "mei"}),
    ("/api/mode", {"mode": "paid"}),
    ("/api/blocked", {"word": "attacker"}),
    ("/api/queue/twitch:s1/next", None),
    ("/api/replay/1", None),
]


async def test_the_panels_moderation_routes_are_guarded_like_the_rest(
    locked_panel: Any,
) -> None:
    c, bot = locked_panel
    # Each route would change something here: a muted viewer, two lines waiting
    # (the second could move first), a line in the history to read again.
    bot.router.handle(chat("noisy", message_id="m1", user_name="noisy", user_id="3"))
    assert bot.control.mute("noisy").ok  # its line leaves the queue: history line 1
    (muted,) = bot.control.muted_entries(10).entries
    bot.router.handle(chat("first line", message_id="s0", user_name="other", user_id="2"))
    bot.router.handle(chat("a line", message_id="s1", user_name="viewer", user_id="1"))
    read_only = overlay_token(TOKEN)
    cookie = {"Cookie": f"ishowtts_token={TOKEN}"}
    for path, body in NEW_ROUTES:
        data = json.dumps(body).encode() if body is not None else None
        # The session cookie alone, from another page: no Origin.
        r = await c.post(path, data=data, headers={**cookie, **JSON})
        assert r.status == 403, path
        r = await c.post(path, data=data, headers={**cookie, "Origin": "http://evil.example"})
        assert r.status == 403, path
        # A form or a no-cors fetch cannot send JSON.
        plain = {**cookie, **own_origin(c), "Content-Type": "text/plain"}
        assert (await c.post(path, data=data or b"{}", headers=plain)).status == 415, path
        # The overlay's token shows captions and nothing else.
        overlay = {"Authorization": f"Bearer {read_only}", **JSON}
        assert (await c.post(path, data=data, headers=overlay)).status == 403, path
    assert bot.control.policy_state.read_mode == "all"
    assert bot.control.blocked_words == [] and not bot.control.policy_state.nicknames
    assert [i.message.message_id for i in bot.queue.snapshot()] == ["s0", "s1"]
    assert muted.key == "twitch:3" and list(bot.control.muted_entries(10).entries) == [muted]
    r = await c.post("/api/mode", json={"mode": "paid"}, headers={**cookie, **own_origin(c)})
    assert r.status == 200 and bot.control.policy_state.read_mode == "paid"
