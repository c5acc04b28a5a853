from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.bilibili import codec
from adapters.bilibili.config import BilibiliConfig
from adapters.bilibili.open_client import BilibiliOpenClient
from adapters.events import ChatEvent, ChatMessage, Connected, Disconnected, Platform, Role
from adapters.reconnect import Backoff
from bot.config import Config, PlatformsConfig
from bot.instance import AlreadyRunning, ChannelLocks
from tests.bilibili import fixtures as fx
from tests.bilibili import open_fixtures as ofx
from tests.bilibili.fake_open_platform import CODE, KEY_ID, KEY_SECRET, FakeOpenPlatform
from tests.running import Running

FAST = Backoff(base_s=0.05, cap_s=0.2, jitter_s=0.0, stable_s=60)


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenPlatform]:
    async with FakeOpenPlatform() as fake:
        yield fake


@pytest.fixture
async def start(server: FakeOpenPlatform, tmp_path: Path) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    def _start(config: dict[str, Any] | None = None, **kwargs: Any) -> Running[Any]:
        events: asyncio.Queue[ChatEvent] = asyncio.Queue()
        kwargs.setdefault("backoff", FAST)
        kwargs.setdefault("record_dir", tmp_path / "records")
        cfg = BilibiliConfig.model_validate(server.config(**(config or {})))
        client = BilibiliOpenClient(cfg, events, **kwargs)
        task = asyncio.create_task(client.run())
        tasks.append(task)
        return Running(client, events, task)

    yield _start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def stop(run: Running[Any]) -> None:
    run.task.cancel()
    await asyncio.gather(run.task, return_exceptions=True)


def secrets_in(logs: list[dict[str, Any]]) -> list[str]:
    text = json.dumps(logs, ensure_ascii=False, default=str)
    return [s for s in (CODE, KEY_SECRET, KEY_ID) if s in text]


async def test_start_auth_events_heartbeats_and_end_on_cancel(
    server: FakeOpenPlatform, start: Any, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        run = start(app_heartbeat_s=0.05, heartbeat_s=0.05)
        assert await run.next(Connected) == Connected(Platform.BILIBILI, str(fx.ROOM))
        game_id = server.newest_game
        # The first link was dead: the second one was used, with the start's auth body.
        assert server.authed[0][0] == game_id
        await server.send(fx.message_packet(ofx.danmaku("你好", msg_id="m1")))
        message = await run.next(ChatMessage)
        assert (message.message_id, message.user_name, message.text) == ("m1", "小明", "你好")
        await server.send(fx.message_packet(ofx.danmaku("我是主播", open_id=ofx.ANCHOR_OPEN_ID)))
        assert (await run.next(ChatMessage)).roles == {Role.BROADCASTER}
        async with asyncio.timeout(5):
            while server.paths().count("heartbeat") < 2 or server.heartbeats < 2:
                await asyncio.sleep(0.01)
        assert list(server.games) == [game_id]
        assert (tmp_path / "records").is_dir() and any((tmp_path / "records").iterdir())
        await stop(run)
    assert server.paths()[-1] == f"end:{game_id}"
    assert server.games == {}
    assert server.refused == []  # every call was signed as the platform checks
    assert not any((tmp_path / "records").iterdir())  # ended: nothing left to end
    started = next(e for e in logs if e["event"] == "bilibili.open_started")
    assert (started["game_id"], started["room_id"], started["anchor"]) == (
        game_id,
        fx.ROOM,
        "主播本人",
    )
    assert any(e["event"] == "bilibili.open_ended" and e["game_id"] == game_id for e in logs)
    connected = next(e for e in logs if e["event"] == "bilibili.connected")
    assert connected["mode"] == "open"
    assert any(e["event"] == "bilibili.open_link_failed" for e in logs)
    assert secrets_in(logs) == []


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"identity_code": "WRONGCODE123"}, 7007),
        ({"access_key_secret": "not-the-secret"}, 4002),
        ({"access_key_id": "someone-else"}, 4001),
        ({"app_id": 42}, 8002),
    ],
)
async def test_a_wrong_code_or_key_is_a_clear_stop_without_retries(
    server: FakeOpenPlatform, start: Any, config: dict[str, Any], code: int
) -> None:
    with capture_logs() as logs:
        run = start(config=config)
        async with asyncio.timeout(5):
            await asyncio.shield(run.task)
        await asyncio.sleep(0.3)  # several backoffs' worth: nothing more is tried
    assert len(server.calls) + len(server.refused) == 1
    (failed,) = [e for e in logs if e["event"] == "bilibili.open_failed"]
    assert failed["code"] == code and failed["stopped"] is True
    assert failed["message"] and failed["hint"]
    assert failed["log_level"] == "error"
    assert secrets_in(logs) == []


async def test_a_lost_app_heartbeat_ends_the_session_and_starts_another(
    server: FakeOpenPlatform, start: Any
) -> None:
    with capture_logs() as logs:
        run = start(app_heartbeat_s=0.05)
        await run.next(Connected)
        first = server.newest_game
        server.games.pop(first)  # the platform forgot it: heartbeats get 7003
        lost = await run.next(Disconnected)
        refused = "refused: code 7003 (心跳过期或GameId错误)"
        assert lost.reason == f"session lost: app heartbeat {refused}"
        await run.next(Connected)
    assert server.newest_game != first
    assert server.paths().count("start") == 2
    reasons = [e for e in logs if e["event"] == "bilibili.disconnected"]
    assert reasons[0]["retry_in_s"] > 0


