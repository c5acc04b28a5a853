"""The panel as a streamer uses it, in a real Chromium: every state it shows and
every control it has, against `ishowtts run` (the tiny engine, the loopback
Twitch server), and its layout at 1280 and 400 px. Screenshots are kept as CI
artifacts (`ISHOWTTS_ARTIFACTS`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.audio.player import Player
from bot.audio.speaker import Speaker
from bot.config import WebConfig
from bot.panel.web import attach, create_app, serve, set_progress
from engine.checkpoints import ModelFiles
from engine.synth import Engine
from tests.botprocess import BotProcess
from tests.engine.tiny import write_voice
from tests.runconfig import free_port, write_run_config
from tests.test_browser import CHROMIUM, launch_chromium
from tests.test_web import make_bot
from tests.twitch.fake_server import FakeTwitch

TOKEN = "panel-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REWARD = "0c4bd3a8-9f7e-4b8a-8d3e-2f1c5a6b7d8e"
LINE = "@id={id};user-id={uid};display-name={name} :{login}!v@v PRIVMSG #chan :{text}"
CLOCK = re.compile(r"\d{1,2}:\d{2}:\d{2}(\s?[AP]M)?")


def viewer(msg_id: str, text: str, uid: int, name: str) -> str:
    return LINE.format(id=msg_id, uid=uid, name=name, login=name.lower(), text=text)


def needs_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")


def keep(tmp_path: Path, *names: str) -> None:
    """Screenshots to the CI artifacts, when CI asks for them."""
    artifacts = os.environ.get("ISHOWTTS_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(tmp_path / name, Path(artifacts) / name)


async def no_sideways_scroll(page: Any) -> None:
    scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the page is {scroll} px wide in a {inner} px window"


async def test_the_panel_says_starting_with_its_progress_then_live(
    tmp_path: Path, tiny_files: ModelFiles
) -> None:
    # As `ishowtts run` serves it: before the engine is warm, no speaker yet.
    needs_chromium()
    from playwright.async_api import async_playwright, expect

    bot = make_bot(tmp_path)
    await bot.voice_checks.refresh()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    app = create_app(WebConfig(), bot)
    set_progress(app, "loading the voice model on cpu…")
    runner = await serve(WebConfig(port=port), app, sock)
    try:
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            page = await browser.new_page(viewport={"width": 400, "height": 800})
            await page.goto(f"http://127.0.0.1:{port}/")
            await expect(page.locator("#state")).to_have_text("starting")
            banner = page.locator("#banner .starting")
            await expect(banner).to_have_text("Starting: loading the voice model on cpu…")
            await expect(banner.locator("progress")).to_have_count(1)
            await expect(page.locator("#preview")).to_be_disabled()
            await expect(page.locator("#now")).to_have_text("the voice engine is starting…")
            set_progress(app, "loaded in 0.4 s; warming up…")
            await expect(banner).to_have_text("Starting: loaded in 0.4 s; warming up…")
            await no_sideways_scroll(page)
            await page.screenshot(path=str(tmp_path / "panel-starting.png"), full_page=True)
            engine = Engine(bot.config.engine, bot.voices, tiny_files)
            attach(app, Speaker(bot.queue, engine, Player(bot.config.audio), bot.control), engine)
            await expect(page.locator("#state")).to_have_text("live")
            await expect(page.locator("#banner .starting")).to_have_count(0)
            await expect(page.locator("#preview")).to_be_enabled()
            await browser.close()
    finally:
        await runner.cleanup()
    keep(tmp_path, "panel-starting.png")


async def test_a_streamer_runs_the_show_from_the_panel(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    needs_chromium()
    from playwright.async_api import async_playwright, expect

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fault = tmp_path / "engine-fault"
    async with FakeTwitch() as server, async_playwright() as pw:
        browser = await launch_chromium(pw)  # first: the page opens while the bot starts
        twitch = {
            "enabled": True,
            "channels": ["chan"],
            "url": server.url,
            "rewards": {"tts": {"id": REWARD, "voice": "mei"}},
        }
        config = write_run_config(
            tmp_path,
            tiny_files,
            platforms={"twitch": twitch},
            web={"enabled": True, "port": port, "token": TOKEN},
            policy={"cooldown_s": 0},
            engine={"fault_file": str(fault), "stall_timeout_s": 4.0},
        )
        voices = tmp_path / "voices"
        write_voice(voices, "hush", amplitude=0.0)  # silent
        write_voice(voices, "notext").with_suffix(".txt").unlink()
        write_voice(voices, "spare")
        bot = await BotProcess.start(config)
        try:
            # Served from the start: "starting" with the progress line, then live.
            await bot.until("web.started")
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base}/api/status", headers=AUTH) as r,
            ):
                early = await r.json()
            assert early["state"] == "starting" and early["detail"], early
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            await page.goto(f"{base}/?token={TOKEN}")
            await expect(page.locator("#state")).to_have_text("live", timeout=60_000)
            await bot.until("twitch.connected")
            chip = page.locator('#connections [data-platform="twitch"]')
            await expect(chip).to_have_class(re.compile(r"\bup\b"))
            await expect(page.locator("#rewardmap")).to_contain_text(REWARD)
            await expect(page.locator("#rewardmap")).to_contain_text("voice mei")
            # The two browser-source URLs, each with the overlay's read-only token.
            overlay = page.locator("#overlayurl")
            await expect(overlay).to_have_value(re.compile(r"/overlay\?token=[0-9a-f]+$"))
            with_audio = await overlay.input_value() + "&audio=1"
            await expect(page.locator("#overlayaudiourl")).to_have_value(with_audio)

            # Broken voices: greyed with the reason, not offered, refused if sent anyway.
            await expect(page.locator('#voice option[value="hush"]')).to_be_disabled()
            await expect(page.locator('#voice option[value="notext"]')).to_be_disabled()
            await expect(page.locator('#voice option[value="mei"]')).to_be_enabled()
            await expect(page.locator("#voices li.broken")).to_have_count(2)
            await expect(page.locator("#voices")).to_contain_text("is silent")
            await expect(page.locator("#voices")).to_contain_text("missing transcript")
            await expect(page.locator('#uvvoice option[value="hush"]')).to_have_count(0)
            sent = await page.evaluate("api('POST', '/api/voice', {voice: 'hush'})")
            assert sent["ok"] is False
            await expect(page.locator("#error")).to_contain_text("unusable voice 'hush'")

            # A preview of the streamer's own text: making it (held 1 s), then playing.
            await page.fill("#saytext", "my own words to try")
            await page.select_option("#sayvoice", "spare")
            fault.write_text("hang 1")
            async with page.expect_request("**/api/synthesize") as request:
                await page.click("#preview")
            body = json.loads((await request.value).post_data or "{}")
            assert body == {"text": "my own words to try", "voice": "spare"}
            state = page.locator("#previewstate")
            await expect(state).to_contain_text("making the preview in spare")
            await expect(state).to_contain_text(
                re.compile("(playing|played) the preview"), timeout=30_000
            )
            # A voice broken since the last check: the preview says why.
            (voices / "spare.txt").unlink()
            await page.click("#preview")
            await expect(state).to_contain_text("preview failed")
            await expect(state).to_contain_text("missing transcript")
            await expect(page.locator("#error")).to_contain_text("missing transcript")
            await expect(page.locator('#voice option[value="spare"]')).to_be_disabled()
            await page.fill("#saytext", "")

            # Viewers: mute and unmute from the row; a nickname and a voice of their own.
            await server.send(viewer("t1", "hello there", 9, "Troll"))
            await server.send(viewer("f1", "hi from the fan", 10, "Fan"))
            await bot.until("tts.spoken", msg_id="f1")
            await page.fill("#muteuser", "Troll")
            await page.press("#muteuser", "Enter")
            muted = page.locator("#muted li", has_text="Troll")
            await expect(muted).to_contain_text("twitch")
            await server.send(viewer("t2", "a muted line", 9, "Troll"))
            assert (await bot.until("tts.filtered", msg_id="t2"))["reason"] == "muted"
            await muted.get_by_role("button", name="Unmute").click()
            await expect(page.locator("#muted")).to_have_text("nobody")
            await page.fill("#nickuser", "Fan")
            await page.fill("#nickname", "Big Fan")
            await page.click("#nickform button")
            await expect(page.locator("#nicks li")).to_contain_text("→ Big Fan")
            await page.fill("#uvuser", "Fan")
            await page.select_option("#uvvoice", "mei")
            await page.click("#uvform button")
            await expect(page.locator("#uservoices li")).to_contain_text("→ mei")
            await server.send(viewer("t3", "back again", 9, "Troll"))
            await bot.until("tts.spoken", msg_id="t3")
            await server.send(viewer("f2", "second line", 10, "Fan"))
            said = await bot.until("tts.spoken", msg_id="f2")
            assert said["voice"] == "mei" and "Big Fan" in said["text"], said

            # The history: readable reasons, local times, what was said beside the original.
            fan_row = page.locator("#events li", has_text="second line")
            await expect(fan_row.locator(".spoken-text")).to_have_text(f"said: {said['text']}")
            assert CLOCK.fullmatch(await fan_row.locator(".time").inner_text())
            muted_row = page.locator("#events li", has=page.locator(".reason", has_text="muted"))
            await expect(muted_row).to_contain_text("muted viewer")

            # Read mode, and a blocked word added live.
            await page.select_option("#mode", "command")
            await expect(page.locator("#notice")).to_contain_text("read mode is now command")
            await server.send(viewer("m1", "a plain chat line", 11, "Other"))
            assert (await bot.until("tts.filtered", msg_id="m1"))["reason"] == "not_command"
            await page.select_option("#mode", "all")
            await expect(page.locator("#notice")).to_contain_text("read mode is now all")
            await page.fill("#blockword", "pineapple")
            await page.press("#blockword", "Enter")
            await expect(page.locator("#blocked")).to_contain_text("pineapple")
            await server.send(viewer("b1", "I love pineapple pizza", 12, "Foodie"))
            assert (await bot.until("tts.filtered", msg_id="b1"))["reason"] == "blocked_word"
            blocked_row = page.locator("#events li", has_text="blocked word")
            await expect(blocked_row).to_contain_text("Foodie")
            assert "pineapple" not in await blocked_row.inner_text()  # filtered text is not shown

            # Paused with P: a banner says so; "play next" reorders; Space resumes.
            await page.locator("h1").click()
            await page.keyboard.press("p")
            await expect(page.locator("#state")).to_have_text("paused")
            await expect(page.locator("#banner .paused")).to_contain_text("Paused")
            for n in (1, 2, 3):
                await server.send(viewer(f"n{n}", f"queued line {n}", 20 + n, f"Q{n}"))
            await expect(page.locator("#queue li")).to_have_count(3)
            third = page.locator("#queue li", has_text="queued line 3")
            await expect(third).to_contain_text(re.compile(r"priority \d+(\.\d+)? · \d+ s"))
            await third.get_by_role("button", name="Play next").click()
            await expect(page.locator("#queue li").first).to_contain_text("queued line 3")

            # Layout, with lines waiting: 1280 px, then one column at 400 px, nothing off the side.
            await no_sideways_scroll(page)
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(tmp_path / "panel-1280.png"), full_page=True)
            await page.set_viewport_size({"width": 400, "height": 900})
            columns = await page.evaluate(
                "getComputedStyle(document.querySelector('main')).gridTemplateColumns"
            )
            assert len(columns.split()) == 1, columns
            await no_sideways_scroll(page)
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(tmp_path / "panel-400.png"), full_page=True)
            await page.set_viewport_size({"width": 1280, "height": 900})
            await page.locator("h1").click()
            await page.keyboard.press(" ")
            await expect(page.locator("#state")).to_have_text("live")
            said_as = {
                n: (await bot.until("tts.spoken", msg_id=f"n{n}"))["text"] for n in (1, 2, 3)
            }
            played = [
                e["msg_id"]
                for e in bot.events
                if e["event"] == "tts.playing" and e["msg_id"] in {"n1", "n2", "n3"}
            ]
            assert played == ["n3", "n1", "n2"]

            # Replay a line from the history, as the streamer's own.
            row = page.locator("#events li", has=page.locator(".tag.spoken")).filter(
                has_text="queued line 3"
            )
            await row.get_by_role("button", name="Replay").click()
            replayed = await bot.until("tts.spoken", platform="local")
            assert replayed["text"] == said_as[3]  # as it was said, numbers as words

            # Skip with the keyboard while a long line plays.
            long = " ".join(["a long message to skip with the keyboard."] * 6)
            await server.send(viewer("long", long, 30, "Talker"))
            await bot.until("tts.playing", msg_id="long")
            await page.locator("h1").click()
            await page.keyboard.press("s")
            assert (await bot.until("tts.skipped", msg_id="long"))["reason"] == "skip"

            # The engine stalls on a line: the panel says so until one is spoken again.
            fault.write_text("hang 8")
            await server.send(viewer("st", "this line stalls", 31, "Stuck"))
            assert (await bot.until("tts.skipped", msg_id="st"))["reason"] == "engine_stalled"
            await expect(page.locator("#state")).to_have_text("engine stalled")
            await expect(page.locator("#banner .stalled")).to_contain_text("stalled")
            await page.screenshot(path=str(tmp_path / "panel-stalled.png"))
            await server.send(viewer("ok", "and this one works", 32, "Fine"))
            await bot.until("tts.spoken", msg_id="ok")
            await expect(page.locator("#state")).to_have_text("live")

            # Twitch goes away: its chip turns red and a banner says its chat is not read.
            server.refuse_until = time.monotonic() + 60
            server.drop()
            await expect(chip).to_have_class(re.compile(r"\bdown\b"))
            await expect(page.locator("#banner .down")).to_contain_text("twitch is not connected")

            # The bot freezes (its stream open, silent), then dies: the page says so
            # within 3 s each time, and its actions say why they fail.
            bot.proc.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            await expect(page.locator("#state")).to_have_text("offline", timeout=3000)
            noticed_frozen = time.monotonic() - frozen
            bot.proc.send_signal(signal.SIGCONT)
            await expect(page.locator("#state")).to_have_text("live")
            await expect(page.locator("#banner .offline")).to_have_count(0)
            bot.proc.kill()
            killed = time.monotonic()
            await expect(page.locator("#state")).to_have_text("offline", timeout=3000)
            noticed = time.monotonic() - killed
            await expect(page.locator("#banner .offline")).to_contain_text("Bot offline")
            await expect(page.locator("#skip")).to_be_disabled()
            await page.evaluate("api('POST', '/api/skip')")
            await expect(page.locator("#error")).to_have_text(
                "bot offline: the request did not reach it"
            )
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(tmp_path / "panel-offline.png"), full_page=True)
            assert not [m for m in console if "Content Security Policy" in m], console
            await browser.close()
        finally:
            if bot.proc.returncode is None:
                bot.proc.kill()
            await bot.proc.wait()
    assert noticed < 3, f"the page noticed the bot was gone after {noticed:.1f} s"
    assert noticed_frozen < 3, f"the page noticed the bot froze after {noticed_frozen:.1f} s"
    assert not [line for line in bot.other if "Traceback" in line], bot.other
    keep(tmp_path, "panel-1280.png", "panel-400.png", "panel-stalled.png", "panel-offline.png")
