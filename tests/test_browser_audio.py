"""The overlay's audio without a browser: the broadcast to pages (bounded queues,
a slow page dropped, controls, a page joining part-way), the player with no
device (`audio.output_device: none`) keeping real time, and the WebSocket with
its guard (aiohttp's test client). tests/test_overlay_browser.py plays it in Chromium."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from bot.audio import loudness
from bot.audio.browser import (
    FRAME_SAMPLES,
    MAX_LISTENERS,
    Broadcast,
    Listener,
    decode_audio,
    encode_audio,
)
from bot.audio.player import Player
from bot.config import AudioConfig, WebConfig
from bot.panel.web import create_app, overlay_token
from engine.audio import to_pcm16
from tests.sink import tone
from tests.test_web import make_bot

RATE = 48_000
TOKEN = "s3cret"


def broadcast(pending: Any = None, **kwargs: Any) -> Broadcast:
    return Broadcast(
        pending or (lambda _: np.zeros(0, dtype=np.float32)),
        rate=RATE,
        volume=0.8,
        fade_out_ms=15.0,
        **kwargs,
    )


def queued(listener: Listener) -> list[bytes | str]:
    """Everything waiting for this page, taken off its queue."""
    items = list(listener._items)
    listener._items.clear()
    listener._bytes = 0
    return items


def controls(items: list[bytes | str]) -> list[dict[str, Any]]:
    return [json.loads(i) for i in items if isinstance(i, str)]


def audio_of(items: list[bytes | str]) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(utterance, sequence) of each audio frame, and their samples end to end."""
    frames = [decode_audio(i) for i in items if isinstance(i, bytes)]
    samples = [f[2] for f in frames] or [np.zeros(0, dtype=np.float32)]
    return [(f[0], f[1]) for f in frames], np.concatenate(samples)


# the wire -----------------------------------------------------------------------------
def test_an_audio_frame_round_trips() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.5, -1.5], dtype=np.float32)
    frame = encode_audio(7, 3, to_pcm16(samples))
    assert len(frame) == 8 + 2 * len(samples)
    utt, seq, back = decode_audio(frame)
    assert (utt, seq) == (7, 3)
    # 16-bit: within one step; beyond full scale is clipped, never wrapped.
    assert back == pytest.approx([0.0, 0.5, -0.5, 1.0, -1.0], abs=1 / 32000)
    for bad in (b"", b"1234567", frame[:-1]):
        with pytest.raises(ValueError, match="not an audio frame"):
            decode_audio(bad)


# the broadcast --------------------------------------------------------------------------
def test_each_page_gets_the_state_the_lines_and_the_controls() -> None:
    b = broadcast()
    pages = [b.listen(), b.listen()]
    assert all(p is not None for p in pages)
    chunk = tone(0.25, rate=RATE)  # 12 000 samples: five frames
    b.audio(1, chunk, RATE)
    b.audio(1, chunk, RATE)
    b.end(1)
    b.pause(True)
    b.pause(True)  # no change: nothing sent
    b.pause(False)
    b.set_volume(0.5)
    b.audio(2, chunk, RATE)
    b.cut(2)
    for page in pages:
        assert page is not None
        items = queued(page)
        assert [c["type"] for c in controls(items)] == [
            "hello", "begin", "end", "pause", "pause", "volume", "begin", "cut",
        ]  # fmt: skip
        hello, begin, *_, cut = controls(items)
        assert hello == {
            "type": "hello", "version": 1, "rate": RATE, "paused": False, "volume": 0.8,
            "fade_out_ms": 15.0,
        }  # fmt: skip
        assert begin == {"type": "begin", "utt": 1, "rate": RATE, "joined": False}
        assert cut == {"type": "cut", "utt": 2, "fade_ms": 15.0}
        ids, samples = audio_of(items)
        # Frames of at most FRAME_SAMPLES, numbered from 0 in each utterance.
        assert ids == [(1, n) for n in range(10)] + [(2, n) for n in range(5)]
        sizes = {len(decode_audio(i)[2]) for i in items if isinstance(i, bytes)}
        assert sizes == {FRAME_SAMPLES}
        assert len(samples) == 3 * len(chunk)
        assert samples[: len(chunk)] == pytest.approx(chunk, abs=1 / 32000)


