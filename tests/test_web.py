"""The HTTP API with aiohttp's test client: every endpoint, auth, every error code."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from adapters.events import Connected, Disconnected, Platform
from bot.app import Bot
from bot.audio.player import Player
from bot.audio.speaker import Speaker
from bot.chat import outcomes
from bot.config import Config, WebConfig
from bot.panel.web import MAX_BODY, THROTTLE_KEY, create_app
from engine.checkpoints import ModelFiles
from engine.synth import Engine
from tests.engine.tiny import TINY_ARCH, write_voice
from tests.factories import chat

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


def make_bot(tmp_path: Path) -> Bot:
    voices = tmp_path / "voices"
    write_voice(voices, "default")
    write_voice(voices, "mei", "这是参考音频。")
    return Bot(
        Config.model_validate(
            {
                "engine": {
                    "voices_dir": str(voices),
                    "arch": TINY_ARCH.model_dump(),
                    "nfe_steps": 4,
                },
                "commands": {"state_file": str(tmp_path / "state.json")},
            }
        )
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Bot]]:
    bot = make_bot(tmp_path)
    app = create_app(WebConfig(token=TOKEN), bot)
    async with TestClient(TestServer(app)) as c:
        yield c, bot


async def test_every_route_needs_the_token(client: Any) -> None:
    c, _ = client
    for method, path in [
        ("GET", "/api/status"), ("GET", "/api/queue"), ("DELETE", "/api/queue/x"),
        ("POST", "/api/skip"), ("POST", "/api/pause"), ("POST", "/api/resume"),
        ("POST", "/api/clear"), ("POST", "/api/voice"), ("POST", "/api/mute"),
        ("POST", "/api/volume"), ("POST", "/api/say"), ("POST", "/api/synthesize"),
        ("GET", "/metrics"), ("GET", "/api/events"),
    ]:  # fmt: skip
        r = await c.request(method, path)
        assert r.status == 401, path
        assert (await r.json()) == {"error": "token required"}
        wrong = await c.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        c.server.app[THROTTLE_KEY].succeeded("127.0.0.1")  # lockouts: test_web_security
    page = await c.get("/", allow_redirects=False)
    assert page.status == 302 and page.headers["Location"] == "/login"


async def test_login_form_sets_a_cookie_and_query_token_works(client: Any) -> None:
    c, _ = client
    origin = {"Origin": f"http://{c.host}:{c.port}"}  # as a browser sends with the form
    bad = await c.post("/login", data={"token": "nope"}, headers=origin, allow_redirects=False)
    assert bad.status == 401
    ok = await c.post("/login", data={"token": TOKEN}, headers=origin, allow_redirects=False)
    assert ok.status == 302
    page = await c.get("/")
    assert page.status == 200 and "iShowTTS panel" in await page.text()
    overlay = await c.get(f"/overlay?token={TOKEN}")
    assert overlay.status == 200 and "caption" in await overlay.text()


async def test_status_queue_and_remove(client: Any) -> None:
    c, bot = client
    bot.router.handle(Connected(Platform.TWITCH, "chan"))
    bot.router.handle(chat("first", message_id="q1", user_name="Ann"))
    bot.router.handle(chat("second", message_id="q2"))
    status = await (await c.get("/api/status", headers=AUTH)).json()
    assert status["queue"] == 2
    assert status["voice"] == "default" and status["voices"] == [
        "default",
        "mei",
        "builtin-en",
        "builtin-zh",
    ]
    assert status["connections"] == {"twitch": True}
    assert status["now_playing"] is None and status["paused"] is False
    assert status["rewards"] == []
    reward = "0c4bd3a8-9f7e-4b8a-8d3e-2f1c5a6b7d8e"
    bot.router.handle(chat("read me", message_id="r1", reward_id=reward))
    status = await (await c.get("/api/status", headers=AUTH)).json()
    assert status["rewards"] == [{"id": reward, "name": "", "example": "read me", "count": 1}]
    assert status["queue"] == 3
    bot.queue.remove_where(lambda i: i.message.message_id == "r1", outcomes.SKIPPED, "test")
    queue = await (await c.get("/api/queue", headers=AUTH)).json()
    assert [q["id"] for q in queue] == ["twitch:q1", "twitch:q2"]
    assert queue[0]["user"] == "Ann" and queue[0]["text"] == "first"
    with capture_logs() as logs:
        r = await c.delete("/api/queue/twitch:q1", headers=AUTH)
    assert r.status == 200
    assert (logs[0]["event"], logs[0]["reason"]) == (outcomes.SKIPPED, "removed")
    missing = await c.delete("/api/queue/twitch:q1", headers=AUTH)
    assert missing.status == 404


async def test_actions_go_through_control(client: Any) -> None:
    c, bot = client
    assert (await (await c.post("/api/pause", headers=AUTH)).json())["ok"] is True
    assert bot.control.paused
    assert (await (await c.post("/api/resume", headers=AUTH)).json())["ok"] is True
    assert (await (await c.post("/api/skip", headers=AUTH)).json()) == {
        "ok": False,
        "text": "nothing is playing",
    }
    bot.router.handle(chat("pending"))
    cleared = await (await c.post("/api/clear", headers=AUTH)).json()
    assert cleared["text"] == "cleared 1 pending message(s)"
    r = await c.post("/api/voice", json={"voice": "mei"}, headers=AUTH)
    assert r.status == 200 and bot.control.voice == "mei"
    troll = chat("hi", user_name="Troll")
    bot.router.handle(troll)
    r = await c.post("/api/mute", json={"user": "Troll"}, headers=AUTH)
    assert r.status == 200 and troll.user_key in bot.control.policy_state.muted
    r = await c.post("/api/mute", json={"user": "Troll", "muted": False}, headers=AUTH)
    assert r.status == 200 and troll.user_key not in bot.control.policy_state.muted
    r = await c.post("/api/volume", json={"volume": 30}, headers=AUTH)
    assert r.status == 200 and bot.control.volume == 30


async def test_say_is_queued_at_broadcaster_priority_as_typed(client: Any) -> None:
    c, bot = client
    bot.router.handle(chat("viewer first"))
    r = await c.post("/api/say", json={"text": "Be right back!", "voice": "mei"}, headers=AUTH)
    assert r.status == 200
    first = bot.queue.snapshot()[0]
    assert first.message.platform is Platform.LOCAL
    assert first.speech(None) == "Be right back!"
    assert first.voice == "mei"
    assert first.priority == bot.config.policy.priorities.privileged


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/voice", b"{not json", 400, "body is not valid JSON"),
        ("/api/voice", b"[1]", 400, "body must be a JSON object"),
        ("/api/voice", b'{"voice": 5}', 400, "voice must be a string"),
        ("/api/voice", b'{"voice": "nobody"}', 404, "unknown voice 'nobody'"),
        ("/api/mute", b'{"muted": true}', 400, "expected"),
        ("/api/volume", b'{"volume": 101}', 400, "volume must be"),
        ("/api/volume", b'{"volume": "loud"}', 400, "volume must be"),
        ("/api/say", b'{"text": ""}', 400, "text must be"),
        ("/api/say", b'{"text": "hi", "voice": "../x"}', 404, "unknown voice"),
        ("/api/synthesize", b'{"text": "hi"}', 503, "engine is not running"),
    ],
)
async def test_errors(client: Any, path: str, body: bytes, status: int, error: str) -> None:
    c, _ = client
    r = await c.post(path, data=body, headers={**AUTH, **JSON})
    assert r.status == status
    data = await r.json()
    assert error in data["error"]
    if status == 404 and "voice" in error:
        assert data["voices"] == ["default", "mei", "builtin-en", "builtin-zh"]


async def test_body_over_the_limit_is_413(client: Any) -> None:
    c, _ = client
    r = await c.post("/api/say", data=b"x" * (MAX_BODY + 1), headers={**AUTH, **JSON})
    assert r.status == 413


async def test_metrics(client: Any) -> None:
    c, bot = client
    bot.router.handle(Connected(Platform.TWITCH, "chan"))
    bot.router.handle(Disconnected(Platform.TWITCH, "chan", "boom"))
    bot.router.handle(chat("!uptime"))
    bot.router.handle(chat("queued"))
    text = await (await c.get("/metrics", headers=AUTH)).text()
    assert "ishowtts_queue_depth 1.0" in text
    assert 'ishowtts_messages_total{outcome="filtered",platform="twitch"} 1.0' in text
    assert 'ishowtts_adapter_connected{platform="twitch"} 0.0' in text
    assert 'ishowtts_adapter_disconnects_total{platform="twitch"} 1.0' in text
    assert "ishowtts_ttfa_seconds_bucket" in text
    assert "ishowtts_engine_errors_total 0.0" in text
    assert "ishowtts_engine_stalls_total 0.0" in text
    assert 'ishowtts_loop_lag_seconds{quantile="0.99"} 0.0' in text


async def test_server_sent_events_carry_status_and_terminal_events(client: Any) -> None:
    c, bot = client
    bot.router.handle(chat("!uptime", message_id="f1"))
    r = await c.get("/api/events", headers=AUTH)
    assert r.headers["Content-Type"] == "text/event-stream"
    line = await r.content.readline()
    payload = __import__("json").loads(line.decode().removeprefix("data: "))
    assert payload["status"]["queue"] == 0
    assert [(e["event"], e["id"], e["reason"]) for e in payload["events"]] == [
        ("tts.filtered", "twitch:f1", "command")
    ]
    r.close()


async def test_the_event_feed_carries_what_was_said_beside_the_original(client: Any) -> None:
    c, _ = client
    heard = chat("hi   chat https://x.example", user_name="Ann")
    outcomes.log_outcome(outcomes.SPOKEN, heard, voice="default", text="Ann says hi chat link")
    r = await c.get("/api/events", headers=AUTH)
    line = await r.content.readline()
    (event,) = __import__("json").loads(line.decode().removeprefix("data: "))["events"]
    assert (event["text"], event["spoken"]) == (heard.text, "Ann says hi chat link")
    r.close()


async def test_no_token_on_loopback_means_open_to_this_panels_own_page(tmp_path: Path) -> None:
    bot = make_bot(tmp_path)
    app = create_app(WebConfig(), bot)
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/api/status")).status == 200
        origin = {"Origin": f"http://{c.host}:{c.port}"}
        assert (await c.post("/api/pause", headers=origin)).status == 200
        assert bot.control.paused


async def test_synthesize_returns_a_wav(tmp_path: Path, tiny_files: ModelFiles) -> None:
    bot = make_bot(tmp_path)
    engine = Engine(bot.config.engine, bot.voices, tiny_files)
    engine.start()
    await engine.wait_ready()
    try:
        speaker = Speaker(bot.queue, engine, Player(bot.config.audio), bot.control)
        app = create_app(WebConfig(token=TOKEN), bot, speaker=speaker, engine=engine)
        async with TestClient(TestServer(app)) as c:
            r = await c.post(
                "/api/synthesize", json={"text": "Hello there.", "voice": "mei"}, headers=AUTH
            )
            assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
            audio, rate = sf.read(io.BytesIO(await r.read()))
            assert rate == 24000 and len(audio) > 2400
    finally:
        engine.close()


async def test_the_event_streams_tell_of_a_lines_end_at_once(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not at the next periodic push: a skipped line leaves the overlay at once.
    # The overlay's stream names only how lines ended, by id: no text, nothing filtered.
    import json

    from bot.panel import web
    from bot.panel.web import overlay_token

    monkeypatch.setattr(web, "PUSH_INTERVAL_S", 30.0)
    c, bot = client
    bot.router.handle(chat("waiting here", message_id="w1"))
    panel = await c.get("/api/events", headers=AUTH)
    overlay = await c.get(f"/api/events?token={overlay_token(TOKEN)}")

    async def next_push(stream: Any) -> dict[str, Any]:
        line = await asyncio.wait_for(stream.content.readline(), 2)
        await stream.content.readline()  # the blank line after each event
        return dict(json.loads(line.decode().removeprefix("data: ")))

    for stream in (panel, overlay):
        await next_push(stream)
    bot.router.handle(chat("!not for reading", message_id="f1"))  # filtered
    assert (await next_push(panel))["events"][0]["event"] == "tts.filtered"
    assert (await next_push(overlay))["events"] == []
    assert (await c.delete("/api/queue/twitch:w1", headers=AUTH)).status == 200
    assert (await next_push(panel))["events"][0]["text"] == "waiting here"
    assert (await next_push(overlay))["events"] == [{"id": "twitch:w1", "event": "tts.skipped"}]
    panel.close()
    overlay.close()
