"""`ishowtts serve` and the bot as its client: a real engine server (engine/serve.py)
on 127.0.0.1 over the tiny engine, reached by `RemoteEngine` and by a raw
WebSocket client speaking the wire protocol; and at the end the two commands as
subprocesses, the bot reading Twitch chat through the server while it is killed
and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from adapters.reconnect import Backoff
from bot.app import Bot
from bot.audio.player import Player
from bot.audio.speaker import Speaker
from bot.chat.outcomes import TERMINAL_EVENTS
from bot.config import Config
from bot.panel.web import create_app
from bot.remote_engine import (
    EngineRefused,
    EngineUnavailable,
    RemoteEngine,
    RemoteVoices,
    RequestRefused,
)
from engine import serve as engine_serve
from engine import wire
from engine.checkpoints import ModelFiles
from engine.config import EngineConfig, ServeConfig
from engine.serve import EngineServer
from engine.synth import Engine
from engine.voices import VoiceLibrary
from tests.botprocess import ROOT, TIMEOUT, BotProcess, command
from tests.engine.tiny import TINY_ARCH, write_voice
from tests.runconfig import free_port, write_run_config
from tests.twitch.fake_server import FakeTwitch

FAST = Backoff(base_s=0.05, cap_s=0.2, jitter_s=0.0, stable_s=60.0)
LONG = " ".join(f"This is sentence number {n} of a long line from chat." for n in range(12))


@pytest.fixture(scope="module")
def served(tiny_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One tiny engine for the module's servers (voices alice and mei; a fault file)."""
    root = tmp_path_factory.mktemp("served")
    write_voice(root / "voices", "alice", "This is the reference clip.")
    write_voice(root / "voices", "mei", "这是参考音频。", seconds=2.5)
    config = EngineConfig(
        arch=TINY_ARCH, nfe_steps=4, stall_timeout_s=10.0, fault_file=root / "fault"
    )
    engine = Engine(config, VoiceLibrary(root / "voices"), tiny_files)
    engine.start()
    engine.ready.result(timeout=120)
    yield engine
    engine.close()


def voices_dir(engine: Engine) -> Path:
    return engine.voices.directory


@contextlib.asynccontextmanager
async def serving(engine: Engine, port: int = 0, **settings: Any) -> AsyncIterator[EngineServer]:
    sock = socket.create_server(("127.0.0.1", port))
    server = EngineServer(engine, engine.voices, ServeConfig(**settings), default_voice="alice")
    await server.start(sock)
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def remote(
    url: str,
    local: Path | None = None,
    keepalive_s: float = 5.0,
    voices: RemoteVoices | None = None,
    **fields: Any,
) -> AsyncIterator[RemoteEngine]:
    engine = RemoteEngine(
        EngineConfig(url=url, **fields),
        voices,
        local_voices=VoiceLibrary(local, builtins=False) if local else None,
        backoff=FAST,
        keepalive_s=keepalive_s,
    )
    engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()


@contextlib.asynccontextmanager
async def raw(
    url: str, hello: dict[str, Any] | None = None
) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """A bare WebSocket client: says `hello` (version 1 by default) and hands over
    the server's first answer."""
    ws = await connect(url, compression=None, proxy=None, max_size=2**26)
    try:
        with contextlib.suppress(ConnectionClosed):  # refused before its hello was read
            await ws.send(json.dumps(hello or {"type": "hello", "version": 1}))
        first = await asyncio.wait_for(ws.recv(), 10)
        yield ws, json.loads(first)
    finally:
        with contextlib.suppress(ConnectionClosed):  # refused: the server closed it
            await ws.close()


