"""The panel and the overlay in a real browser (Debian's Chromium via Playwright),
against `ishowtts run` with the tiny engine and the loopback Twitch server."""

from __future__ import annotations

import json
import os
import re
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


async def launch_chromium(pw: Any, sound: bool = False) -> Any:
    """Debian's Chromium, headless, with nothing that reaches out to the network.

    With `sound`, pages play to the sound server (the test one, as the player
    tests use) without a click first, as an OBS browser source does; else muted."""
    return await pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        ignore_default_args=["--mute-audio"] if sound else None,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            *(["--autoplay-policy=no-user-gesture-required"] if sound else []),
        ],
    )


async def test_panel_skips_switches_voice_and_overlay_shows_caption(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")
    from playwright.async_api import async_playwright, expect

    port = free_port()
    async with FakeTwitch() as server:
        config = write_run_config(
            tmp_path,
            tiny_files,
            platforms={"twitch": {"enabled": True, "channels": ["chan"], "url": server.url}},
            web={"enabled": True, "port": port, "token": TOKEN},
            policy={"cooldown_s": 0},  # one viewer sends both lines
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
            # The overlay's URL, as the panel shows it for OBS, carries only its read-only token.
            await expect(panel.locator("#overlayurl")).to_have_value(re.compile("overlay"))
            overlay_url = await panel.input_value("#overlayurl")
            assert overlay_url.startswith(f"{base}/overlay?token=") and TOKEN not in overlay_url
            overlay = await browser.new_page()
            await overlay.goto(f"{overlay_url}&size=40")

            # A long message plays: the overlay captions it, the panel shows it.
            long = " ".join(["a long message for the overlay to show."] * 6)
            await server.send(VIEWER.format(id="long", text=long))
            await bot.until("tts.playing", msg_id="long")
            await overlay.wait_for_selector("#caption.show", timeout=10_000)
            assert "a long message for the overlay" in await overlay.inner_text("#text")
            assert await overlay.inner_text("#user") == "Viewer"
            await expect(panel.locator("#now")).to_contain_text("long message")
            await overlay.screenshot(path=str(tmp_path / "overlay.png"))
            await panel.screenshot(path=str(tmp_path / "panel.png"), full_page=True)

            # Skip from the panel cuts it.
            await panel.click("#skip")
            skipped = await bot.until("tts.skipped", msg_id="long")
            assert skipped["reason"] == "skip"

            # A voice picked in the panel is used for the next message.
            await panel.select_option("#voice", "mei")
            await expect(panel.locator("#error")).to_have_text("")
            await server.send(VIEWER.format(id="next", text="next message please"))
            assert (await bot.until("tts.spoken", msg_id="next"))["voice"] == "mei"
            await expect(panel.locator("#events")).to_contain_text("next message please")
            await panel.screenshot(path=str(tmp_path / "panel-after.png"), full_page=True)
            await browser.close()
        assert await bot.stop() == 0
    assert not [line for line in bot.other if "Traceback" in line], bot.other
    artifacts = os.environ.get("ISHOWTTS_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for name in ("overlay.png", "panel.png", "panel-after.png"):
            shutil.copy(tmp_path / name, Path(artifacts) / name)


ATTACKER_PAGE = """<!doctype html>
<title>cute cats</title>
<form method="post" action="{bot}/api/say" enctype="text/plain">
<input name='{{"text": "attacker form", "x": "' value='"}}'></form>
<script>
const bot = "{bot}";
const post = (path, body) => fetch(bot + path, {{
  method: "POST", mode: "no-cors", body, headers: {{"Content-Type": "text/plain"}}}});
window.attack = async () => {{
  await Promise.allSettled([
    post("/api/pause"),
    post("/api/say", JSON.stringify({{text: "attacker text"}})),
    post("/api/volume", JSON.stringify({{volume: 3}})),
    post("/api/mute", JSON.stringify({{user: "viewer"}})),
  ]);
  document.title = "sent";
  document.forms[0].submit();
}};
</script>
"""


async def test_a_page_on_another_port_cannot_drive_the_bot_but_the_panel_can(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    # The default set-up: loopback, no token. A page the streamer happens to open,
    # served from another port of this machine, tries every trick a page has.
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")
    import aiohttp
    from aiohttp import web
    from playwright.async_api import async_playwright, expect

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_run_config(tmp_path, tiny_files, web={"enabled": True, "port": port})
    bot = await BotProcess.start(config)
    await bot.until("bot.started")
    attacker = web.Application()
    page_html = ATTACKER_PAGE.format(bot=base)
    attacker.router.add_get("/", lambda _: web.Response(text=page_html, content_type="text/html"))
    runner = web.AppRunner(attacker)
    await runner.setup()
    attacker_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", attacker_port).start()
    try:
        async with aiohttp.ClientSession() as session, async_playwright() as pw:

            async def status() -> dict[str, Any]:
                async with session.get(f"{base}/api/status") as r:
                    return dict(await r.json())

            before = await status()
            browser = await launch_chromium(pw)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{attacker_port}/")
            async with page.expect_navigation(url=f"{base}/api/say"):
                await page.evaluate("attack()")
            assert await page.title() == "" and "refused" in await page.inner_text("body")
            after = await status()
            assert not after["paused"] and after["muted"] == [] and after["queue"] == 0
            assert after["volume"] == before["volume"] != 3
            refused = await bot.until("web.refused")
            assert refused["reason"] == "cross_site" and refused["origin"].endswith(
                str(attacker_port)
            )

            # DNS rebinding: the browser would send the attacker's name as the Host.
            async with session.get(f"{base}/api/status", headers={"Host": "evil.example"}) as r:
                assert r.status == 421

            # The panel itself, same origin, still drives the bot; its own code runs
            # under the Content-Security-Policy without a single violation.
            console: list[str] = []
            panel = await browser.new_page()
            panel.on("console", lambda m: console.append(m.text))
            await panel.goto(f"{base}/")
            await panel.wait_for_selector("#voice option", state="attached")
            async with panel.expect_response(f"{base}/api/synthesize") as previewed:
                await panel.click("#preview")
            assert (await previewed.value).status == 200
            await panel.fill("#saytext", "hello from the panel")
            await panel.press("#saytext", "Enter")
            spoken = await bot.until("tts.spoken", platform="local")
            assert spoken["user"] == "streamer"
            await panel.click("#pause")
            await expect(panel.locator("#pause")).to_have_text("Resume")
            assert (await status())["paused"]
            await expect(panel.locator("#error")).to_have_text("")
            await browser.close()
            assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        await runner.cleanup()
        assert await bot.stop() == 0
    assert not [e for e in bot.events if e.get("platform") == "local" and "attacker" in str(e)]
    assert not [e for e in bot.events if "attacker" in json.dumps(e)]
    assert not [line for line in bot.other if "Traceback" in line], bot.other


async def test_text_from_chat_stays_text_in_the_panel(tmp_path: Path) -> None:
    # Names and ids come from chat: quotes must not break out of an attribute,
    # markup must not become elements.
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")
    import socket

    from playwright.async_api import async_playwright

    from bot.config import WebConfig
    from bot.panel.web import create_app, serve
    from tests.factories import chat
    from tests.test_web import make_bot

    bot = make_bot(tmp_path)
    hostile_id = 'q1" onclick="document.title=1" data-x="'
    hostile_user = '<img src=x onerror="document.title=2">'
    bot.router.handle(chat('"><b>bold</b>', message_id=hostile_id, user_name=hostile_user))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    runner = await serve(WebConfig(port=port), create_app(WebConfig(), bot), sock)
    # The history shows what was said beside the original, as text too.
    from bot.chat import outcomes

    heard = chat("hi <i>chat</i>", message_id="s1", user_name="Ann")
    spoken = 'Ann says hi <img src=x onerror="document.title=3">'
    outcomes.log_outcome(outcomes.SPOKEN, heard, voice="default", text=spoken)
    try:
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            panel = await browser.new_page()
            await panel.goto(f"http://127.0.0.1:{port}/")
            button = await panel.wait_for_selector("#queue button")
            assert button is not None
            assert await button.evaluate("b => b.getAttributeNames()") == ["data-id"]
            assert await button.evaluate("b => b.dataset.id") == f"twitch:{hostile_id}"
            assert await panel.inner_text("#queue b") == hostile_user
            assert await panel.locator("#queue img").count() == 0
            assert '"><b>bold</b>' in await panel.inner_text("#queue .text")
            said = await panel.wait_for_selector("#events .spoken-text")
            assert said is not None
            assert await said.inner_text() == f"said: {spoken}"
            assert heard.text in await panel.inner_text("#events")
            assert await panel.locator("#events img, #events i").count() == 0
            assert await panel.title() == "iShowTTS panel"
            await button.click()  # the ✕ removes exactly that message
            await panel.wait_for_selector("#queue li.muted")
            assert len(bot.queue) == 0
            await browser.close()
    finally:
        await runner.cleanup()
