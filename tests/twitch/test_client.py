from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.events import (
    ChatEvent,
    ChatMessage,
    Connected,
    Disconnected,
    EmoteNames,
    Platform,
)
from adapters.reconnect import Backoff
from adapters.twitch import codec as codec_module
from adapters.twitch.client import TwitchClient
from adapters.twitch.config import TwitchConfig
from bot.app import Bot
from bot.chat import outcomes
from bot.config import Config
from tests.running import Running
from tests.twitch.fake_emotes import FakeEmoteApis
from tests.twitch.fake_server import FakeTwitch

PRIVMSG = "@id={id};user-id=42;display-name=Viewer :viewer!viewer@viewer PRIVMSG #chan :{text}"
FAST = Backoff(base_s=0.05, cap_s=0.2, jitter_s=0.0, stable_s=60)


@pytest.fixture
async def server() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as fake:
        yield fake


@pytest.fixture
async def start(server: FakeTwitch) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    def _start(**kwargs: Any) -> Running:
        cfg = {"enabled": True, "channels": ["chan"], "url": server.url}
        cfg.update(kwargs.pop("config", {}))
        events: asyncio.Queue[ChatEvent] = asyncio.Queue()
        kwargs.setdefault("backoff", FAST)
        client = TwitchClient(TwitchConfig.model_validate(cfg), events, **kwargs)
        task = asyncio.create_task(client.run())
        tasks.append(task)
        return Running(client, events, task)

    yield _start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_anonymous_login_joins_and_delivers_messages(server: FakeTwitch, start: Any) -> None:
    run = start()
    assert await server.wait_line("CAP REQ") == "CAP REQ :twitch.tv/tags twitch.tv/commands"
    nick = await server.wait_line("NICK")
    assert re.fullmatch(r"NICK justinfan\d+", nick)
    assert await server.wait_line("JOIN") == "JOIN #chan"
    assert not [line for line in server.sessions[0].lines if line.startswith("PASS")]
    assert await run.next(Connected) == Connected(Platform.TWITCH, "chan")
    await server.send(PRIVMSG.format(id="a1", text="hello world"))
    message = await run.next(ChatMessage)
    assert (message.message_id, message.text, message.user_name) == ("a1", "hello world", "Viewer")
    assert abs(message.received - time.monotonic()) < 5


async def test_authenticated_login(server: FakeTwitch, start: Any) -> None:
    start(config={"nick": "MyBot", "token": "oauth:secret"})
    assert await server.wait_line("PASS") == "PASS oauth:secret"
    assert await server.wait_line("NICK") == "NICK mybot"


async def test_answers_ping(server: FakeTwitch, start: Any) -> None:
    run = start()
    await run.next(Connected)
    await server.send("PING :tmi.twitch.tv")
    assert await server.wait_line("PONG", timeout=1) == "PONG :tmi.twitch.tv"


async def test_every_line_the_client_sends_ends_with_crlf(server: FakeTwitch, start: Any) -> None:
    run = start(config={"nick": "mybot", "token": "oauth:x"}, idle_ping_s=0.2)
    await run.next(Connected)
    await server.send("PING :tmi.twitch.tv")
    await server.wait_line("PONG :tmi.twitch.tv")
    await server.wait_line("PING :")
    run.client.reply(ChatMessage(Platform.TWITCH, "chan", "q1", "7", "Mod", "hi"), "hello")
    await server.wait_line("@reply-parent-msg-id")
    sent = {line.split(" ")[0] for line in server.sessions[0].lines}
    assert {"CAP", "PASS", "NICK", "JOIN", "PONG", "PING", "@reply-parent-msg-id=q1"} <= sent
    assert server.bad_line_endings == []


