"""The player through real PortAudio into a headless PulseAudio null sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from bot.audio import loudness
from bot.audio.player import Player
from bot.config import AudioConfig
from tests.sink import RATE, SinkCapture, active_span, ensure_null_sink, remove_null_sink, tone

#: A 440 Hz tone at these levels moves < 0.05 per sample at 48 kHz; a click is far more.
MAX_STEP = 0.1


@pytest.fixture
async def player(pulse_server: None, request: pytest.FixtureRequest) -> AsyncIterator[Player]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    p = Player(AudioConfig.model_validate({"volume": 100, **overrides}))
    task = asyncio.create_task(p.run())
    await asyncio.wait_for(p.opened.wait(), 10)
    yield p
    await p.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def play(p: Player, chunks: list[np.ndarray]) -> int:
    utt = p.begin()
    for chunk in chunks:
        await p.write(utt, chunk)
    p.finish(utt)
    return utt


async def test_tone_comes_back_at_right_length_and_level(player: Player) -> None:
    capture = SinkCapture()
    utt = await play(player, [tone(0.5), tone(0.5)])
    await asyncio.wait_for(player.wait_done(utt), 5)
    got = capture.stop()
    start, end = active_span(got)
    assert (end - start) / RATE == pytest.approx(1.0, abs=0.03)
    level = loudness.loudness_lufs(got[start:end], RATE)
    assert level == pytest.approx(player.config.target_lufs, abs=1.0)
    spectrum = np.abs(np.fft.rfft(got[start:end]))
    assert np.fft.rfftfreq(end - start, 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=2)
    assert player.first_sample_time(utt) is not None


async def test_no_clicks_at_start_skip_and_volume_change(player: Player) -> None:
    capture = SinkCapture()
    utt = await play(player, [tone(1.5)])
    await asyncio.sleep(0.4)
    player.set_volume(0.2)
    await asyncio.sleep(0.3)
    player.set_volume(1.0)
    await asyncio.sleep(0.3)
    player.cut(utt)
    await asyncio.wait_for(player.wait_done(utt), 5)
    got = capture.stop()
    start, end = active_span(got)
    assert 0.9 < (end - start) / RATE < 1.3  # cut before the 1.5 s end
    assert np.abs(np.diff(got)).max() < MAX_STEP
    # The volume dip is there, reached by a ramp.
    body = np.abs(got[start:end])
    blocks = body[: len(body) // 480 * 480].reshape(-1, 480).max(axis=1)
    assert blocks[:-2].min() < 0.5 * blocks.max()


async def test_browser_pages_get_what_the_device_plays(player: Player) -> None:
    # The overlay's audio (bot/audio/browser.py) beside the device: the same
    # loudness, limiter and fade-in, sample for sample; the device's pause and
    # volume go along as messages.
    from bot.audio.browser import decode_audio

    page = player.broadcast.listen()
    assert page is not None
    capture = SinkCapture()
    utt = await play(player, [tone(0.5, amplitude=2.0), tone(0.5, amplitude=2.0)])
    await asyncio.wait_for(player.wait_done(utt), 5)
    got = capture.stop()
    frames = []
    while page.queued_bytes:
        item = await page.get()
        if isinstance(item, bytes):
            frames.append(decode_audio(item)[2])
    sent = np.concatenate(frames)
    start, end = active_span(got)
    assert len(sent) == pytest.approx(end - start, abs=RATE * 0.005)
    assert loudness.loudness_lufs(sent, RATE) == pytest.approx(
        loudness.loudness_lufs(got[start:end], RATE), abs=0.1
    )
    assert np.abs(sent).max() == pytest.approx(np.abs(got).max(), abs=1e-3)


@pytest.mark.parametrize("player", [{"target_lufs": 0.0}], indirect=True)
async def test_hot_clip_is_limited_to_minus_1_dbfs(player: Player) -> None:
    capture = SinkCapture()
    hot = tone(1.0, amplitude=4.0)  # +12 dB over full scale
    utt = await play(player, [hot])
    await asyncio.wait_for(player.wait_done(utt), 5)
    got = capture.stop()
    assert np.abs(got).max() <= loudness.db_to_gain(-1.0) + 1e-4
    assert np.abs(got).max() > 0.8  # limited, not silenced


async def test_underrun_plays_silence(player: Player) -> None:
    capture = SinkCapture()
    utt = player.begin()
    await player.write(utt, tone(0.3))
    await asyncio.sleep(0.8)  # nothing more arrives: the device runs dry
    await player.write(utt, tone(0.3))
    player.finish(utt)
    await asyncio.wait_for(player.wait_done(utt), 5)
    got = capture.stop()
    start, end = active_span(got)
    middle = got[start:end]
    gaps = np.abs(middle) < 1e-6
    # A silent stretch of at least 0.3 s between the two parts, exactly zero.
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], gaps.astype(int), [0]]))))[::2]
    assert runs.max() / RATE > 0.3
    assert player.underruns > 0


async def test_pause_fades_and_resume_continues(player: Player) -> None:
    capture = SinkCapture()
    utt = await play(player, [tone(1.0)])
    await asyncio.sleep(0.3)
    player.set_paused(True)
    await asyncio.sleep(0.5)
    player.set_paused(False)
    await asyncio.wait_for(player.wait_done(utt), 5)
    got = capture.stop()
    start, end = active_span(got)
    # Nothing lost: about 1 s of tone plus the pause.
    assert (end - start) / RATE == pytest.approx(1.5, abs=0.15)
    assert np.abs(np.diff(got)).max() < MAX_STEP


async def test_vanished_device_is_reopened_and_nothing_queued_is_lost(player: Player) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        utt = player.begin()
        await player.write(utt, tone(0.4))
        await asyncio.sleep(0.2)
        # The only sink goes away: the stream dies, as when a USB headset is unplugged.
        remove_null_sink()
        await player.write(utt, tone(1.0))  # queued while there is no device
        await asyncio.sleep(1.0)
        ensure_null_sink()
        capture = SinkCapture()
        player.finish(utt)
        await asyncio.wait_for(player.wait_done(utt), 20)
        got = capture.stop()
    assert any(e["event"] == "audio.device_error" for e in logs)
    assert sum(e["event"] == "audio.opened" for e in logs) >= 1
    # The second tone, queued while the device was gone, still played in full.
    start, end = active_span(got)
    assert (end - start) / RATE > 0.9


async def test_unknown_output_device_is_a_clear_error(pulse_server: None) -> None:
    from bot.audio.player import AudioDeviceError, find_output_device

    with pytest.raises(
        AudioDeviceError, match=r"output device 'Nonexistent' not found \(have: .*pulse"
    ):
        find_output_device("Nonexistent")
    assert find_output_device("pulse") is not None