def test_a_page_that_does_not_keep_up_is_dropped_and_the_others_go_on() -> None:
    b = broadcast(max_queued_s=1.0)
    slow, fast = b.listen(), b.listen()
    assert slow is not None and fast is not None
    second = tone(1.0, rate=RATE)
    with capture_logs() as logs:
        b.audio(1, second[: RATE // 2], RATE)
        queued(fast)  # this page reads; the other does not
        b.audio(1, second, RATE)
    assert slow.dropped and slow.queued_bytes == 0 and slow not in b.listeners
    assert not fast.dropped and fast in b.listeners
    _, samples = audio_of(queued(fast))
    assert len(samples) == RATE
    (dropped,) = [e for e in logs if e["event"] == "audio.listener_dropped"]
    assert dropped["reason"] == "too_slow" and dropped["listeners"] == 1
    # Its socket then ends (the page reconnects and starts afresh).
    assert asyncio.run(slow.get()) is None


def test_at_most_max_listeners_pages() -> None:
    b = broadcast()
    pages = [b.listen() for _ in range(MAX_LISTENERS)]
    assert all(p is not None for p in pages) and b.listen() is None
    b.leave(pages[0])  # type: ignore[arg-type]
    assert b.listen() is not None


def test_a_page_joining_part_way_gets_the_rest_of_the_line() -> None:
    rest = tone(0.3, rate=RATE)
    b = broadcast(pending=lambda utt: rest if utt == 4 else np.zeros(0, np.float32))
    b.audio(4, tone(1.0, rate=RATE), RATE)
    b.pause(True)
    b.end(4)
    page = b.listen()
    assert page is not None
    items = queued(page)
    hello, begin, end = controls(items)
    assert hello["paused"] is True
    assert begin == {"type": "begin", "utt": 4, "rate": RATE, "joined": True}
    assert end == {"type": "end", "utt": 4}
    ids, samples = audio_of(items)
    assert ids[0] == (4, 0) and samples == pytest.approx(rest, abs=1 / 32000)
    # Once the line is cut, a new page gets nothing of it.
    b.cut(4)
    late = b.listen()
    assert late is not None and [c["type"] for c in controls(queued(late))] == ["hello"]


# the player without a device --------------------------------------------------------------
@pytest.fixture
async def deviceless(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Player]:
    import bot.audio.player as player_module

    def no_portaudio() -> None:
        raise AssertionError("PortAudio used with output_device: none")

    monkeypatch.setattr(player_module, "_sounddevice", no_portaudio)
    p = Player(AudioConfig(output_device="none", volume=100))
    task = asyncio.create_task(p.run())
    await asyncio.wait_for(p.opened.wait(), 5)
    yield p
    await p.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_none_is_no_device_in_the_config() -> None:
    for written in ("none", "None", " NONE "):
        assert AudioConfig(output_device=written).output_device == "none"
    assert AudioConfig(output_device="Speakers").output_device == "Speakers"
    assert AudioConfig(output_device=None).output_device is None


async def test_without_a_device_the_player_keeps_real_time(deviceless: Player) -> None:
    page = deviceless.broadcast.listen()
    assert page is not None
    assert deviceless.device_name == "none" and deviceless.rate == RATE
    utt = deviceless.begin()
    await deviceless.write(utt, tone(1.0))
    queued_at = time.monotonic()  # and sent to the pages
    deviceless.finish(utt)
    await asyncio.wait_for(deviceless.wait_done(utt), 5)
    done_at = time.monotonic()
    first = deviceless.first_sample_time(utt)
    # Its clock takes the line up at its next tick, and plays it in real time.
    assert first is not None and first - queued_at < 0.03
    assert done_at - first == pytest.approx(1.0, abs=0.05)
    # The page got what the device path plays: shaped (loudness, limiter) at 48 kHz.
    items = queued(page)
    assert [c["type"] for c in controls(items)] == ["hello", "begin", "end"]
    _, samples = audio_of(items)
    assert len(samples) == RATE
    level = loudness.loudness_lufs(samples, RATE)
    assert level == pytest.approx(deviceless.config.target_lufs, abs=0.5)
    assert np.abs(samples).max() <= loudness.db_to_gain(-1.0) + 1e-4


async def test_without_a_device_a_pause_holds_and_a_cut_ends_the_line(deviceless: Player) -> None:
    page = deviceless.broadcast.listen()
    assert page is not None
    utt = deviceless.begin()
    await deviceless.write(utt, tone(1.0))
    started = time.monotonic()
    deviceless.finish(utt)
    await asyncio.sleep(0.3)
    deviceless.set_paused(True)
    await asyncio.sleep(0.5)
    deviceless.set_paused(False)
    await asyncio.wait_for(deviceless.wait_done(utt), 5)
    assert time.monotonic() - started == pytest.approx(1.5, abs=0.1)

    long = deviceless.begin()
    await deviceless.write(long, tone(5.0))
    await asyncio.sleep(0.2)
    cut_at = time.monotonic()
    deviceless.cut(long)
    await asyncio.wait_for(deviceless.wait_done(long), 5)
    assert time.monotonic() - cut_at < 0.1
    types = [c["type"] for c in controls(queued(page))]
    assert types == ["hello", "begin", "end", "pause", "pause", "begin", "cut"]


async def test_a_page_joining_part_way_starts_where_the_player_is(deviceless: Player) -> None:
    utt = deviceless.begin()
    await deviceless.write(utt, tone(2.0))
    deviceless.finish(utt)
    await asyncio.sleep(0.5)
    page = deviceless.broadcast.listen()
    assert page is not None
    items = queued(page)
    assert [c["type"] for c in controls(items)] == ["hello", "begin", "end"]
    assert controls(items)[1]["joined"] is True
    _, samples = audio_of(items)
    assert len(samples) / RATE == pytest.approx(1.5, abs=0.06)


# the socket -------------------------------------------------------------------------------
@pytest.fixture
async def audio_panel(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Broadcast]]:
    b = broadcast()
    app = create_app(WebConfig(token=TOKEN), make_bot(tmp_path), audio=b)
    async with TestClient(TestServer(app)) as c:
        yield c, b


async def test_one_address_beyond_this_machine_cannot_take_every_listener(
    tmp_path: Path,
) -> None:
    # Whoever has the overlay's token (it is in OBS, and may leak on stream) and
    # reaches the panel from another machine gets a few listeners, not all.
    from bot.panel.audio_feed import MAX_LISTENERS_PER_REMOTE_ADDRESS

    b = broadcast()
    app = create_app(WebConfig(token=TOKEN), make_bot(tmp_path), audio=b)
    remote = ["192.0.2.7"]

    @web.middleware
    async def from_remote(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request.clone(remote=remote[0]))
        return response

    app.middlewares.insert(0, from_remote)
    async with TestClient(TestServer(app)) as c:
        origin = {"Origin": f"http://{c.host}:{c.port}"}
        path = f"/api/audio?token={overlay_token(TOKEN)}"
        pages = [
            await c.ws_connect(path, headers=origin)
            for _ in range(MAX_LISTENERS_PER_REMOTE_ADDRESS)
        ]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await c.ws_connect(path, headers=origin)
        assert info.value.status == 503
        remote[0] = "192.0.2.8"  # another machine (the streamer's own OBS) still can
        pages.append(await c.ws_connect(path, headers=origin))
        assert len(b.listeners) == MAX_LISTENERS_PER_REMOTE_ADDRESS + 1
        for page in pages:
            await page.close()


async def test_the_overlay_token_opens_the_audio_socket_from_the_panels_own_pages(
    audio_panel: Any,
) -> None:
    c, b = audio_panel
    origin = {"Origin": f"http://{c.host}:{c.port}"}
    read_only = overlay_token(TOKEN)
    async with c.ws_connect(f"/api/audio?token={read_only}", headers=origin) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello" and hello["rate"] == RATE
        b.audio(1, tone(0.1, rate=RATE), RATE)
        assert (await ws.receive_json(timeout=5))["type"] == "begin"
        frame = await ws.receive_bytes(timeout=5)
        assert decode_audio(frame)[:2] == (1, 0)
    # A tool with the panel's token as a Bearer header needs no Origin.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with c.ws_connect("/api/audio", headers=bearer) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
    # Refused: no token, a wrong one, another site's page, no Origin with a query token.
    for path, headers, status in [
        ("/api/audio", origin, 401),
        ("/api/audio?token=guess", origin, 401),
        (f"/api/audio?token={read_only}", {"Origin": "http://evil.example"}, 403),
        (f"/api/audio?token={read_only}", {}, 403),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await c.ws_connect(path, headers=headers)
        assert info.value.status == status, path
    # The worklet's script, with the overlay's token.
    script = await c.get(f"/static/pcm-worklet.js?token={read_only}")
    assert script.status == 200 and script.content_type == "text/javascript"
    assert "registerProcessor" in await script.text()


async def test_a_page_that_sends_anything_is_closed_and_too_many_are_refused(
    audio_panel: Any,
) -> None:
    c, b = audio_panel
    origin = {"Origin": f"http://{c.host}:{c.port}"}
    path = f"/api/audio?token={overlay_token(TOKEN)}"
    with capture_logs() as logs:
        async with c.ws_connect(path, headers=origin) as ws:
            await ws.receive_json(timeout=5)
            await ws.send_str("hello?")
            closed = await ws.receive(timeout=5)
            assert closed.type is aiohttp.WSMsgType.CLOSE
            assert closed.data == aiohttp.WSCloseCode.UNSUPPORTED_DATA
        for _ in range(50):
            if not b.listeners:
                break
            await asyncio.sleep(0.02)
        assert b.listeners == []
        pages = [await c.ws_connect(path, headers=origin) for _ in range(MAX_LISTENERS)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await c.ws_connect(path, headers=origin)
        assert info.value.status == 503
        # A page too slow for its queue is told to go, and may come back.
        b.listeners[0].drop()
        dropped = await pages[0].receive(timeout=5)
        while dropped.type is aiohttp.WSMsgType.TEXT:
            dropped = await pages[0].receive(timeout=5)
        assert dropped.type is aiohttp.WSMsgType.CLOSE
        assert dropped.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        for page in pages:
            await page.close()
    left = [e["reason"] for e in logs if e["event"] == "web.audio_left"]
    assert left[0] == "sent_data" and "dropped" in left
    assert [e for e in logs if e["event"] == "web.audio_full"]


async def test_stopping_the_server_ends_the_audio_sockets(tmp_path: Path) -> None:
    b = broadcast()
    server = TestServer(create_app(WebConfig(), make_bot(tmp_path), audio=b))
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        origin = {"Origin": f"http://{server.host}:{server.port}"}
        ws = await session.ws_connect(server.make_url("/api/audio"), headers=origin)
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        started = time.monotonic()
        with capture_logs() as logs:
            closing = asyncio.create_task(server.close())
            goodbye = await ws.receive(timeout=5)
            await closing
    assert goodbye.type is aiohttp.WSMsgType.CLOSE
    assert goodbye.data == aiohttp.WSCloseCode.GOING_AWAY
    assert time.monotonic() - started < 1.5  # not held up to the shutdown timeout
    assert [e["reason"] for e in logs if e["event"] == "web.audio_left"] == ["stopping"]
    assert b.listeners == []