async def test_silent_server_gets_pinged_then_dropped(server: FakeTwitch, start: Any) -> None:
    server.answer_pings = False
    with capture_logs() as logs:
        run = start(idle_ping_s=0.3, pong_timeout_s=0.3)
        await run.next(Connected)
        assert (await server.wait_line("PING", session=0)).startswith("PING :")
        assert await run.next(Disconnected) == Disconnected(
            Platform.TWITCH, "chan", "StaleConnectionError: no PONG within 0.3 s"
        )
        assert await server.wait_line("JOIN", session=1) == "JOIN #chan"
        await run.next(Connected)
    assert [e["reason"] for e in logs if e["event"] == "twitch.disconnected"] == [
        "StaleConnectionError: no PONG within 0.3 s"
    ]


async def test_answered_ping_keeps_connection(server: FakeTwitch, start: Any) -> None:
    run = start(idle_ping_s=0.2, pong_timeout_s=0.3)
    await run.next(Connected)
    for _ in range(3):
        await server.wait_line("PING", session=0)
    assert len(server.sessions) == 1


async def test_reconnect_request_is_honoured_at_once(server: FakeTwitch, start: Any) -> None:
    # A backoff of 30 s proves the RECONNECT path does not wait for it.
    run = start(backoff=Backoff(base_s=30, jitter_s=0))
    await run.next(Connected)
    await server.send(":tmi.twitch.tv RECONNECT")
    assert await run.next(Disconnected) == Disconnected(
        Platform.TWITCH, "chan", "server asked to reconnect"
    )
    assert await server.wait_line("JOIN", session=1, timeout=2) == "JOIN #chan"
    await run.next(Connected)
    await server.send(PRIVMSG.format(id="after", text="back"))
    assert (await run.next(ChatMessage)).message_id == "after"


async def test_abrupt_close_reconnects_and_rejoins(server: FakeTwitch, start: Any) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        server.drop()
        disconnected = await run.next(Disconnected)
        assert disconnected.platform is Platform.TWITCH
        await server.wait_line("JOIN", session=1)
        await run.next(Connected)
    lost = [e for e in logs if e["event"] == "twitch.disconnected"]
    assert len(lost) == 1
    assert lost[0]["retry_in_s"] == 0.05
    assert [e["channel"] for e in logs if e["event"] == "twitch.connected"] == ["chan", "chan"]


async def test_refused_reconnects_back_off(server: FakeTwitch, start: Any) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        server.refuse = 3
        server.drop()
        await server.wait_sessions(2, timeout=5)
        await run.next(Connected)
    delays = [e["retry_in_s"] for e in logs if e["event"] == "twitch.disconnected"]
    # Drop, then three refusals: 0.05, 0.1, 0.2, then capped at 0.2.
    assert delays == [0.05, 0.1, 0.2, 0.2]
    assert server.attempts == 5


async def test_malformed_line_skipped_and_logged_next_delivered(
    server: FakeTwitch, start: Any
) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        await server.send(["@broken-tags", PRIVMSG.format(id="ok1", text="fine")])
        await server.send_raw(b"@id=u;user-id=1 :a!a@a PRIVMSG #chan :\xff\xfe\r\n")
        await server.send(PRIVMSG.format(id="ok2", text="also fine"))
        assert (await run.next(ChatMessage)).message_id == "ok1"
        assert (await run.next(ChatMessage)).message_id == "ok2"
    errors = [e for e in logs if e["event"] == "twitch.decode_error"]
    assert [e["error"] for e in errors] == ["tags with no command", "invalid UTF-8 at byte 38"]
    assert len(server.sessions) == 1


async def test_login_failure_is_fatal_no_retry(server: FakeTwitch, start: Any) -> None:
    server.reject_login = True
    with capture_logs() as logs:
        run = start(config={"nick": "mybot", "token": "oauth:wrong"})
        # run() returns by itself: no retry loop against bad credentials.
        await asyncio.wait_for(run.task, 5)
        await asyncio.sleep(0.3)
    assert server.attempts == 1
    failed = next(e for e in logs if e["event"] == "twitch.login_failed")
    assert failed["reason"] == "Login authentication failed"
    assert run.client.connected is False


