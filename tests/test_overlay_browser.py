"""The OBS overlay in a real browser (Debian's Chromium via Playwright), against
`ishowtts run` with the tiny engine and the loopback Twitch server: what it shows
and when, and the bot's speech played in the page (`?audio=1`) into the test
sound server's null sink, read back from its monitor.

The tiny engine's random weights make noise-like audio: good for level, length
and gaps, and nothing else."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bot.audio import loudness
from bot.panel.web import overlay_token
from engine.checkpoints import ModelFiles
from tests.botprocess import BotProcess
from tests.runconfig import free_port, write_run_config
from tests.sink import RATE, SinkCapture, active_span
from tests.test_browser import CHROMIUM, TOKEN, launch_chromium
from tests.twitch.fake_server import FakeTwitch

READ_ONLY = overlay_token(TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A display name with invisible characters: the overlay shows it cleaned.
RAW_NAME = "Vi\u200bew\u2066er"
CHAT = "@id={id};user-id=9;display-name=" + RAW_NAME + " :viewer!v@v PRIVMSG #chan :{text}"
SUB = (
    "@display-name=Subber;id={id};login=subber;msg-id=sub;msg-param-sub-plan=1000;"
    "room-id=1;user-id=5 :tmi.twitch.tv USERNOTICE #chan :{text}"
)
LONG = " ".join(["a long message for the overlay to show."] * 6)
#: Longer than this inside a line, a silence is a gap.
MAX_GAP_S = 0.05
#: How soon after the bot's own first audio the page's must be at the sink.
MAX_DELAY_S = 0.15


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")


def keep(tmp_path: Path, *names: str) -> None:
    """Screenshots and figures to ISHOWTTS_ARTIFACTS, where it is set."""
    artifacts = os.environ.get("ISHOWTTS_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(tmp_path / name, Path(artifacts) / name)


def all_transparent(png: bytes) -> bool:
    from PIL import Image

    alpha = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3]
    return bool((alpha == 0).all())


class Bot:
    """`ishowtts run` with the panel, the loopback Twitch server and no audio device."""

    def __init__(self, process: BotProcess, server: FakeTwitch, base: str) -> None:
        self.process, self.server, self.base = process, server, base

    async def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.base + path, headers=AUTH, json=body) as r,
        ):
            assert r.status == 200, await r.text()


@pytest.fixture
async def bot(tiny_files: ModelFiles, tmp_path: Path) -> AsyncIterator[Bot]:
    port = free_port()
    async with FakeTwitch() as server:
        config = write_run_config(
            tmp_path,
            tiny_files,
            platforms={"twitch": {"enabled": True, "channels": ["chan"], "url": server.url}},
            web={"enabled": True, "port": port, "token": TOKEN},
            policy={"cooldown_s": 0},
            audio={"output_device": "none", "volume": 100},
        )
        process = await BotProcess.start(config)
        await process.until("bot.started")
        await process.until("twitch.connected")
        yield Bot(process, server, f"http://127.0.0.1:{port}")
        assert await process.stop() == 0
    assert not [line for line in process.other if "Traceback" in line], process.other


async def test_the_overlay_shows_only_what_is_on_air(bot: Bot, tmp_path: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        # A missing or wrong token: a transparent page, nothing on it, and a log line.
        refused = await browser.new_page()
        for query, reason in (("", "no_token"), ("?token=guessed-token", "wrong_token")):
            response = await refused.goto(f"{bot.base}/overlay{query}")
            assert response is not None and response.status == 401
            assert await refused.locator("form, input, button").count() == 0
            assert (await refused.inner_text("body")).strip() == ""
            png = await refused.screenshot(omit_background=True)
            assert all_transparent(png)
            logged = await bot.process.until("web.overlay_refused", reason=reason)
            assert "guessed" not in json.dumps(logged)
        (tmp_path / "overlay-refused.png").write_bytes(png)

        console: list[str] = []
        overlay = await browser.new_page(viewport={"width": 1280, "height": 720})
        overlay.on("console", lambda m: console.append(m.text))
        options = (
            "&position=top&size=40&color=%23ffee00&box=rgba(10,20,30,0.5)&align=center"
            "&animation=none&lines=2&fade=30&font=serif"
        )
        await overlay.goto(f"{bot.base}/overlay?token={READ_ONLY}{options}")
        caption = overlay.locator("#caption")
        # Idle: nothing shows, the page is transparent.
        await overlay.wait_for_timeout(500)
        assert not await caption.evaluate("c => c.classList.contains('show')")
        assert all_transparent(await overlay.screenshot(omit_background=True))

        # A chat line: the cleaned name and the text, styled as the URL says.
        await bot.server.send(CHAT.format(id="c1", text=LONG))
        await bot.process.until("tts.playing", msg_id="c1")
        await overlay.wait_for_selector("#caption.show", timeout=10_000)
        assert await overlay.inner_text("#user") == "Viewer"
        assert "a long message for the overlay" in await overlay.inner_text("#text")
        style = await caption.evaluate(
            """c => { const s = getComputedStyle(c), b = getComputedStyle(c.firstChild);
                      return [s.fontSize, s.color, s.backgroundColor, s.textAlign,
                              s.fontFamily, b.webkitLineClamp, s.transitionDuration,
                              c.getBoundingClientRect().top]; }"""
        )
        assert style == [
            "40px", "rgb(255, 238, 0)", "rgba(10, 20, 30, 0.5)", "center", "serif", "2", "0s", 24,
        ]  # fmt: skip
        # Two lines at most: the long text is clamped.
        height = await caption.evaluate("c => c.firstChild.getBoundingClientRect().height")
        assert height < 40 * 3
        await overlay.screenshot(path=str(tmp_path / "overlay-chat.png"), omit_background=True)

        # Paused: hidden at once; resumed: back. Skipped: hidden at once, not after `fade`.
        for action, shown in (("/api/pause", False), ("/api/resume", True), ("/api/skip", False)):
            started = time.monotonic()
            await bot.post(action)
            selector = "#caption.show" if shown else "#caption:not(.show)"
            await overlay.wait_for_selector(selector, state="attached", timeout=2_000)
            assert time.monotonic() - started < 1.0, action
        await bot.process.until("tts.skipped", msg_id="c1")

        # An event: its line as read, with the event's style.
        await bot.server.send(SUB.format(id="s1", text="hype"))
        await bot.process.until("tts.playing", msg_id="s1")
        await overlay.wait_for_selector("#caption.show.event.kind-sub", timeout=10_000)
        assert await overlay.inner_text("#badge") == "SUB"
        assert await overlay.inner_text("#user") == ""
        assert (await overlay.inner_text("#text")).startswith("Subber subscribed. hype")
        accent = await caption.evaluate("c => getComputedStyle(c).borderLeftColor")
        assert accent == "rgb(169, 112, 255)"
        await overlay.screenshot(path=str(tmp_path / "overlay-sub.png"), omit_background=True)
        # Read to the end, it stays a while (`fade`).
        await bot.process.until("tts.spoken", msg_id="s1")
        await overlay.wait_for_timeout(1_000)
        assert await caption.evaluate("c => c.classList.contains('show')")

        # A preview over a background (`page_bg`), in a browser tab.
        preview = await browser.new_page(viewport={"width": 1280, "height": 720})
        await preview.goto(f"{bot.base}/overlay?token={READ_ONLY}&page_bg=checker&position=left")
        assert await preview.evaluate(
            "getComputedStyle(document.documentElement).backgroundImage.includes('conic')"
        )
        await browser.close()
    assert not [m for m in console if "Content Security Policy" in m], console
    keep(tmp_path, "overlay-refused.png", "overlay-chat.png", "overlay-sub.png")


class TimedCapture(SinkCapture):
    """SinkCapture that notes when each read arrived, to place samples in time."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        super().__init__()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read1(4096):  # type: ignore[attr-defined]
            self._data += chunk
            self.arrivals.append((time.time(), len(self._data) // 4))

    def time_of(self, sample: int) -> float:
        """Wall-clock time the sink played `sample`, at the latest: each read's last
        sample was played no later than the read arrived."""
        offset = min(t - n / RATE for t, n in self.arrivals)
        return offset + sample / RATE


def log_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def longest_silence_s(audio: np.ndarray, threshold: float = 1e-4) -> float:
    quiet = np.concatenate([[0], (np.abs(audio) < threshold).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(quiet))
    runs = edges[1::2] - edges[::2]
    return float(runs.max()) / RATE if len(runs) else 0.0


async def audio_stats(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate("({...window.overlayAudio})"))


async def until_page(page: Any, condition: str, timeout_s: float = 10.0) -> None:
    """Until `condition` holds in the page (polled: the page's policy forbids the
    string evaluation `wait_for_function` does in it)."""
    async with asyncio.timeout(timeout_s):
        while not await page.evaluate(f"Boolean(window.overlayAudio && ({condition}))"):
            await asyncio.sleep(0.02)


async def test_the_speech_plays_in_the_overlay_page(
    pulse_server: None, bot: Bot, tmp_path: Path
) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    url = f"{bot.base}/overlay?token={READ_ONLY}&audio=1"
    async with async_playwright() as pw:
        browser = await launch_chromium(pw, sound=True)
        console: list[str] = []
        obs = await browser.new_page()
        obs.on("console", lambda m: console.append(m.text))
        await obs.goto(url)
        await until_page(obs, "overlayAudio.connects === 1 && overlayAudio.mode")
        assert (await audio_stats(obs))["mode"] == "worklet"
        await bot.process.until("web.audio_joined")

        # One line, the bot with no device of its own: the page's audio at the sink.
        capture = TimedCapture()
        await bot.server.send(CHAT.format(id="a1", text="the first line read in the browser."))
        playing = await bot.process.until("tts.playing", msg_id="a1")
        spoken = await bot.process.until("tts.spoken", msg_id="a1")
        await asyncio.sleep(0.5)
        got = capture.stop()
        start, end = active_span(got)
        line = got[start:end]
        delay = capture.time_of(start) - log_time(playing)
        figures = {
            "delay_ms": round(delay * 1000, 1),
            "audio_s": spoken["audio_s"],
            "sink_s": round((end - start) / RATE, 3),
            "lufs": round(loudness.loudness_lufs(line, RATE), 2),
            "peak_dbfs": round(20 * float(np.log10(np.abs(line).max())), 2),
            "longest_silence_ms": round(longest_silence_s(line) * 1000, 1),
        }
        (tmp_path / "browser-audio.json").write_text(json.dumps(figures, indent=1))
        print("browser audio:", figures)
        assert (end - start) / RATE == pytest.approx(spoken["audio_s"], abs=0.05), figures
        assert figures["lufs"] == pytest.approx(-18.0, abs=1.5), figures
        assert figures["peak_dbfs"] <= -1.0 + 0.05, figures
        assert longest_silence_s(line) < MAX_GAP_S, figures
        assert 0 < delay <= MAX_DELAY_S, figures
        stats = await audio_stats(obs)
        assert stats["started"] == [1] and stats["gaps"] == 0 and stats["done"] == 1

        # A second page (a preview tab) gets the stream too; a pause holds both and
        # a skip cuts both.
        tab = await browser.new_page()
        await tab.goto(url)
        await until_page(tab, "overlayAudio.connects === 1")
        assert (await bot.process.until("web.audio_joined"))["listeners"] == 2
        capture = TimedCapture()
        await bot.server.send(CHAT.format(id="a2", text=LONG))
        await bot.process.until("tts.playing", msg_id="a2")
        for page in (obs, tab):
            await until_page(page, "overlayAudio.started.includes(2)")
        await asyncio.sleep(0.6)
        await bot.post("/api/pause")
        await asyncio.sleep(0.6)
        await bot.post("/api/resume")
        await asyncio.sleep(0.6)
        skipped_at = time.time()
        await bot.post("/api/skip")
        await bot.process.until("tts.skipped", msg_id="a2")
        await asyncio.sleep(0.5)
        got = capture.stop()
        start, end = active_span(got)
        assert (await audio_stats(obs))["started"] == [1, 2]
        assert (await audio_stats(tab))["started"] == [2]
        # Both pages played it (each page's player says so: they share the sink),
        # held it while paused, and stopped at the skip.
        assert capture.time_of(end) - skipped_at < 0.25
        assert 0.35 < longest_silence_s(got[start:end]) < 0.75  # the pause

        # A page that reconnects part-way through a line picks it up where the bot is.
        capture = TimedCapture()
        await bot.server.send(CHAT.format(id="a3", text=LONG))
        playing = await bot.process.until("tts.playing", msg_id="a3")
        await tab.close()
        await asyncio.sleep(0.5)
        await obs.reload()
        await until_page(obs, "overlayAudio.done === 1", timeout_s=30)
        spoken = await bot.process.until("tts.spoken", msg_id="a3")
        got = capture.stop()
        assert (await audio_stats(obs))["started"] == [3]
        start, end = active_span(got)
        # Playing until the line's end, with one break where the page was reloaded: as
        # long as the bot's own playing of it (the audio, plus any wait for the engine),
        # give or take the page's glitches while the engine takes the CPU for the rest.
        played = log_time(spoken) - log_time(playing)
        assert played - 0.1 < (end - start) / RATE < played + 0.6

        # Where a page may not use worklets (plain http from another machine is no
        # secure context), it plays through its fallback.
        await obs.close()
        legacy = await browser.new_page()
        legacy.on("console", lambda m: console.append(m.text))
        await legacy.add_init_script(
            "Object.defineProperty(BaseAudioContext.prototype, 'audioWorklet', {get() {}})"
        )
        await legacy.goto(url)
        await until_page(legacy, "overlayAudio.connects === 1 && overlayAudio.mode")
        assert (await audio_stats(legacy))["mode"] == "script"
        await bot.post("/api/volume", {"volume": 50})  # -6 dB
        capture = TimedCapture()
        await bot.server.send(CHAT.format(id="a4", text="the fallback plays it too."))
        spoken = await bot.process.until("tts.spoken", msg_id="a4")
        await until_page(legacy, "overlayAudio.done === 1")
        got = capture.stop()
        start, end = active_span(got)
        # Its timing is the page's main thread's (busy pages stretch it): the level only.
        assert (end - start) / RATE > 0.8 * spoken["audio_s"]
        assert loudness.loudness_lufs(got[start:end], RATE) == pytest.approx(-24.0, abs=1.5)
        await browser.close()
    assert not [m for m in console if "Content Security Policy" in m], console
    keep(tmp_path, "browser-audio.json")