async def reply(ws: ClientConnection) -> dict[str, Any]:
    """The next control message, past audio frames and pushed voice lists."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), 30)
        if isinstance(frame, str):
            doc: dict[str, Any] = json.loads(frame)
            if doc["type"] != "voices":
                return doc


async def collect(engine: Engine | RemoteEngine, text: str, voice: str, seed: int) -> list[Any]:
    return [chunk async for chunk in engine.stream(text, voice, seed)]


def clip(seconds: float = 3.0, amplitude: float = 0.3, tmp: Path | None = None) -> bytes:
    """A speech-like WAV clip's bytes (tests/engine/tiny.py's test voice)."""
    folder = tmp or Path("clips")
    path = write_voice(folder, "clip", seconds=seconds, amplitude=amplitude)
    return path.read_bytes()


# streaming -----------------------------------------------------------------------------
async def test_a_line_over_the_wire_is_the_local_engines_audio(served: Engine) -> None:
    local = await collect(served, "Hello there. How are you today?", "alice", seed=3)
    async with serving(served) as server, remote(server.url) as client:
        with capture_logs() as logs:
            await client.wait_ready()
        assert client.state == "up"
        assert client.voices.names() == served.voices.names()
        assert {"alice", "mei", "builtin-en"} <= set(client.voices.names())
        over_the_wire = await collect(client, "Hello there. How are you today?", "alice", 3)
    assert len(over_the_wire) == len(local) >= 1
    for theirs, ours in zip(over_the_wire, local, strict=True):
        assert theirs.dtype == np.float32 and np.array_equal(theirs, ours)
    (ready,) = [e for e in logs if e["event"] == "engine.ready"]
    assert ready["remote"] is True and ready["device"] == "cpu" and ready["url"] == server.url


async def test_int16_audio_is_the_engines_within_a_step(served: Engine) -> None:
    local = np.concatenate(await collect(served, "A short line.", "mei", seed=5))
    async with serving(served) as server, remote(server.url, wire_format="int16") as client:
        await client.wait_ready()
        half = np.concatenate(await collect(client, "A short line.", "mei", seed=5))
    assert half.shape == local.shape
    assert np.abs(half - np.clip(local, -1, 1)).max() <= 1.5 / 32768


async def test_two_clients_at_once_each_get_their_own_line(served: Engine) -> None:
    lines = [("First client speaking now.", "alice", 1), ("Second one here.", "mei", 2)]
    expected = [np.concatenate(await collect(served, *line)) for line in lines]
    async with serving(served) as server, remote(server.url) as one, remote(server.url) as two:
        await asyncio.gather(one.wait_ready(), two.wait_ready())
        got = await asyncio.gather(collect(one, *lines[0]), collect(two, *lines[1]))
    for chunks, want in zip(got, expected, strict=True):
        assert np.array_equal(np.concatenate(chunks), want)


async def test_leaving_a_stream_early_stops_the_engine_at_once(served: Engine) -> None:
    async with serving(served) as server, remote(server.url) as client:
        await client.wait_ready()
        with capture_logs() as logs:
            stream = client.stream(LONG, "alice", 1)
            await anext(stream)
            await stream.aclose()
            async with asyncio.timeout(10):
                while not any(e["event"] == "engine.cancelled" for e in logs):
                    await asyncio.sleep(0.02)
        # The connection carries on: the next line is whole.
        assert await collect(client, "Still here.", "alice", 1)


async def test_requests_are_refused_with_their_reason(served: Engine) -> None:
    async with (
        serving(served, max_text_chars=40) as server,
        remote(server.url) as client,
    ):
        await client.wait_ready()
        with pytest.raises(RequestRefused) as unknown:
            await collect(client, "Who is this?", "nobody", 1)
        assert unknown.value.code == wire.UNKNOWN_VOICE
        assert "no voice 'nobody' here (have: alice, mei" in unknown.value.message
        with pytest.raises(RequestRefused) as long:
            await collect(client, "x" * 41, "alice", 1)
        assert long.value.code == wire.TOO_LARGE
        with pytest.raises(ValueError, match="speed"):
            await anext(client.stream("Too fast.", "alice", speed=5.0))
        # The server refuses a long line itself, naming the request.
        async with raw(server.url) as (ws, ready):
            assert ready["type"] == "ready" and ready["limits"]["max_text_chars"] == 40
            await ws.send(wire.encode(wire.Synthesize(9, "y" * 41, "alice")))
            refused = await reply(ws)
        assert (refused["code"], refused["id"]) == (wire.TOO_LARGE, 9)
        assert "takes 40 at most" in refused["message"]


async def test_per_request_steps_and_speed_reach_the_engine(served: Engine) -> None:
    async with serving(served) as server, remote(server.url) as client:
        await client.wait_ready()
        before = served.steps_run
        await collect(client, "Count my steps.", "alice", 1)
        default_steps = served.steps_run - before
        before = served.steps_run
        chunks = [c async for c in client.stream("Count my steps.", "alice", 1, steps=2)]
        assert chunks and served.steps_run - before == default_steps // 2
        slow = np.concatenate([c async for c in client.stream("Slowly.", "alice", 1, speed=0.5)])
        fast = np.concatenate([c async for c in client.stream("Slowly.", "alice", 1, speed=2.0)])
    assert len(slow) > len(fast)


async def test_the_rate_limit_refuses_with_when_to_come_back(served: Engine) -> None:
    # The hello takes one of the two; one line passes, the next is refused.
    async with (
        serving(served, requests_per_minute=1, burst=2) as server,
        remote(server.url) as client,
    ):
        await client.wait_ready()
        assert await collect(client, "One.", "alice", 1)
        with pytest.raises(RequestRefused) as info:
            await collect(client, "Two.", "alice", 1)
    assert info.value.code == wire.RATE_LIMITED
    assert "try again in" in info.value.message


async def test_malformed_frames_are_answered_and_the_connection_lives_on(served: Engine) -> None:
    async with serving(served) as server, raw(server.url) as (ws, ready):
        assert ready["type"] == "ready" and ready["version"] == 1
        for junk in ("not json", '{"type": "dance"}', '{"type": "cancel", "id": "x"}'):
            await ws.send(junk)
            error = await reply(ws)
            assert error["type"] == "error" and error["code"] == wire.BAD_REQUEST
        await ws.send('{"type": "synthesize", "id": 4, "text": "hi", "voice": "../x"}')
        error = await reply(ws)
        assert (error["code"], error["id"]) == (wire.BAD_REQUEST, 4)
        await ws.send(b"\x01\x01\x00\x00")
        assert (await reply(ws))["code"] == wire.BAD_REQUEST
        await ws.send(wire.encode(wire.ListVoices()))
        listed = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert listed == {"type": "voices", "voices": ready["voices"], "default_voice": "alice"}


# access --------------------------------------------------------------------------------
async def test_the_token_is_required_and_wrong_ones_lock_the_address_out(
    served: Engine,
) -> None:
    async with serving(served, token="s3cret") as server:
        async with remote(server.url) as none:
            with pytest.raises(EngineRefused, match="needs a token"):
                await asyncio.wait_for(none.wait_ready(), 10)
        async with remote(server.url, token="guess") as wrong:
            with pytest.raises(EngineRefused, match="wrong token"):
                await asyncio.wait_for(wrong.wait_ready(), 10)
        async with remote(server.url, token="s3cret") as right:
            await asyncio.wait_for(right.wait_ready(), 10)
            assert await collect(right, "Welcome.", "alice", 1)
        # The right token cleared the count: five wrong ones more, and the address
        # must wait (as the panel's login does: engine/access.py).
        for _ in range(5):
            async with raw(server.url, {"type": "hello", "version": 1, "token": "x"}) as (_, a):
                assert a["code"] == wire.AUTH
        hello = {"type": "hello", "version": 1, "token": "s3cret"}
        async with raw(server.url, hello) as (_, locked):
            assert locked["code"] == wire.RATE_LIMITED
            assert "too many wrong tokens" in locked["message"]


async def test_another_wire_version_is_refused_with_the_version_code(served: Engine) -> None:
    async with (
        serving(served) as server,
        raw(server.url, {"type": "hello", "version": 2, "new": 1}) as (ws, answer),
    ):
        assert answer["type"] == "error" and answer["code"] == wire.VERSION_MISMATCH
        assert "speaks wire version 1" in answer["message"]
        await asyncio.wait_for(ws.wait_closed(), 5)


async def test_a_client_that_never_says_hello_is_closed(
    served: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "HELLO_TIMEOUT_S", 0.2)
    async with (
        serving(served) as server,
        connect(server.url, proxy=None) as ws,
    ):
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (answer["code"], answer["message"]) == (wire.BAD_REQUEST, "no hello within 0.2 s")
        await asyncio.wait_for(ws.wait_closed(), 5)


async def test_a_web_page_cannot_use_the_server(served: Engine) -> None:
    # Browsers send an Origin with every WebSocket handshake (and no CORS applies):
    # a page the streamer opens must not speak or upload through a local server.
    async with serving(served) as server:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url, proxy=None, origin=Origin("https://evil.example"))
        assert refused.value.response.status_code == 403
        async with raw(server.url) as (_, first):  # a bot sends no Origin
            assert first["type"] == "ready"


async def test_connections_that_never_say_hello_cannot_fill_the_server(
    served: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "HELLO_TIMEOUT_S", 5.0)
    async with serving(served, max_clients=2) as server:
        silent = [
            await connect(server.url, proxy=None) for _ in range(engine_serve.PENDING_PER_ADDRESS)
        ]
        try:
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, proxy=None)
            assert refused.value.response.status_code == 429
            for ws in silent:
                await ws.close()
            await asyncio.sleep(0.2)
            async with raw(server.url) as (_, first), raw(server.url) as (_, second):
                assert first["type"] == second["type"] == "ready"
        finally:
            for ws in silent:
                await ws.close()


async def test_connections_beyond_max_clients_are_busy(served: Engine) -> None:
    async with serving(served, max_clients=1) as server, raw(server.url) as (_, first):
        assert first["type"] == "ready"
        async with raw(server.url) as (_, second):
            assert second["code"] == wire.BUSY


def test_a_server_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a token"):
        ServeConfig(host="0.0.0.0")
    config = tmp_path / "c.yaml"
    config.write_text("logging: {format: json}\n")
    result = subprocess.run(
        command("serve", "--config", str(config), "--host", "0.0.0.0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ISHOWTTS_SERVE_TOKEN": ""},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: serve.token: listening on 0.0.0.0 (not loopback) needs a token "
        "(set serve.token or ISHOWTTS_SERVE_TOKEN)"
    )


def test_serve_refuses_a_taken_port_and_a_bots_config(
    tiny_files: ModelFiles, tmp_path: Path
) -> None:
    # Both are told before any model is loaded.
    config = write_run_config(tmp_path, tiny_files)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = subprocess.run(
            command("serve", "--config", str(config), "--port", port),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert f"start-up error: port {port} on 127.0.0.1 is already in use" in result.stderr
    bots = write_run_config(tmp_path / "bot", tiny_files, engine={"url": "ws://gpu-box:8766"})
    result = subprocess.run(
        command("serve", "--config", str(bots)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "start-up error: engine.url is set (ws://gpu-box:8766/ws)" in result.stderr


# voice uploads -------------------------------------------------------------------------
async def upload(
    ws: ClientConnection,
    id: int,
    name: str,
    data: bytes,
    transcript: str = "This is the uploaded clip.",
    replace: bool = False,
) -> dict[str, Any]:
    message = wire.UploadVoice(id, name, transcript, "wav", len(data), replace=replace)
    await ws.send(wire.encode(message))
    await ws.send(wire.encode_clip(id, data))
    return await reply(ws)


def staging_left(engine: Engine) -> list[str]:
    return [p.name for p in voices_dir(engine).iterdir() if p.name.startswith(".upload-")]


async def test_an_uploaded_voice_is_checked_stored_listed_and_usable(
    served: Engine, tmp_path: Path
) -> None:
    async with serving(served) as server, raw(server.url) as (ws, _):
        answer = await upload(ws, 1, "erin", clip(tmp=tmp_path))
        assert answer == {"type": "uploaded", "id": 1, "name": "erin", "voices": answer["voices"]}
        assert "erin" in answer["voices"]
        await ws.send(wire.encode(wire.Synthesize(2, "Now in my voice.", "erin", seed=1)))
        frames = []
        while True:
            frame = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(frame, str):
                done = json.loads(frame)
                break
            frames.append(wire.decode_binary(frame))
    assert done["type"] == "done" and done["audio_s"] > 0 and frames
    stored = sorted(p.name for p in voices_dir(served).glob("erin.*"))
    assert stored == ["erin.txt", "erin.wav"]
    assert (voices_dir(served) / "erin.txt").read_text() == "This is the uploaded clip."
    assert staging_left(served) == []


async def test_uploads_are_taken_one_at_a_time_per_connection(
    served: Engine, tmp_path: Path
) -> None:
    # Each upload holds its clip until stored: a client cannot stack many of them.
    data = clip(tmp=tmp_path)
    async with serving(served) as server, raw(server.url) as (ws, _):
        for id, name in ((1, "first"), (2, "second")):
            message = wire.UploadVoice(id, name, "This is the uploaded clip.", "wav", len(data))
            await ws.send(wire.encode(message))
            await ws.send(wire.encode_clip(id, data))
        answers = {}
        for _ in range(2):
            answer = await reply(ws)
            answers[answer["id"]] = answer
        assert answers[1]["type"] == "uploaded"
        assert answers[2]["type"] == "error" and answers[2]["code"] == wire.BUSY
        assert "one voice upload at a time" in answers[2]["message"]
        # Once answered, the next one is taken.
        assert (await upload(ws, 3, "second", data))["type"] == "uploaded"


@pytest.mark.parametrize(
    "name", ["../x", "..", "con", "NUL", "a b", "x" * 200, "émile", "名字", "a.wav", ""]
)
async def test_hostile_upload_names_are_refused(served: Engine, tmp_path: Path, name: str) -> None:
    before = sorted(p.name for p in voices_dir(served).parent.rglob("*"))
    async with serving(served) as server, raw(server.url) as (ws, _):
        answer = await upload(ws, 1, name, clip(tmp=tmp_path))
        assert (answer["code"], answer["id"]) == (wire.BAD_REQUEST, 1)
        assert "is not allowed" in answer["message"]
        # Its clip was dropped: the connection carries on.
        await ws.send(wire.encode(wire.ListVoices()))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "voices"
    assert sorted(p.name for p in voices_dir(served).parent.rglob("*")) == before


@pytest.mark.parametrize(
    ("data", "transcript", "says"),
    [
        ("noise", "Words.", "unreadable audio"),
        ("silent", "Words.", "is silent"),
        ("short", "Words.", "needs at least 1 s"),
        ("good", "", "felix.txt is empty"),
    ],
)
async def test_bad_clips_are_refused_with_the_voice_checks_reason(
    served: Engine, tmp_path: Path, data: str, transcript: str, says: str
) -> None:
    made = {
        "noise": b"this is not audio at all " * 100,
        "silent": clip(amplitude=0.0, tmp=tmp_path / "s"),
        "short": clip(seconds=0.5, tmp=tmp_path / "h"),
        "good": clip(tmp=tmp_path / "g"),
    }[data]
    async with serving(served) as server, raw(server.url) as (ws, _):
        answer = await upload(ws, 3, "felix", made, transcript=transcript)
    assert (answer["code"], answer["id"]) == (wire.BAD_VOICE, 3)
    assert says in answer["message"] and answer["message"].startswith("voice 'felix'")
    assert ".upload-" not in answer["message"] and str(voices_dir(served)) not in answer["message"]
    assert not list(voices_dir(served).glob("felix.*"))
    assert staging_left(served) == []


async def test_an_upload_over_the_size_limit_is_too_large(served: Engine, tmp_path: Path) -> None:
    async with serving(served, max_upload_bytes=4096) as server, raw(server.url) as (ws, ready):
        assert ready["limits"]["max_upload_bytes"] == 4096
        answer = await upload(ws, 5, "gina", clip(tmp=tmp_path))
        assert (answer["code"], answer["id"]) == (wire.TOO_LARGE, 5)
        assert "takes 4096 at most" in answer["message"]
        # The clip frame itself is over the server's frame limit: the connection ends.
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1009
    assert not list(voices_dir(served).glob("gina.*"))


async def test_an_existing_voice_is_replaced_only_where_allowed_and_asked(
    served: Engine, tmp_path: Path
) -> None:
    first, second = clip(tmp=tmp_path / "1"), clip(seconds=4.0, tmp=tmp_path / "2")
    async with serving(served) as server, raw(server.url) as (ws, _):
        assert (await upload(ws, 1, "hugo", first))["type"] == "uploaded"
        taken = await upload(ws, 2, "HUGO", second)
        assert taken["code"] == wire.EXISTS and "upload with replace" in taken["message"]
        refused = await upload(ws, 3, "hugo", second, replace=True)
        assert refused["code"] == wire.EXISTS and "serve.allow_replace" in refused["message"]
        builtin = await upload(ws, 4, "builtin-en", second)
        assert builtin["code"] == wire.EXISTS
    async with serving(served, allow_replace=True) as server, raw(server.url) as (ws, _):
        assert (await upload(ws, 5, "hugo", second, replace=True))["type"] == "uploaded"
    assert (voices_dir(served) / "hugo.wav").read_bytes() == second


async def test_the_bots_own_voices_the_server_lacks_are_uploaded_at_connect(
    served: Engine, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    write_voice(mine, "alice")  # the server has one: not uploaded
    write_voice(mine, "ivy", "Ivy speaking here.")
    write_voice(mine, "quiet", "Nothing to hear.", amplitude=0.0)
    write_voice(mine, "zoë", "A name the server would not store.")
    async with serving(served) as server:
        with capture_logs() as logs:
            async with remote(server.url, local=mine) as client:
                await client.wait_ready()
                async with asyncio.timeout(30):
                    while "ivy" not in client.voices.names() or not any(
                        e["event"] == "engine.voice_not_uploaded" and e["name"] == "quiet"
                        for e in logs
                    ):
                        await asyncio.sleep(0.05)
                assert await collect(client, "Hello from Ivy.", "ivy", 1)
    uploaded = [e["name"] for e in logs if e["event"] == "engine.voice_uploaded"]
    assert uploaded == ["ivy"]
    refusals = {e["name"]: e["reason"] for e in logs if e["event"] == "engine.voice_not_uploaded"}
    assert "is silent" in refusals["quiet"] and "is not allowed" in refusals["zoë"]
    assert not list(voices_dir(served).glob("quiet.*"))


# reachability --------------------------------------------------------------------------
async def test_a_server_gone_mid_line_ends_it_at_once_and_is_found_again(
    served: Engine,
) -> None:
    port = free_port()
    async with remote(f"ws://127.0.0.1:{port}") as client:
        async with serving(served, port=port):
            await asyncio.wait_for(client.wait_ready(), 10)
            fault = served.config.fault_file
            assert fault is not None
            fault.write_text("hang 2")
            in_flight = asyncio.create_task(collect(client, "Never finished.", "alice", 1))
            async with asyncio.timeout(10):
                while fault.exists():  # the engine has taken the line
                    await asyncio.sleep(0.01)
        gone = time.monotonic()
        with pytest.raises(EngineUnavailable, match="lost the connection"):
            await asyncio.wait_for(in_flight, 5)
        assert time.monotonic() - gone < 1.0
        assert client.state == "unavailable"
        started = time.monotonic()
        with pytest.raises(EngineUnavailable, match="unavailable"):
            await collect(client, "Nobody home.", "alice", 1)
        assert time.monotonic() - started < 0.1
        with capture_logs() as logs:
            async with serving(served, port=port):
                await asyncio.wait_for(client.wait_available(), 10)
                assert await collect(client, "Back again.", "alice", 1)
    assert [e["event"] for e in logs if e["event"].startswith("engine.re")] == [
        "engine.reconnected"
    ]


async def test_a_server_that_stops_answering_ends_the_line_in_flight() -> None:
    limits = wire.Limits(1000, 10_000_000, 120, 20, 8)

    async def frozen(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)  # pings go unanswered
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str(wire.encode(wire.Ready(("alice",), "alice", limits)))
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", frozen)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with remote(f"ws://127.0.0.1:{port}", keepalive_s=0.3) as client:
            await asyncio.wait_for(client.wait_ready(), 10)
            started = time.monotonic()
            with pytest.raises(EngineUnavailable):
                await asyncio.wait_for(collect(client, "Anyone?", "alice", 1), 10)
            assert time.monotonic() - started < 2.0
    finally:
        await runner.cleanup()


async def test_a_preview_the_server_refuses_is_a_502_with_its_reason(
    served: Engine, tmp_path: Path
) -> None:
    port = free_port()
    config = Config.model_validate(
        {
            "engine": {"url": f"ws://127.0.0.1:{port}", "voices_dir": str(tmp_path / "none")},
            "commands": {"state_file": str(tmp_path / "state.json")},
        }
    )
    bot = Bot(config)
    assert isinstance(bot.voices, RemoteVoices)
    async with (
        serving(served, port=port, max_text_chars=5),  # the line is longer: refused
        remote(config.engine.url or "", voices=bot.voices) as client,
    ):
        await asyncio.wait_for(client.wait_ready(), 10)
        await bot.voice_checks.refresh()
        speaker = Speaker(bot.queue, client, Player(config.audio), bot.control)
        async with TestClient(TestServer(create_app(config.web, bot, speaker, client))) as panel:
            origin = {"Origin": f"http://{panel.host}:{panel.port}"}
            body = {"text": "A preview.", "voice": "mei"}
            preview = await panel.post("/api/synthesize", json=body, headers=origin)
            assert preview.status == 502
            error = (await preview.json())["error"]
            assert error.startswith("the voice engine failed making the preview")
            assert "5" in error  # the server's own reason: its limit


async def test_the_panel_previews_through_the_server_and_shows_its_state(
    served: Engine, tmp_path: Path
) -> None:
    port = free_port()
    config = Config.model_validate(
        {
            "engine": {"url": f"ws://127.0.0.1:{port}", "voices_dir": str(tmp_path / "none")},
            "commands": {"state_file": str(tmp_path / "state.json")},
            "web": {"token": "s3cret"},
        }
    )
    bot = Bot(config)
    auth = {"Authorization": "Bearer s3cret"}
    assert isinstance(bot.voices, RemoteVoices)  # the server's, once it answers
    async with remote(config.engine.url or "", voices=bot.voices) as client:
        speaker = Speaker(bot.queue, client, Player(config.audio), bot.control)
        app = create_app(config.web, bot, speaker, client)
        async with TestClient(TestServer(app)) as panel:
            async with serving(served, port=port):
                await asyncio.wait_for(client.wait_ready(), 10)
                await bot.voice_checks.refresh()
                status = await (await panel.get("/api/status", headers=auth)).json()
                assert status["engine"]["state"] == "up" and status["state"] == "live"
                # The server checks its own voices: each it lists can be picked.
                names = [v["name"] for v in status["voices"] if v["ok"]]
                assert names == client.voices.names()
                assert {"alice", "mei", "builtin-en"} <= set(names)
                metrics = await (await panel.get("/metrics", headers=auth)).text()
                assert "ishowtts_engine_up 1.0" in metrics
                preview = await panel.post(
                    "/api/synthesize", json={"text": "A preview.", "voice": "mei"}, headers=auth
                )
                assert preview.status == 200 and preview.content_type == "audio/wav"
                audio, rate = sf.read(io.BytesIO(await preview.read()))
                assert rate == 24_000 and len(audio) > 0
            status = await (await panel.get("/api/status", headers=auth)).json()
            assert status["engine"]["state"] == "unavailable"
            assert status["state"] == "unreachable"
            preview = await panel.post(
                "/api/synthesize", json={"text": "A preview.", "voice": "mei"}, headers=auth
            )
            assert preview.status == 503
            assert "is unavailable" in (await preview.json())["error"]
            metrics = await (await panel.get("/metrics", headers=auth)).text()
            assert "ishowtts_engine_up 0.0" in metrics


async def test_say_speaks_through_the_server(served: Engine, tmp_path: Path) -> None:
    local = np.concatenate(await collect(served, "Said over the wire.", "mei", seed=3))
    async with serving(served) as server:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"engine: {{url: '{server.url}', voices_dir: {tmp_path / 'none'}}}\n"
            "logging: {format: json}\n"
        )
        out = tmp_path / "said.wav"
        argv = ["say", "Said over the wire.", "--voice", "mei", "--seed", "3"]
        proc = await asyncio.create_subprocess_exec(
            *command(*argv, "--config", str(config), "--out", str(out)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        missing = await asyncio.create_subprocess_exec(
            *command("say", "Hi.", "--voice", "nobody", "--config", str(config)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, refused = await asyncio.wait_for(missing.communicate(), TIMEOUT)
    assert f"wrote {out}" in stdout.decode()
    said, rate = sf.read(str(out), dtype="float32")
    assert rate == 24_000 and np.array_equal(said, local)
    assert missing.returncode == 2
    assert "voice error: no voice 'nobody' on the engine server (have: alice, " in (
        refused.decode()
    )


# the bot, end to end -------------------------------------------------------------------
VIEWER = "@id={id};user-id={uid};display-name=Viewer{uid} :v{uid}!v@v PRIVMSG #chan :{text}"


async def test_the_bot_speaks_through_an_engine_server_across_its_restart(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    port = free_port()
    server_dir, bot_dir = tmp_path / "server", tmp_path / "bot"
    fault = server_dir / "fault"
    server_config = write_run_config(
        server_dir, tiny_files, serve={"port": port}, engine={"fault_file": str(fault)}
    )
    serve_argv = command("serve", "--config", str(server_config))
    server = await BotProcess.start(server_config, argv=serve_argv)
    await server.until("serve.started")
    async with FakeTwitch() as twitch:
        # The bot's model files do not exist: it must never look for them.
        nowhere = ModelFiles(
            model=bot_dir / "absent" / "model.safetensors",
            vocab=bot_dir / "absent" / "vocab.txt",
            vocoder_config=bot_dir / "absent" / "vocos" / "config.yaml",
            vocoder_weights=bot_dir / "absent" / "vocos" / "pytorch_model.bin",
        )
        bot_config = write_run_config(
            bot_dir,
            nowhere,
            engine={"url": f"ws://127.0.0.1:{port}"},
            platforms={"twitch": {"enabled": True, "channels": ["chan"], "url": twitch.url}},
            # A restart of the server takes longer than a free chat line stays fresh
            # (15 s) on 2 busy cores: the line waiting for it keeps to the TTL alone.
            queue={"pacing": {"stale_after_s": 0}},
        )
        write_voice(bot_dir / "voices", "zed", "Only the bot has this voice.")
        bot = await BotProcess.start(bot_config)
        ready = await bot.until("engine.ready")
        assert ready["remote"] is True and ready["device"] == "cpu"
        await bot.until("engine.voice_uploaded", name="zed")
        await bot.until("twitch.connected")

        await twitch.send(VIEWER.format(id="a1", uid=1, text="hello through the server"))
        spoken = await bot.until("tts.spoken", msg_id="a1")
        assert spoken["voice"] == "default" and spoken["audio_s"] > 0.5

        # A line the server is making when it dies is skipped; the next waits.
        fault.write_text("hang 5")
        await twitch.send(VIEWER.format(id="a2", uid=2, text="this one is cut off"))
        await server.until("engine.fault_injected")
        server.proc.kill()
        await asyncio.wait_for(server.proc.wait(), TIMEOUT)
        skipped = await bot.until("tts.skipped", msg_id="a2")
        assert skipped["reason"] == "engine_unavailable"
        await bot.until("engine.disconnected")
        await twitch.send(VIEWER.format(id="a3", uid=3, text="waiting for the engine"))
        await asyncio.sleep(1.0)

        server = await BotProcess.start(server_config, argv=serve_argv)
        await server.until("serve.started")
        await bot.until("engine.reconnected")
        assert (await bot.until("tts.spoken", msg_id="a3"))["voice"] == "default"
        assert await bot.stop() == 0
    assert await server.stop(signal.SIGINT) == 0
    assert server.logged("serve.stopped")
    assert not bot.logged("bot.warming_up")
    # Each line ended once: the ends awaited above were taken from the log as read,
    # so any other end of theirs would still be there.
    assert not [e for e in bot.events if e["event"] in TERMINAL_EVENTS]


def test_the_bot_side_loads_no_model_code() -> None:
    # What `ishowtts run` imports to speak through a server: none of the model's code.
    probe = (
        "import sys, bot.app, bot.cli, bot.remote_engine, bot.audio.speaker, bot.panel.web;"
        "print(sorted({'torch', 'engine.synth', 'engine.checkpoints'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
