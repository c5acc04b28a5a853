"""The panel and the overlay in a real browser (Debian's Chromium via Playwright),
against `ishowtts run` with the tiny engine and the loopback Twitch server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.checkpoints import ModelFiles
from tests.botprocess import BotProcess
from tests.runconfig import free_port, write_run_config
from tests.twitch.fake_server import FakeTwitch

CHROMIUM = "/usr/bin/chromium"
TOKEN = "panel-token"
VIEWER = "@id={id};user-id=9;display-name=Viewer :viewer!v@v PRIVMSG #chan :{text}"


async def launch_chromium(pw: Any) -> Any:
    """Debian's Chromium, headless, with nothing that reaches out to the network."""
    return await pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )


async def test_panel_skips_switches_voice_and_overlay_shows_caption(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")
    from playwright.async_api import async_playwright

    port = free_port()
    async with FakeTwitch() as server:
        config = write_run_config(
            tmp_path,
            tiny_files,
            platforms={"twitch": {"enabled": True, "channels": ["chan"], "url": server.url}},
            web={"enabled": True, "port": port, "token": TOKEN},
        )
        bot = await BotProcess.start(config)
        await bot.until("web.started")
        await bot.until("twitch.connected")
        base = f"http://127.0.0.1:{port}"
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            panel = await browser.new_page()
            await panel.goto(f"{base}/?token={TOKEN}")
            await panel.wait_for_selector("#voice option", state="attached")
            overlay = await browser.new_page()
            await overlay.goto(f"{base}/overlay?token={TOKEN}&size=40")

            # A long message plays: the overlay captions it, the panel shows it.
            long = " ".join(["a long message for the overlay to show."] * 6)
            await server.send(VIEWER.format(id="long", text=long))
            await bot.until("tts.playing", msg_id="long")
            await overlay.wait_for_selector("#caption.show", timeout=10_000)
            assert "a long message for the overlay" in await overlay.inner_text("#text")
            assert await overlay.inner_text("#user") == "Viewer"
            await panel.wait_for_function(
                "document.getElementById('now').textContent.includes('long message')"
            )
            await overlay.screenshot(path=str(tmp_path / "overlay.png"))
            await panel.screenshot(path=str(tmp_path / "panel.png"), full_page=True)

            # Skip from the panel cuts it.
            await panel.click("#skip")
            skipped = await bot.until("tts.skipped", msg_id="long")
            assert skipped["reason"] == "skip"

            # A voice picked in the panel is used for the next message.
            await panel.select_option("#voice", "mei")
            await panel.wait_for_function("document.getElementById('error').textContent === ''")
            await server.send(VIEWER.format(id="next", text="next message please"))
            assert (await bot.until("tts.spoken", msg_id="next"))["voice"] == "mei"
            await panel.wait_for_function(
                "document.getElementById('events').textContent.includes('next message please')"
            )
            await panel.screenshot(path=str(tmp_path / "panel-after.png"), full_page=True)
            await browser.close()
        assert await bot.stop() == 0
    assert not [line for line in bot.other if "Traceback" in line], bot.other
    artifacts = os.environ.get("ISHOWTTS_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for name in ("overlay.png", "panel.png", "panel-after.png"):
            shutil.copy(tmp_path / name, Path(artifacts) / name)
