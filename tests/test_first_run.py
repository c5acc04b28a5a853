"""A streamer's first run, as the README has it: no voice of their own, no YAML
edited, `ishowtts run --twitch CHANNEL`, the panel open in a browser, Ctrl-C.

The config file here only stands in for the download (the tiny model's paths)
and points Twitch at the loopback server; voices/ is empty."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine.checkpoints import ModelFiles
from tests.botprocess import BotProcess
from tests.engine.tiny import TINY_ARCH
from tests.runconfig import free_port
from tests.sink import SinkCapture
from tests.test_browser import CHROMIUM, launch_chromium
from tests.twitch.fake_server import FakeTwitch

VIEWER = "@id={id};user-id=7;display-name=Viewer :viewer!v@v PRIVMSG #somechannel :{text}"


async def test_first_run_speaks_with_the_builtin_voice_and_stops_with_the_panel_open(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")
    from playwright.async_api import async_playwright

    port = free_port()
    async with FakeTwitch() as server:
        config = tmp_path / "stand-in.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "engine": {
                        "model_path": str(tiny_files.model),
                        "vocoder_path": str(tiny_files.vocoder_config.parent),
                        "voices_dir": str(tmp_path / "voices"),  # does not exist
                        "arch": TINY_ARCH.model_dump(),
                        "nfe_steps": 4,
                    },
                    "platforms": {"twitch": {"url": server.url}},
                    "web": {"port": port},
                    "logging": {"format": "json"},
                }
            )
        )
        capture = SinkCapture()
        bot = await BotProcess.start(config, "--twitch", "somechannel")
        chosen = await bot.until("bot.default_voice")
        assert chosen["voice"] == "builtin-en"
        assert "no voices in" in chosen["reason"]
        await bot.until("twitch.connected")
        started = await bot.until("bot.started")
        assert started["platforms"] == ["twitch"]
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            panel = await browser.new_page()
            await panel.goto(f"http://127.0.0.1:{port}/")
            await panel.wait_for_selector("#voice option", state="attached")
            await server.send(VIEWER.format(id="first", text="hello from my first stream"))
            spoken = await bot.until("tts.spoken", msg_id="first")
            assert spoken["voice"] == "builtin-en"
            await panel.screenshot(path=str(tmp_path / "first-run-panel.png"))
            asked = time.monotonic()
            code = await bot.stop(signal.SIGINT)
            took = time.monotonic() - asked
            await browser.close()
        audio = capture.stop()
    assert code == 0
    assert took < 5, f"stopping took {took:.1f} s with the panel open"
    assert np.abs(audio).max() > 0.01  # the line reached the sound server
    assert bot.logged("audio.closed")
    artifacts = os.environ.get("ISHOWTTS_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "first-run-panel.png", Path(artifacts) / "first-run-panel.png")
