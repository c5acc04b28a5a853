from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.bilibili import codec
from adapters.bilibili.client import BilibiliClient
from adapters.bilibili.config import BilibiliConfig
from adapters.events import ChatEvent, ChatMessage, Connected, Disconnected, Platform
from adapters.reconnect import Backoff
from bot.app import Bot
from bot.chat import outcomes
from bot.config import Config
from tests.bilibili import fixtures as fx
from tests.bilibili.fake_server import BUVID, TOKEN, FakeBilibili
from tests.running import Running

FAST = Backoff(base_s=0.05, cap_s=0.2, jitter_s=0.0, stable_s=60)


@pytest.fixture
async def server() -> AsyncIterator[FakeBilibili]:
    async with FakeBilibili() as fake:
        yield fake


@pytest.fixture
async def start(server: FakeBilibili) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    def _start(config: dict[str, Any] | None = None, **kwargs: Any) -> Running:
        events: asyncio.Queue[ChatEvent] = asyncio.Queue()
        kwargs.setdefault("backoff", FAST)
        cfg = BilibiliConfig.model_validate(server.config(**(config or {})))
        client = BilibiliClient(cfg, events, **kwargs)
        task = asyncio.create_task(client.run())
        tasks.append(task)
        return Running(client, events, task)

    yield _start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_bootstrap_auth_heartbeat_and_brotli_danmaku(
    server: FakeBilibili, start: Any
) -> None:
    with capture_logs() as logs:
        run = start(heartbeat_s=0.1)
        assert await run.next(Connected) == Connected(Platform.BILIBILI, str(fx.ROOM))
    # The short room id was resolved, getDanmuInfo was WBI-signed, the token used.
    (query,) = server.danmu_info_queries
    assert query["id"] == str(fx.ROOM) and query["type"] == "0"
    assert query["wts"].isdigit() and len(query["w_rid"]) == 32
    assert server.auth_bodies == [
        {
            "uid": 0,
            "roomid": fx.ROOM,
            "protover": 3,
            "platform": "web",
            "type": 2,
            "key": TOKEN,
            "buvid": BUVID,
        }
    ]
    assert f"buvid3={BUVID}" in server.cookies_seen[0]
    boot = next(e for e in logs if e["event"] == "bilibili.bootstrapped")
    assert (boot["room_id"], boot["short_id"], boot["logged_in"]) == (fx.ROOM, 1, False)

    await server.send(fx.brotli_batch(fx.danmaku(id_str="d1", text="你好"), fx.interact_word()))
    message = await run.next(ChatMessage)
    assert (message.message_id, message.text, message.channel) == ("d1", "你好", str(fx.ROOM))
    await asyncio.sleep(0.35)
    assert server.heartbeats >= 3
    assert len(server.connections) == 1


async def test_logged_in_cookie_gives_uid(server: FakeBilibili, start: Any) -> None:
    run = start(config={"cookie": "SESSDATA=abc%2C123; bili_jct=x"})
    await run.next(Connected)
    assert server.auth_bodies[0]["uid"] == 99
    assert "SESSDATA=abc%2C123" in server.cookies_seen[0]


async def test_drop_reconnects_and_superchat_deletion_retracts(server: FakeBilibili) -> None:
    config = Config.model_validate({"platforms": {"bilibili": server.config()}})
    bot = Bot(config)
    assert bot.bilibili is not None
    with capture_logs() as logs:
        tasks = [
            asyncio.create_task(bot.bilibili.run()),
            asyncio.create_task(bot.router.run(bot.events)),
        ]
        await server.wait_connections(1)
        await server.send(fx.brotli_batch(fx.superchat(sc_id=9001, price=50)))
        async with asyncio.timeout(5):
            while len(bot.queue) < 1:
                await asyncio.sleep(0.01)
        server.drop()
        await server.wait_connections(2)
        async with asyncio.timeout(5):
            while not bot.control.connections.get(Platform.BILIBILI):
                await asyncio.sleep(0.01)
        await server.send(fx.brotli_batch(fx.superchat_delete(9001), fx.danmaku(id_str="after")))
        async with asyncio.timeout(5):
            while not any(e["event"] == outcomes.RETRACTED for e in logs) or len(bot.queue) < 1:
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [i.message.message_id for i in bot.queue.snapshot()] == ["after"]
    ends = [(e["event"], e["msg_id"]) for e in logs if e["event"] in outcomes.TERMINAL_EVENTS]
    assert ends == [(outcomes.RETRACTED, "sc:9001")]
    assert [e["event"] for e in logs if e["event"].startswith("bilibili.")].count(
        "bilibili.connected"
    ) == 2
    # The token is reused across a plain reconnect.
    assert len(server.danmu_info_queries) == 1


async def test_auth_rejection_fetches_a_new_token(server: FakeBilibili, start: Any) -> None:
    server.auth_code = -101
    with capture_logs() as logs:
        start()
        await server.wait_connections(2)
        server.auth_code = 0
        await server.wait_connections(3)
    assert len(server.danmu_info_queries) >= 2
    reasons = [e["reason"] for e in logs if e["event"] == "bilibili.disconnected"]
    assert reasons[0] == "auth rejected (code -101); fetching a new token"


