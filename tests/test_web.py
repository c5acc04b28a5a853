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
from bot.panel.web import MAX_BODY, THROTTLE_KEY, attach, create_app, set_progress
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
    await bot.voice_checks.refresh()
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
        ("GET", "/metrics"), ("GET", "/api/events"), ("POST", "/api/unmute"),
        ("POST", "/api/nick"), ("POST", "/api/uservoice"), ("POST", "/api/mode"),
        ("POST", "/api/blocked"), ("POST", "/api/queue/x/next"), ("POST", "/api/replay/1"),
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
        {"name": name, "ok": True, "reason": ""}
        for name in ("default", "mei", "builtin-en", "builtin-zh")
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
            # A broken voice is a clear 4xx with its reason, never a bare 500: one
            # the last check saw, and one that broke since.
            voices = tmp_path / "voices"
            write_voice(voices, "hush", amplitude=0.0)
            write_voice(voices, "late")
            await bot.voice_checks.refresh()
            r = await c.post("/api/synthesize", json={"text": "Hi.", "voice": "hush"}, headers=AUTH)
            assert r.status == 400 and "is silent" in (await r.json())["error"]
            (voices / "late.txt").unlink()
            r = await c.post("/api/synthesize", json={"text": "Hi.", "voice": "late"}, headers=AUTH)
            assert r.status == 422 and "missing transcript" in (await r.json())["error"]
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


# The panel's state, its voices, and the streamer's side of moderation ----------------
async def status_of(c: Any) -> dict[str, Any]:
    r = await c.get("/api/status", headers=AUTH)
    assert r.status == 200
    return dict(await r.json())


async def test_the_status_says_starting_then_live_paused_and_stalled(
    tmp_path: Path, tiny_files: ModelFiles
) -> None:
    bot = make_bot(tmp_path)
    app = create_app(WebConfig(token=TOKEN), bot)
    async with TestClient(TestServer(app)) as c:
        set_progress(app, "loading the voice model on cpu…")
        status = await status_of(c)
        assert status["state"] == "starting"
        assert status["detail"] == "loading the voice model on cpu…"
        assert status["now_playing"] is None and status["voices_checked"] is False
        r = await c.post("/api/synthesize", json={"text": "hi"}, headers=AUTH)
        assert r.status == 503 and "still starting" in (await r.json())["error"]
        # Engine warm: the speaker is attached and the panel is live.
        engine = Engine(bot.config.engine, bot.voices, tiny_files)
        attach(app, Speaker(bot.queue, engine, Player(bot.config.audio), bot.control), engine)
        assert (await status_of(c))["state"] == "live"
        bot.control.pause()
        status = await status_of(c)
        assert status["state"] == "paused" and "resume" in status["detail"]
        bot.control.resume()
        outcomes.log_outcome(outcomes.SKIPPED, chat("a line"), reason="engine_stalled")
        status = await status_of(c)
        assert status["state"] == "stalled" and "stalled" in status["detail"]
        assert status["engine"] == {"state": "local", "errors": 0, "stalls": 0}
        outcomes.log_outcome(outcomes.SPOKEN, chat("next"), voice="default", text="next")
        assert (await status_of(c))["state"] == "live"