async def test_an_unanswered_app_heartbeat_is_a_lost_session(
    server: FakeOpenPlatform, start: Any
) -> None:
    run = start(app_heartbeat_s=0.05, http_timeout_s=0.3, end_timeout_s=0.3)
    await run.next(Connected)
    first = server.newest_game
    server.answer_heartbeats = False
    lost = await run.next(Disconnected)
    assert lost.reason == "session lost: app heartbeat no reply within 0.3 s"
    server.answer_heartbeats = True
    await run.next(Connected)
    # The old session was ended before the new start (the platform allows one).
    paths = server.paths()
    assert paths.index(f"end:{first}") < len(paths) - 1 - paths[::-1].index("start")
    assert first not in server.games


async def test_an_oversized_reply_is_not_read_past_the_cap_and_the_start_retried(
    server: FakeOpenPlatform, start: Any
) -> None:
    server.oversize_starts = 1
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
    (failed, *_) = [e for e in logs if e["event"] == "bilibili.disconnected"]
    assert (
        failed["reason"] == "start failed: OpenReplyError: /v2/app/start: reply over 262144 bytes"
    )
    assert server.paths().count("start") == 2


async def test_the_platform_ending_the_session_starts_a_new_one(
    server: FakeOpenPlatform, start: Any
) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        ended = await server.end_session()
        lost = await run.next(Disconnected)
        assert lost.reason == "the platform ended the session"
        await run.next(Connected)
        await server.send(fx.message_packet(ofx.danmaku(msg_id="after")))
        assert (await run.next(ChatMessage)).message_id == "after"
    assert server.newest_game != ended
    assert any(e["event"] == "bilibili.open_ended_by_platform" for e in logs)


async def test_a_dropped_socket_ends_the_session_before_the_next_start(
    server: FakeOpenPlatform, start: Any
) -> None:
    run = start()
    await run.next(Connected)
    first = server.newest_game
    server.drop()
    await run.next(Disconnected)
    await run.next(Connected)
    assert server.paths() == ["start", f"end:{first}", "start"]
    assert list(server.games) == [server.newest_game]


async def test_a_session_left_by_an_earlier_run_is_ended_before_the_start(
    server: FakeOpenPlatform, start: Any, tmp_path: Path
) -> None:
    # An earlier run stopped without its end reaching the platform: it still
    # holds the session, whose id it left on disk.
    earlier = start(end_timeout_s=0.3)
    await earlier.next(Connected)
    held = server.newest_game
    server.end_code = 5000
    await stop(earlier)
    assert list(server.games) == [held]
    server.end_code = None
    server.calls.clear()
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
    assert server.paths() == [f"end:{held}", "start"]
    assert list(server.games) == [server.newest_game] != [held]
    assert any(e["event"] == "bilibili.open_held" and e["game_id"] == held for e in logs)


async def test_without_a_record_a_held_session_is_waited_out(
    server: FakeOpenPlatform, start: Any
) -> None:
    server.hold_session()
    server.session_timeout_s = 0.5
    with capture_logs() as logs:
        run = start()
        await run.next(Connected, timeout=10)
    busy = [e for e in logs if e["event"] == "bilibili.open_failed"]
    assert busy and all(e["code"] == 7002 and e["stopped"] is False for e in busy)
    assert all(e["log_level"] == "warning" for e in busy)
    assert busy[0]["hint"] == "the room's sessions are taken; retrying until the held one expires"
    assert server.paths().count("start") == len(busy) + 1


async def test_malformed_packets_are_logged_and_the_session_kept(
    server: FakeOpenPlatform, start: Any
) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        bad = dict(ofx.superchat())
        bad["data"] = {**bad["data"], "message_id": "9"}
        for frame in (
            b"\x00" * 10,
            codec.HEADER.pack(100, 16, 0, 5, 0) + b"{}",
            fx.message_packet(bad),
            fx.deeply_nested(100_000),
            fx.message_packet({"cmd": "LIVE_OPEN_PLATFORM_NEW_THING", "data": {}}),
            "a text frame",
        ):
            await server.send(frame)
        await server.send(fx.message_packet(ofx.danmaku(msg_id="still-ok")))
        assert (await run.next(ChatMessage)).message_id == "still-ok"
    errors = [e["error"] for e in logs if e["event"] == "bilibili.decode_error"]
    assert len(errors) == 4
    assert [e["cmd"] for e in logs if e["event"] == "bilibili.unknown_command"] == [
        "LIVE_OPEN_PLATFORM_NEW_THING"
    ]
    assert len(server.authed) == 1
    assert not [e for e in logs if e["event"] == "bilibili.disconnected"]


async def test_a_refused_socket_auth_starts_a_new_session(
    server: FakeOpenPlatform, start: Any
) -> None:
    server.refuse_auth = 1
    run = start()
    await run.next(Connected)
    first = next(iter(server.auth_bodies))
    assert server.paths() == ["start", f"end:{first}", "start"]
    assert len(server.connections) == 2


def test_open_mode_locks_on_the_identity_code_not_a_room(tmp_path: Path) -> None:
    def platforms(code: str) -> PlatformsConfig:
        cfg = {"bilibili": {**FakeOpenPlatform().config(), "identity_code": code}}
        return Config.model_validate({"platforms": cfg}).platforms

    first = ChannelLocks(platforms(CODE), tmp_path)
    first.acquire()
    try:
        ChannelLocks(platforms("OTHERCODE1234"), tmp_path).acquire()
        with pytest.raises(AlreadyRunning, match="already reading bilibili code-"):
            ChannelLocks(platforms(CODE), tmp_path).acquire()
    finally:
        first.release()
    assert not any(CODE in p.name for p in tmp_path.iterdir())
