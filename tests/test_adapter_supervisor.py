"""An adapter task that crashes (anything escaping its client's run()) is told to
the bot as a disconnection, logged, and restarted with backoff."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from adapters.bilibili.codec import BilibiliCodec
from adapters.events import ChatEvent, ChatMessage, Connected, Disconnected, Platform
from adapters.reconnect import Backoff
from adapters.twitch.codec import TwitchCodec
from bot.app import Bot, _guarded
from bot.config import Config, WebConfig
from bot.logs import configure_logging, flush_logs
from bot.panel.web import create_app
from tests.bilibili import fixtures as fx
from tests.bilibili.fake_server import FakeBilibili
from tests.twitch.fake_server import FakeTwitch

FAST = Backoff(base_s=0.05, cap_s=0.2, jitter_s=0.0, stable_s=60)
PRIVMSG = "@id={id};user-id=42;display-name=Viewer :viewer!viewer@viewer PRIVMSG #chan :{text}"
BUG = "RuntimeError: simulated bug"


@pytest.fixture
async def twitch() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as fake:
        yield fake


@pytest.fixture
async def bilibili() -> AsyncIterator[FakeBilibili]:
    async with FakeBilibili() as fake:
        yield fake


def twitch_bot(server: FakeTwitch) -> Bot:
    return Bot(
        Config.model_validate(
            {"platforms": {"twitch": {"enabled": True, "channels": ["chan"], "url": server.url}}}
        )
    )


def crash_on(monkeypatch: pytest.MonkeyPatch, codec: type[Any], marker: bytes) -> None:
    """The codec's feed raises (a bug the codec's own boundary does not catch)
    on a frame holding `marker`, once."""
    real = codec.feed
    crashed: list[bool] = []

    def feed(self: Any, data: bytes | str, received: float) -> Any:
        raw = data.encode() if isinstance(data, str) else data
        if marker in raw and not crashed:
            crashed.append(True)
            raise RuntimeError("simulated bug")
        return real(self, data, received)

    monkeypatch.setattr(codec, "feed", feed)


async def next_events(events: asyncio.Queue[ChatEvent], count: int) -> list[ChatEvent]:
    async with asyncio.timeout(10):
        return [await events.get() for _ in range(count)]


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_twitch_crash_is_told_then_restarted(
    twitch: FakeTwitch, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = twitch_bot(twitch)
    assert bot.twitch is not None
    crash_on(monkeypatch, TwitchCodec, b"BOOM")
    with capture_logs() as logs:
        task = asyncio.create_task(
            _guarded(
                Platform.TWITCH,
                bot.twitch,
                bot.events,
                on_crash=bot.control.adapter_crashed,
                backoff=FAST,
            )
        )
        try:
            assert await next_events(bot.events, 1) == [Connected(Platform.TWITCH, "chan")]
            await twitch.send(":tmi.twitch.tv NOTICE #chan :BOOM")
            assert await next_events(bot.events, 2) == [
                Disconnected(Platform.TWITCH, "chan", f"crashed: {BUG}"),
                Connected(Platform.TWITCH, "chan"),
            ]
            await twitch.send(PRIVMSG.format(id="after", text="still read"))
            (message,) = await next_events(bot.events, 1)
            assert isinstance(message, ChatMessage) and message.message_id == "after"
        finally:
            await stop(task)
    (crashed,) = [e for e in logs if e["event"] == "adapter.crashed"]
    assert (crashed["platform"], crashed["error"], crashed["restart_in_s"]) == (
        "twitch",
        BUG,
        0.05,
    )
    assert crashed["log_level"] == "error" and crashed["exc_info"] is not None
    (restarted,) = [e for e in logs if e["event"] == "adapter.restarted"]
    assert restarted["platform"] == "twitch"
    events = [e["event"] for e in logs if e["event"].startswith("adapter.")]
    assert events == ["adapter.crashed", "adapter.restarted"]
    assert len(twitch.sessions) == 2
    assert bot.control.crashes == {Platform.TWITCH: 1}


async def test_bilibili_crash_is_told_then_restarted(
    bilibili: FakeBilibili, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = Bot(Config.model_validate({"platforms": {"bilibili": bilibili.config()}}))
    assert bot.bilibili is not None
    crash_on(monkeypatch, BilibiliCodec, b"BOOM")
    room = str(fx.ROOM)
    with capture_logs() as logs:
        task = asyncio.create_task(
            _guarded(
                Platform.BILIBILI,
                bot.bilibili,
                bot.events,
                on_crash=bot.control.adapter_crashed,
                backoff=FAST,
            )
        )
        try:
            assert await next_events(bot.events, 1) == [Connected(Platform.BILIBILI, room)]
            await bilibili.send(fx.message_packet({"cmd": "BOOM"}))
            assert await next_events(bot.events, 2) == [
                Disconnected(Platform.BILIBILI, room, f"crashed: {BUG}"),
                Connected(Platform.BILIBILI, room),
            ]
            await bilibili.send(fx.brotli_batch(fx.danmaku(id_str="after")))
            (message,) = await next_events(bot.events, 1)
            assert isinstance(message, ChatMessage) and message.message_id == "after"
        finally:
            await stop(task)
    (crashed,) = [e for e in logs if e["event"] == "adapter.crashed"]
    assert (crashed["platform"], crashed["error"]) == ("bilibili", BUG)
    assert [e["platform"] for e in logs if e["event"] == "adapter.restarted"] == ["bilibili"]
    assert len(bilibili.auth_bodies) == 2
    assert bot.control.crashes == {Platform.BILIBILI: 1}


async def test_a_crashed_adapter_shows_disconnected_in_status_and_metrics(
    twitch: FakeTwitch, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = twitch_bot(twitch)
    assert bot.twitch is not None
    crash_on(monkeypatch, TwitchCodec, b"BOOM")
    slow = Backoff(base_s=60, jitter_s=0)  # stays down for the rest of the test
    tasks = [
        asyncio.create_task(bot.router.run(bot.events)),
        asyncio.create_task(
            _guarded(
                Platform.TWITCH,
                bot.twitch,
                bot.events,
                on_crash=bot.control.adapter_crashed,
                backoff=slow,
            )
        ),
    ]
    try:
        async with TestClient(TestServer(create_app(WebConfig(), bot))) as web:

            async def connections() -> dict[str, bool]:
                status = await (await web.get("/api/status")).json()
                return dict(status["connections"])

            async with asyncio.timeout(10):
                while await connections() != {"twitch": True}:
                    await asyncio.sleep(0.02)
                await twitch.send(":tmi.twitch.tv NOTICE #chan :BOOM")
                while await connections() != {"twitch": False}:
                    await asyncio.sleep(0.02)
            metrics = await (await web.get("/metrics")).text()
    finally:
        for task in tasks:
            await stop(task)
    assert 'ishowtts_adapter_connected{platform="twitch"} 0.0' in metrics
    assert 'ishowtts_adapter_disconnects_total{platform="twitch"} 1.0' in metrics
    assert 'ishowtts_adapter_crashes_total{platform="twitch"} 1.0' in metrics


async def test_an_adapter_that_ends_by_itself_is_not_restarted(twitch: FakeTwitch) -> None:
    twitch.reject_login = True
    bot = Bot(
        Config.model_validate(
            {
                "platforms": {
                    "twitch": {
                        "enabled": True,
                        "channels": ["chan"],
                        "url": twitch.url,
                        "nick": "mybot",
                        "token": "oauth:wrong",
                    }
                }
            }
        )
    )
    assert bot.twitch is not None
    with capture_logs() as logs:
        await asyncio.wait_for(_guarded(Platform.TWITCH, bot.twitch, bot.events, backoff=FAST), 5)
    assert twitch.attempts == 1
    assert not [e for e in logs if e["event"].startswith("adapter.")]


# Built here, far from the frames: a console traceback shows source lines
# around each frame, and a secret is a value at run time, not in the source.
COOKIE = "SESSDATA=" + "super" + "secret; bili_jct=" + "also" + "secret"


class CrashingWithASecret:
    """A client whose run() dies with a secret in a local variable, as the
    Bilibili client's HTTP requests have their Cookie header."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        headers = {"Cookie": COOKIE}
        if self.runs == 1:
            raise ConnectionResetError(f"lost while sending {len(headers)} header(s)")
        await asyncio.Event().wait()

    def down(self, reason: str) -> list[Disconnected]:
        return [Disconnected(Platform.BILIBILI, "1", reason)]


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_adapter_crashed_log_holds_no_secret_from_the_dead_frames(fmt: Any) -> None:
    out = io.StringIO()
    configure_logging("info", fmt, stream=out)
    client = CrashingWithASecret()
    events: asyncio.Queue[ChatEvent] = asyncio.Queue()
    task = asyncio.create_task(_guarded(Platform.BILIBILI, client, events, backoff=FAST))
    try:
        async with asyncio.timeout(5):
            while client.runs < 2:
                await asyncio.sleep(0.01)
    finally:
        await stop(task)
        flush_logs()
        structlog.reset_defaults()
    text = out.getvalue()
    assert "adapter.crashed" in text and "adapter.restarted" in text
    assert "ConnectionResetError" in text  # the traceback is there...
    assert "supersecret" not in text  # ...without the frames' locals
    assert "alsosecret" not in text
    if fmt == "json":
        (crashed,) = [
            json.loads(line)
            for line in text.splitlines()
            if json.loads(line)["event"] == "adapter.crashed"
        ]
        assert crashed["platform"] == "bilibili"
        assert crashed["exception"][0]["exc_type"] == "ConnectionResetError"