async def test_enabled_platforms_show_as_not_connected_until_they_are(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    write_voice(voices, "default")
    config = Config.model_validate(
        {
            "engine": {"voices_dir": str(voices), "arch": TINY_ARCH.model_dump()},
            "commands": {"state_file": str(tmp_path / "state.json")},
            "platforms": {"twitch": {"enabled": True, "channels": ["chan"]}},
        }
    )
    bot = Bot(config)
    async with TestClient(TestServer(create_app(WebConfig(token=TOKEN), bot))) as c:
        assert (await status_of(c))["connections"] == {"twitch": False}
        bot.router.handle(Connected(Platform.TWITCH, "chan"))
        assert (await status_of(c))["connections"] == {"twitch": True}


async def test_broken_voices_are_listed_with_why_and_refused(tmp_path: Path) -> None:
    bot = make_bot(tmp_path)
    voices = tmp_path / "voices"
    write_voice(voices, "hush", amplitude=0.0)  # silent
    write_voice(voices, "notext").with_suffix(".txt").unlink()
    await bot.voice_checks.refresh()
    async with TestClient(TestServer(create_app(WebConfig(token=TOKEN), bot))) as c:
        listed = {v["name"]: v for v in (await status_of(c))["voices"]}
        assert listed["default"] == {"name": "default", "ok": True, "reason": ""}
        assert not listed["hush"]["ok"] and "is silent" in listed["hush"]["reason"]
        assert not listed["notext"]["ok"] and "missing transcript" in listed["notext"]["reason"]
        for path, body in (
            ("/api/voice", {"voice": "hush"}),
            ("/api/say", {"text": "hi", "voice": "notext"}),
            ("/api/uservoice", {"user": "Fan", "voice": "hush"}),
        ):
            r = await c.post(path, json=body, headers=AUTH)
            assert r.status == 400, path
            assert "unusable voice" in (await r.json())["error"], path
        assert bot.control.voice == "default" and len(bot.queue) == 0
        # Fixed on disk: usable again at the next check.
        (voices / "notext.txt").write_text("This is the reference clip.", encoding="utf-8")
        await bot.voice_checks.refresh()
        r = await c.post("/api/voice", json={"voice": "notext"}, headers=AUTH)
        assert r.status == 200 and bot.control.voice == "notext"
        # Broken while in use: the status says so.
        (voices / "notext.txt").unlink()
        await bot.voice_checks.refresh()
        (warning,) = (await status_of(c))["warnings"]
        assert "'notext' cannot be used" in warning and "pick another" in warning


async def test_unmute_nicknames_and_user_voices_by_row(client: Any) -> None:
    c, bot = client
    troll = chat("hi", user_name="Troll", user_id="66")
    fan = chat("hi", user_name="Fan", user_id="77")
    for message in (troll, fan):
        bot.router.handle(message)
    assert (await c.post("/api/mute", json={"user": "Troll"}, headers=AUTH)).status == 200
    muted = (await status_of(c))["muted"]
    assert muted == [{"key": "twitch:66", "name": "Troll", "value": "", "editable": True}]
    r = await c.post("/api/unmute", json={"key": "twitch:66"}, headers=AUTH)
    assert r.status == 200 and (await r.json())["text"] == "unmuted Troll"
    assert troll.user_key not in bot.control.policy_state.muted
    r = await c.post("/api/unmute", json={"key": "twitch:66"}, headers=AUTH)
    assert r.status == 400 and "not muted" in (await r.json())["error"]

    r = await c.post("/api/nick", json={"user": "Fan", "nick": "The Fan"}, headers=AUTH)
    assert r.status == 200 and bot.control.policy_state.nicknames[fan.user_key] == "The Fan"
    (row,) = (await status_of(c))["nicknames"]
    assert (row["key"], row["name"], row["value"]) == ("twitch:77", "Fan", "The Fan")
    r = await c.post("/api/nick", json={"key": "twitch:77", "nick": ""}, headers=AUTH)
    assert r.status == 200 and fan.user_key not in bot.control.policy_state.nicknames

    r = await c.post("/api/uservoice", json={"user": "Fan", "voice": "mei"}, headers=AUTH)
    assert r.status == 200 and bot.control.policy_state.user_voices[fan.user_key] == "mei"
    (row,) = (await status_of(c))["user_voices"]
    assert (row["key"], row["value"]) == ("twitch:77", "mei")
    r = await c.post("/api/uservoice", json={"key": "twitch:77", "voice": None}, headers=AUTH)
    assert r.status == 200 and fan.user_key not in bot.control.policy_state.user_voices

    r = await c.post("/api/nick", json={"user": "Nobody", "nick": "x"}, headers=AUTH)
    assert r.status == 400 and "not seen in chat" in (await r.json())["error"]

    # A long list is pushed 4 times a second: the newest rows only, and the count.
    for n in range(250):
        bot.control.policy_state.muted[(Platform.TWITCH, f"id{n}")] = f"user{n}"
    status = await status_of(c)
    assert len(status["muted"]) == 100 and status["totals"]["muted"] == 250
    assert status["muted"][0]["key"] == "twitch:id249"
    # Names are shown cleaned, and cleaned again when the blocked words change.
    bot.control.policy_state.muted[(Platform.TWITCH, "id250")] = "scam_king"
    assert (await status_of(c))["muted"][0]["name"] == "scam_king"
    assert (await c.post("/api/blocked", json={"word": "scam"}, headers=AUTH)).status == 200
    assert (await status_of(c))["muted"][0]["name"] == "someone"


async def test_read_mode_and_blocked_words_change_live(client: Any) -> None:
    c, bot = client
    r = await c.post("/api/mode", json={"mode": "paid"}, headers=AUTH)
    assert r.status == 200 and bot.control.policy_state.read_mode == "paid"
    assert (await status_of(c))["mode"] == "paid"
    await c.post("/api/mode", json={"mode": "all"}, headers=AUTH)

    r = await c.post("/api/blocked", json={"word": "scam"}, headers=AUTH)
    assert r.status == 200 and "until the bot stops" in (await r.json())["text"]
    assert (await status_of(c))["blocked_words"] == ["scam"]
    with capture_logs() as logs:
        bot.router.handle(chat("free scam here", message_id="b1"))
    assert [(e["event"], e.get("reason")) for e in logs if e["event"].startswith("tts.")] == [
        (outcomes.FILTERED, "blocked_word")
    ]
    r = await c.post("/api/blocked", json={"word": "scam", "blocked": False}, headers=AUTH)
    assert r.status == 200
    bot.router.handle(chat("free scam here", message_id="b2"))
    assert len(bot.queue) == 1


async def test_play_next_and_replay(client: Any) -> None:
    c, bot = client
    for n in (1, 2, 3):
        bot.router.handle(chat(f"line {n}", message_id=f"q{n}", user_id=f"u{n}"))
    r = await c.post("/api/queue/twitch:q3/next", headers=AUTH)
    assert r.status == 200
    queue = await (await c.get("/api/queue", headers=AUTH)).json()
    assert [q["id"] for q in queue] == ["twitch:q3", "twitch:q1", "twitch:q2"]
    assert (await c.post("/api/queue/twitch:gone/next", headers=AUTH)).status == 404
    bot.control.clear()

    heard = chat("hi chat", message_id="s1", user_name="Ann")
    outcomes.log_outcome(outcomes.SPOKEN, heard, voice="mei", text="Q3 says gg 2 chat")
    bot.router.handle(chat("!uptime"))
    events = await c.get("/api/events", headers=AUTH)
    payload = __import__("json").loads((await events.content.readline()).decode()[6:])
    events.close()
    spoken = next(e for e in payload["events"] if e["id"] == "twitch:s1")
    assert spoken["at"] > 0 and spoken["spoken"] == "Q3 says gg 2 chat"
    r = await c.post(f"/api/replay/{spoken['seq']}", headers=AUTH)
    assert r.status == 200
    (again,) = bot.queue.snapshot()
    assert again.message.platform is Platform.LOCAL
    assert (again.speech(None), again.voice) == ("Q3 says gg 2 chat", "mei")
    filtered = next(e for e in payload["events"] if e["event"] == outcomes.FILTERED)
    r = await c.post(f"/api/replay/{filtered['seq']}", headers=AUTH)
    assert r.status == 400 and "no text" in (await r.json())["error"]
    # A line a moderator deleted: its text is not kept, so it cannot be aired again.
    deleted = chat("something awful", message_id="d1")
    outcomes.log_outcome(outcomes.RETRACTED, deleted, reason="message_deleted")
    events = await c.get("/api/events", headers=AUTH)
    payload = __import__("json").loads((await events.content.readline()).decode()[6:])
    events.close()
    retracted = next(e for e in payload["events"] if e["id"] == "twitch:d1")
    assert retracted["text"] == "" and "awful" not in __import__("json").dumps(payload)
    bot.control.clear()
    r = await c.post(f"/api/replay/{retracted['seq']}", headers=AUTH)
    assert r.status == 400 and bot.queue.snapshot() == []
    assert (await c.post("/api/replay/99999", headers=AUTH)).status == 404
    assert (await c.post("/api/replay/-1", headers=AUTH)).status == 400


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/unmute", {}, "key must be a non-empty string"),
        ("/api/unmute", {"key": "x" * 201}, "key longer than 200"),
        ("/api/unmute", {"key": "config:someone"}, "set in the config file"),
        ("/api/nick", {"nick": "x"}, 'give either "key"'),
        ("/api/nick", {"key": "twitch:1", "user": "a", "nick": "x"}, 'give either "key"'),
        ("/api/nick", {"user": "a", "nick": 5}, "nick must be a string"),
        ("/api/nick", {"user": "a", "nick": "x" * 101}, "nick must be a string"),
        ("/api/uservoice", {"user": "a", "voice": "../x"}, "voice must be"),
        ("/api/uservoice", {"user": "a", "voice": "nobody"}, "unknown voice"),
        ("/api/mode", {"mode": "loud"}, "mode must be one of"),
        ("/api/mode", {"mode": 1}, "mode must be one of"),
        ("/api/blocked", {"word": ""}, "the word is empty"),
        ("/api/blocked", {"word": "x", "blocked": "yes"}, "expected"),
        ("/api/blocked", {"word": "?!"}, "no letters or digits"),
        ("/api/blocked", {"word": "gone", "blocked": False}, "not blocked"),
    ],
)
async def test_new_routes_validate_every_field(
    client: Any, path: str, body: dict[str, Any], error: str
) -> None:
    c, bot = client
    r = await c.post(path, json=body, headers=AUTH)
    assert r.status == 400
    assert error in (await r.json())["error"]
    assert bot.control.policy_state.read_mode == "all" and bot.control.blocked_words == []


async def test_a_reward_mapped_to_a_broken_voice_is_warned_about(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    write_voice(voices, "default")
    write_voice(voices, "hush", amplitude=0.0)
    reward = "0c4bd3a8-9f7e-4b8a-8d3e-2f1c5a6b7d8e"
    config = Config.model_validate(
        {
            "engine": {"voices_dir": str(voices), "arch": TINY_ARCH.model_dump()},
            "commands": {"state_file": str(tmp_path / "state.json")},
            "platforms": {"twitch": {"rewards": {"tts": {"id": reward, "voice": "hush"}}}},
        }
    )
    bot = Bot(config)
    await bot.voice_checks.refresh()
    async with TestClient(TestServer(create_app(WebConfig(token=TOKEN), bot))) as c:
        status = await status_of(c)
    (warning,) = status["warnings"]
    assert "Reward 'tts' reads in voice 'hush'" in warning and "is silent" in warning
    assert status["reward_map"] == [
        {
            "id": reward,
            "name": "tts",
            "read": True,
            "voice": "hush",
            "template": None,
            "priority": None,
        }
    ]