async def test_replies_only_when_authenticated(server: FakeTwitch, start: Any) -> None:
    anon = start()
    await anon.next(Connected)
    message = ChatMessage(Platform.TWITCH, "chan", "q1", "7", "Mod", "!tts status")
    with capture_logs() as logs:
        anon.client.reply(message, "playing | voice default")
    assert logs[0]["event"] == "twitch.reply_not_sent"
    assert logs[0]["reason"] == "anonymous"

    authed = start(config={"nick": "mybot", "token": "oauth:x"})
    await authed.next(Connected)
    authed.client.reply(message, "playing | voice default")
    line = await server.wait_line("@reply-parent-msg-id", session=1)
    assert line == "@reply-parent-msg-id=q1 PRIVMSG #chan :playing | voice default"


async def test_replies_respect_rate_limit(server: FakeTwitch, start: Any) -> None:
    run = start(config={"nick": "mybot", "token": "oauth:x"}, send_limit=(3, 0.5))
    await run.next(Connected)
    message = ChatMessage(Platform.TWITCH, "chan", "q", "7", "Mod", "!tts status")
    began = time.monotonic()
    for i in range(5):
        run.client.reply(message, f"reply {i}")
    times = []
    for _ in range(5):
        await server.wait_line("@reply-parent-msg-id")
        times.append(time.monotonic() - began)
    assert max(times[:3]) < 0.4
    assert min(times[3:]) >= 0.5


async def test_privmsg_then_clearmsg_never_reaches_the_speaker(
    server: FakeTwitch,
) -> None:
    config = Config.model_validate(
        {
            "platforms": {"twitch": {"enabled": True, "channels": ["chan"], "url": server.url}},
            # One viewer sends both lines: no cooldown between them here.
            "policy": {"cooldown_s": 0},
        }
    )
    bot = Bot(config)
    assert bot.twitch is not None
    with capture_logs() as logs:
        tasks = [
            asyncio.create_task(bot.twitch.run()),
            asyncio.create_task(bot.router.run(bot.events)),
        ]
        async with asyncio.timeout(5):
            while not bot.control.connections.get(Platform.TWITCH):
                await asyncio.sleep(0.01)
        await server.send(
            [
                PRIVMSG.format(id="gone", text="something rude"),
                "@login=viewer;target-msg-id=gone :tmi.twitch.tv CLEARMSG #chan :something rude",
                PRIVMSG.format(id="kept", text="something nice"),
            ]
        )
        async with asyncio.timeout(5):
            while len(bot.queue) < 1 or not any(e["event"] == outcomes.RETRACTED for e in logs):
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # What the speaker would get next: only the kept message, ever.
    assert [i.message.message_id for i in bot.queue.snapshot()] == ["kept"]
    popped = bot.queue.pop_nowait()
    assert popped is not None and popped.message.message_id == "kept"
    assert bot.queue.pop_nowait() is None
    assert [(e["event"], e["msg_id"]) for e in logs if e["event"] in outcomes.TERMINAL_EVENTS] == [
        (outcomes.RETRACTED, "gone")
    ]


async def test_odd_timestamp_mid_stream_neither_kills_nor_stops_reading(
    server: FakeTwitch, start: Any
) -> None:
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        await server.send(PRIVMSG.format(id="ok1", text="before"))
        await server.send("@tmi-sent-ts=²;" + PRIVMSG.format(id="odd", text="odd ts")[1:])
        await server.send(PRIVMSG.format(id="ok2", text="after"))
        ids = [(await run.next(ChatMessage)).message_id for _ in range(3)]
    assert ids == ["ok1", "odd", "ok2"]
    assert not run.task.done()
    assert len(server.sessions) == 1
    assert not [e for e in logs if e["event"] == "twitch.disconnected"]