async def test_silent_server_is_dropped_and_reconnected(server: FakeBilibili, start: Any) -> None:
    server.answer_heartbeats = False
    run = start(heartbeat_s=10, receive_timeout_s=0.3)
    await run.next(Connected)
    lost = await run.next(Disconnected)
    assert lost.reason == "StaleConnectionError: no data within 0.3 s"
    await run.next(Connected)
    assert len(server.auth_bodies) == 2


async def test_malformed_frames_are_logged_and_the_connection_kept(
    server: FakeBilibili, start: Any
) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        for frame in (
            b"\x00" * 10,
            codec.HEADER.pack(100, 16, 0, 5, 0) + b"{}",
            b"not a packet at all, quite long enough",
            "a text frame",
        ):
            await server.send(frame)
        await server.send(fx.message_packet({"cmd": "SOMETHING_NEW"}))
        await server.send(fx.message_packet(fx.danmaku(id_str="still-ok")))
        assert (await run.next(ChatMessage)).message_id == "still-ok"
    errors = [e["error"] for e in logs if e["event"] == "bilibili.decode_error"]
    assert len(errors) == 3
    assert any(e["event"] == "bilibili.text_frame_ignored" for e in logs)
    assert [e["cmd"] for e in logs if e["event"] == "bilibili.unknown_command"] == ["SOMETHING_NEW"]
    assert len(server.connections) == 1


async def test_bootstrap_failure_falls_back_to_default_host(
    server: FakeBilibili, start: Any
) -> None:
    server.get_info_status = 412
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
    failed = next(e for e in logs if e["event"] == "bilibili.bootstrap_failed")
    assert "HTTP 412" in failed["reason"]
    # Degraded: the configured id, no token.
    assert server.auth_bodies[0]["roomid"] == 1
    assert "key" not in server.auth_bodies[0]


async def test_deeply_nested_json_mid_stream_is_skipped_and_reading_goes_on(
    server: FakeBilibili, start: Any
) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        await server.send(fx.message_packet(fx.danmaku(id_str="before")))
        await server.send(fx.deeply_nested(100_000))
        await server.send(fx.brotli_batch(fx.danmaku(id_str="after")))
        ids = [(await run.next(ChatMessage)).message_id for _ in range(2)]
    assert ids == ["before", "after"]
    assert [e["error"] for e in logs if e["event"] == "bilibili.decode_error"] == [
        f"JSON nested deeper than {codec.MAX_JSON_DEPTH}"
    ]
    assert not run.task.done()
    assert len(server.connections) == 1
    assert not [e for e in logs if e["event"] == "bilibili.disconnected"]


async def test_bomb_frames_are_refused_off_the_event_loop(
    server: FakeBilibili, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    decoded_on: dict[int, str] = {}
    real_feed = codec.BilibiliCodec.feed

    def feed(self: codec.BilibiliCodec, frame: bytes, received: float) -> Any:
        decoded_on[len(frame)] = "loop" if threading.get_ident() == loop_thread else "worker"
        return real_feed(self, frame, received)

    monkeypatch.setattr(codec.BilibiliCodec, "feed", feed)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        ticking = asyncio.create_task(ticker())
        bombs = (fx.bomb_frame(200), fx.nested_bomb_frame(10_000))
        for frame in bombs * 3:
            await server.send(frame)
        await server.send(fx.message_packet(fx.danmaku(id_str="after")))
        assert (await run.next(ChatMessage, timeout=30)).message_id == "after"
        ticking.cancel()
    errors = [e["error"] for e in logs if e["event"] == "bilibili.decode_error"]
    assert (
        errors.count(
            f"frame inflates past {codec.MAX_FRAME_INFLATED} bytes; the rest of it is dropped"
        )
        == 6
    )
    assert {decoded_on[len(frame)] for frame in bombs} == {"worker"}
    # Small frames (heartbeat replies, a lone danmaku) stay on the loop.
    assert decoded_on[len(fx.message_packet(fx.danmaku(id_str="after")))] == "loop"
    # The loop kept ticking throughout (a generous bound: no timing of the decode).
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 2 and max(gaps) < 0.5
    assert len(server.connections) == 1


async def test_a_packet_that_trips_a_codec_bug_is_logged_and_skipped(
    server: FakeBilibili, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = codec.BilibiliCodec.command_event

    def buggy(self: codec.BilibiliCodec, doc: dict[str, Any], received: float) -> Any:
        if doc.get("cmd") == "BUG":
            raise KeyError("simulated")
        return real(self, doc, received)

    monkeypatch.setattr(codec.BilibiliCodec, "command_event", buggy)
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        await server.send(fx.brotli_batch({"cmd": "BUG"}, fx.danmaku(id_str="ok")))
        assert (await run.next(ChatMessage)).message_id == "ok"
    errors = [e["error"] for e in logs if e["event"] == "bilibili.decode_error"]
    assert errors == ["unexpected KeyError: 'simulated'"]
    assert len(server.connections) == 1
