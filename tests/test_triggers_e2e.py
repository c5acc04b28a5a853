"""The triggers issue end to end: `ishowtts run` against the loopback Twitch server
(and the loopback emote services), the panel in a real Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.checkpoints import ModelFiles
from tests.botprocess import BotProcess
from tests.runconfig import free_port, write_run_config
from tests.test_browser import CHROMIUM, launch_chromium
from tests.twitch.fake_emotes import FakeEmoteApis
from tests.twitch.fake_server import FakeTwitch

TOKEN = "panel-token"
TTS = "0c4bd3a8-9f7e-4b8a-8d3e-2f1c5a6b7d8e"
UNMAPPED = "99999999-aaaa-4bbb-8ccc-dddddddddddd"
MOD = (
    "@badges=moderator/1;mod=1;id={id};user-id=555;display-name=Mod :mod!m@m PRIVMSG #chan :{text}"
)
VIEWER = "@id={id};user-id={uid};display-name=Viewer{uid} :v{uid}!v@v PRIVMSG #chan :{text}"
REDEEM = (
    "@custom-reward-id={reward};id={id};user-id={uid};display-name=Fan{uid} "
    ":f{uid}!f@f PRIVMSG #chan :{text}"
)
SUB = (
    "@badges=subscriber/0;display-name=Subber;id={id};login=subber;msg-id=sub;"
    "msg-param-sub-plan=1000;room-id=1337;user-id=77 :tmi.twitch.tv USERNOTICE #chan :{text}"
)


async def test_rewards_and_subs_from_chat_to_speech_and_the_panel(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install chromium")
    from playwright.async_api import async_playwright, expect

    port = free_port()
    async with FakeTwitch() as server, FakeEmoteApis() as emote_apis:
        twitch = {
            "enabled": True,
            "channels": ["chan"],
            "url": server.url,
            "rewards": {"tts": {"id": TTS, "voice": "mei"}},
            "emote_apis": emote_apis.apis,
        }
        config = write_run_config(
            tmp_path,
            tiny_files,
            platforms={"twitch": twitch},
            web={"enabled": True, "port": port, "token": TOKEN},
            engine={"default_voice": "default"},
            policy={"third_party_emotes": ["7tv", "bttv", "ffz"]},
        )
        bot = await BotProcess.start(config)
        await bot.until("twitch.connected")

        # 7TV, BetterTTV and FrankerFaceZ emotes, fetched for the room ROOMSTATE
        # named: an emote-only line is skipped, a mixed one read without them.
        for service in ("7tv", "bttv", "ffz"):
            for scope in ("global", "channel"):
                await bot.until("emotes.loaded", service=service, scope=scope, source="network")
        for n, line in enumerate(["catJAM KEKW", "OMEGALUL monkaS", "LULW Pog", "EZ Clap"]):
            await server.send(VIEWER.format(id=f"e{n}", uid=100 + n, text=line))
            assert (await bot.until("tts.filtered", msg_id=f"e{n}"))["reason"] == "empty"
        await server.send(VIEWER.format(id="mixed", uid=110, text="KEKW that was close"))
        await bot.until("tts.spoken", msg_id="mixed")

        # A mapped reward is read in its voice; an unmapped one is logged once.
        await server.send(REDEEM.format(reward=TTS, id="r1", uid=1, text="read me in mei"))
        assert (await bot.until("tts.spoken", msg_id="r1"))["voice"] == "mei"
        for n in (2, 3):
            await server.send(REDEEM.format(reward=UNMAPPED, id=f"u{n}", uid=n, text=f"what {n}"))
            assert (await bot.until("tts.spoken", msg_id=f"u{n}"))["voice"] == "default"
        seen = await bot.until("twitch.reward_seen")
        assert seen["reward_id"] == UNMAPPED and seen["text"] == "what 2"

        # A sub sent after three chat lines is read before them.
        await server.send(MOD.format(id="p", text="!tts pause"))
        await bot.until("tts.filtered", msg_id="p")
        for n in (4, 5, 6):
            await server.send(VIEWER.format(id=f"c{n}", uid=n, text=f"chat line {n}"))
        await server.send(SUB.format(id="s1", text="first sub"))
        # Routed in order: when the resume is, the four lines wait in the queue.
        await server.send(MOD.format(id="r", text="!tts resume"))
        for msg_id in ("s1", "c4", "c5", "c6"):
            await bot.until("tts.spoken", msg_id=msg_id)
        played = [
            e["msg_id"]
            for e in bot.events
            if e["event"] == "tts.playing" and e["msg_id"] in {"s1", "c4", "c5", "c6"}
        ]
        assert played == ["s1", "c4", "c5", "c6"]

        # The panel lists the rewards seen, the unmapped one marked so.
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            base = f"http://127.0.0.1:{port}"
            context = await browser.new_context()
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            panel = await context.new_page()
            await panel.goto(f"{base}/?token={TOKEN}")
            row = panel.locator(f'#rewards li[data-reward-id="{UNMAPPED}"]')
            await expect(row).to_contain_text("not mapped")
            await expect(row).to_contain_text("what 3")
            await expect(row).to_contain_text("×2")
            await expect(panel.locator(f'#rewards li[data-reward-id="{TTS}"]')).to_contain_text(
                "tts"
            )
            await row.get_by_role("button", name="Copy id").click()
            await expect(row.get_by_role("button", name="Copied")).to_be_visible()
            assert await panel.evaluate("navigator.clipboard.readText()") == UNMAPPED
            await panel.screenshot(path=str(tmp_path / "panel-rewards.png"), full_page=True)
            await browser.close()
        assert await bot.stop() == 0
    assert not bot.logged("twitch.reward_seen")  # once per id: the second redemption is quiet