async def test_a_line_that_trips_a_codec_bug_is_logged_and_skipped(
    server: FakeTwitch, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = codec_module.to_events

    def buggy(msg: codec_module.IrcMessage, *args: Any) -> list[codec_module.TwitchEvent]:
        if msg.tags.get("id") == "bug":
            raise ValueError("simulated bug")
        return real(msg, *args)

    monkeypatch.setattr(codec_module, "to_events", buggy)
    with capture_logs() as logs:
        run = start()
        await run.next(Connected)
        await server.send([PRIVMSG.format(id="bug", text="x"), PRIVMSG.format(id="ok", text="y")])
        assert (await run.next(ChatMessage)).message_id == "ok"
    (error,) = [e for e in logs if e["event"] == "twitch.decode_error"]
    assert error["error"] == "unexpected ValueError: simulated bug"
    assert len(server.sessions) == 1


@pytest.fixture
async def emote_apis() -> AsyncIterator[FakeEmoteApis]:
    async with FakeEmoteApis() as fake:
        yield fake


def with_emotes(start: Any, apis: FakeEmoteApis, tmp_path: Path, **kwargs: Any) -> Running:
    return start(
        config={"emote_apis": apis.apis},
        emote_services=["7tv", "bttv", "ffz"],
        emote_cache_dir=tmp_path / "emotes",
        **kwargs,
    )


async def next_names(run: Running, names: frozenset[str]) -> EmoteNames:
    """The EmoteNames event carrying `names` (partial ones before it skipped)."""
    async with asyncio.timeout(5):
        while (event := await run.next(EmoteNames)).names != names:
            pass
    return event


async def test_roomstate_starts_the_channel_s_emote_fetch(
    server: FakeTwitch, start: Any, emote_apis: FakeEmoteApis, tmp_path: Path
) -> None:
    run = with_emotes(start, emote_apis, tmp_path)
    event = await next_names(run, emote_apis.union())
    assert (event.platform, event.channel) == (Platform.TWITCH, "chan")
    # The fake server's ROOMSTATE names room 1: the channel sets are asked for it.
    assert {room for _, scope, room in emote_apis.requests if scope == "channel"} == {"1"}


async def test_a_reconnect_to_the_same_room_keeps_the_fetch_a_new_room_restarts_it(
    server: FakeTwitch, start: Any, emote_apis: FakeEmoteApis, tmp_path: Path
) -> None:
    run = with_emotes(start, emote_apis, tmp_path)
    await next_names(run, emote_apis.union())
    (fetch,) = emote_tasks()
    server.drop()
    await server.wait_line("JOIN", session=1)
    await server.send(PRIVMSG.format(id="after", text="back"))  # after the new ROOMSTATE
    assert (await run.next(ChatMessage)).message_id == "after"
    assert emote_tasks() == [fetch]

    # A channel not joined is none of the client's business.
    await server.send("@room-id=5 :tmi.twitch.tv ROOMSTATE #other")
    # The channel's room id changed: its sets are fetched again, for the new id.
    await server.send("@room-id=2 :tmi.twitch.tv ROOMSTATE #chan")
    async with asyncio.timeout(5):
        while sum(1 for _, _, room in emote_apis.requests if room == "2") < 3:
            await asyncio.sleep(0.01)
    assert not [room for _, _, room in emote_apis.requests if room == "5"]
    assert fetch.cancelled() and len(emote_tasks()) == 1


async def test_a_hanging_emote_service_never_holds_up_chat(
    server: FakeTwitch, start: Any, emote_apis: FakeEmoteApis, tmp_path: Path
) -> None:
    emote_apis.set_all("slow")
    run = with_emotes(start, emote_apis, tmp_path)
    await run.next(Connected)
    async with asyncio.timeout(5):
        while len(emote_apis.requests) < 6:
            await asyncio.sleep(0.01)
    began = time.monotonic()
    await server.send(PRIVMSG.format(id="m1", text="still read"))
    assert (await run.next(ChatMessage)).message_id == "m1"
    assert time.monotonic() - began < 1.0
    assert not [e for e in drain(run) if isinstance(e, EmoteNames)]


async def test_the_emote_fetch_ends_with_the_client(
    server: FakeTwitch, start: Any, emote_apis: FakeEmoteApis, tmp_path: Path
) -> None:
    emote_apis.set_all("slow")
    run = with_emotes(start, emote_apis, tmp_path)
    await run.next(Connected)
    async with asyncio.timeout(5):
        while not emote_tasks():
            await asyncio.sleep(0.01)
    (fetch,) = emote_tasks()
    run.task.cancel()
    await asyncio.gather(run.task, return_exceptions=True)
    assert fetch.done() and not emote_tasks()


async def test_no_emote_services_no_fetch(
    server: FakeTwitch, start: Any, emote_apis: FakeEmoteApis
) -> None:
    run = start(config={"emote_apis": emote_apis.apis})
    await run.next(Connected)
    await server.send(PRIVMSG.format(id="m1", text="hi"))
    await run.next(ChatMessage)
    assert not emote_tasks() and not emote_apis.requests


def emote_tasks() -> list[asyncio.Task[Any]]:
    return [
        t for t in asyncio.all_tasks() if t.get_name().startswith("twitch-emotes") and not t.done()
    ]


def drain(run: Running) -> list[ChatEvent]:
    events = []
    while not run.events.empty():
        events.append(run.events.get_nowait())
    return events


async def test_third_party_emotes_are_stripped_from_what_the_bot_reads(
    server: FakeTwitch, emote_apis: FakeEmoteApis
) -> None:
    twitch = {"enabled": True, "channels": ["chan"], "url": server.url}
    config = Config.model_validate(
        {
            "platforms": {"twitch": {**twitch, "emote_apis": emote_apis.apis}},
            "policy": {"cooldown_s": 0},
        }
    )
    bot = Bot(config)
    assert bot.twitch is not None
    with capture_logs() as logs:
        tasks = [
            asyncio.create_task(bot.twitch.run()),
            asyncio.create_task(bot.router.run(bot.events)),
        ]
        async with asyncio.timeout(5):
            key = (Platform.TWITCH, "chan")
            while bot.control.policy_state.emote_words.get(key) != emote_apis.union():
                await asyncio.sleep(0.01)
        await server.send(
            [
                PRIVMSG.format(id="only", text="KEKW catJAM  OMEGALUL"),
                PRIVMSG.format(id="mixed", text="KEKW that was close Pog"),
                PRIVMSG.format(id="case", text="kekw is a word here"),
            ]
        )
        async with asyncio.timeout(5):
            while len(bot.queue) < 2:
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [i.text for i in bot.queue.snapshot()] == ["that was close", "kekw is a word here"]
    filtered = [(e["msg_id"], e["reason"]) for e in logs if e["event"] == outcomes.FILTERED]
    assert filtered == [("only", "empty")]


@pytest.mark.parametrize(
    ("policy", "asked"),
    [
        ({"third_party_emotes": ["ffz"]}, {"ffz"}),
        ({"third_party_emotes": []}, set()),
        ({"emotes": "keep"}, set()),  # nothing to strip: nothing fetched
    ],
)
async def test_the_bot_fetches_the_services_its_policy_names(
    server: FakeTwitch, emote_apis: FakeEmoteApis, policy: dict[str, Any], asked: set[str]
) -> None:
    twitch = {"enabled": True, "channels": ["chan"], "url": server.url}
    bot = Bot(
        Config.model_validate(
            {"platforms": {"twitch": {**twitch, "emote_apis": emote_apis.apis}}, "policy": policy}
        )
    )
    assert bot.twitch is not None
    task = asyncio.create_task(bot.twitch.run())
    try:
        async with asyncio.timeout(5):
            while not isinstance(await bot.events.get(), Connected):
                pass
        await server.send(PRIVMSG.format(id="m1", text="hi"))  # after ROOMSTATE
        async with asyncio.timeout(5):
            while not isinstance(await bot.events.get(), ChatMessage):
                pass
            while asked and len(emote_apis.requests) < 2:
                await asyncio.sleep(0.01)
        # The fetch starts on ROOMSTATE, before the message: there is one, or none.
        assert len(emote_tasks()) == (1 if asked else 0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert {service for service, _, _ in emote_apis.requests} == asked
    assert not emote_tasks()
