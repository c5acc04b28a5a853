"""`ishowtts run` as a streamer runs it: a real subprocess, a real config file,
the tiny random-weight engine on CPU, loopback chat servers, and the audio read
back from the PulseAudio null sink."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest

from engine.checkpoints import ModelFiles
from tests.bilibili import fixtures as fx
from tests.bilibili.fake_server import FakeBilibili
from tests.botprocess import ROOT, TIMEOUT, BotProcess, command
from tests.runconfig import write_run_config
from tests.sink import SinkCapture
from tests.twitch.fake_server import FakeTwitch

MOD = (
    "@badges=moderator/1;mod=1;id={id};user-id=555;display-name=Mod "
    ":mod!mod@mod PRIVMSG #chan :{text}"
)
VIEWER = "@id={id};user-id={uid};display-name=Viewer{uid} :v{uid}!v@v PRIVMSG #chan :{text}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_run_without_platforms_starts_warns_and_stops_cleanly(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path, sig: int
) -> None:
    bot = await BotProcess.start(write_run_config(tmp_path, tiny_files))
    ready = await bot.until("engine.ready")
    assert ready["device"] == "cpu"
    started = await bot.until("bot.started")
    assert started["platforms"] == []
    assert started["voices"] == ["default", "mei", "builtin-en", "builtin-zh"]
    await bot.until("bot.no_platforms")
    assert await bot.stop(sig) == 0
    assert bot.logged("audio.closed")
    assert bot.logged("bot.stopped")


async def test_start_up_errors_are_told_together_one_line_each(
    tiny_files: ModelFiles, tmp_path: Path
) -> None:
    # A streamer setting up fixes everything in one go, not one thing per restart.
    config = write_run_config(
        tmp_path,
        tiny_files,
        engine={"default_voice": "nobody"},
        audio={"output_device": "Speakers That Are Not There"},
    )
    proc = await asyncio.create_subprocess_exec(
        *command("run", "--config", str(config)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    told = [line for line in err.decode().splitlines() if not line.startswith("{")]
    assert len(told) == 3, told
    assert told[0].startswith("start-up error: voice 'nobody' not found in")
    assert "(have: default, mei, builtin-en, builtin-zh)" in told[0]
    assert told[1].startswith("start-up error: output device 'Speakers That Are Not There'")
    assert told[2].startswith("also: no chat platform is on yet")
    assert "platforms.twitch.enabled" in told[2]


async def test_twitch_chat_is_spoken_retracted_skipped_and_commanded(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    async with FakeTwitch() as server:
        config = write_run_config(
            tmp_path,
            tiny_files,
            platforms={"twitch": {"enabled": True, "channels": ["chan"], "url": server.url}},
        )
        capture = SinkCapture()
        bot = await BotProcess.start(config)
        await bot.until("twitch.connected")

        # A normal message is heard.
        await server.send(VIEWER.format(id="a1", uid=1, text="hello everyone, nice stream"))
        spoken = await bot.until("tts.spoken", msg_id="a1")
        assert spoken["voice"] == "default"
        assert spoken["audio_s"] > 0.5
        assert 0 < spoken["ttfa_ms"] < 30_000

        # A message deleted right after it arrives is never played.
        await server.send(
            [
                VIEWER.format(id="gone", uid=2, text="something rude here"),
                "@login=v2;target-msg-id=gone :tmi.twitch.tv CLEARMSG #chan :something rude here",
            ]
        )
        retracted = await bot.until("tts.retracted", msg_id="gone")
        assert retracted["platform"] == "twitch"

        # A viewer cannot skip; a moderator can switch the voice.
        await server.send(VIEWER.format(id="c1", uid=3, text="!tts skip"))
        refused = await bot.until("tts.command_refused", msg_id="c1")
        assert refused["reason"] == "not_allowed"
        await server.send(MOD.format(id="c2", text="!tts voice mei"))
        await bot.until("tts.command", msg_id="c2")
        await server.send(VIEWER.format(id="a2", uid=4, text="next one in the new voice"))
        assert (await bot.until("tts.spoken", msg_id="a2"))["voice"] == "mei"

        # A moderator's skip cuts a long message while it plays.
        long = " ".join(["this is a very long message that goes on and on."] * 6)
        await server.send(VIEWER.format(id="long", uid=5, text=long))
        await bot.until("tts.playing", msg_id="long")
        await server.send(MOD.format(id="c3", text="!tts skip"))
        skipped = await bot.until("tts.skipped", msg_id="long")
        assert skipped["reason"] == "skip"

        assert await bot.stop() == 0
        audio = capture.stop()
    assert bot.logged("audio.closed")
    assert not bot.logged("tts.spoken", msg_id="gone")
    assert not bot.logged("tts.spoken", msg_id="long")
    assert np.abs(audio).max() > 0.01  # something audible reached the sink
    assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-4


async def test_bilibili_danmaku_spoken_and_superchat_withdrawn(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    async with FakeBilibili() as server:
        config = write_run_config(tmp_path, tiny_files, platforms={"bilibili": server.config()})
        bot = await BotProcess.start(config)
        await bot.until("bilibili.connected")
        await server.send(fx.brotli_batch(fx.danmaku(id_str="dm1", text="主播好")))
        spoken = await bot.until("tts.spoken", msg_id="dm1")
        assert spoken["platform"] == "bilibili"
        await server.send(
            fx.brotli_batch(fx.superchat(sc_id=77, price=30), fx.superchat_delete(77))
        )
        await bot.until("tts.retracted", msg_id="sc:77")
        assert await bot.stop() == 0
    assert not bot.logged("tts.spoken", msg_id="sc:77")
