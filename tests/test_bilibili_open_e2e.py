"""`ishowtts run` reading a loopback room through the open live platform: the
secrets from the environment, a signed session, the room's danmaku, super chat
(and its deletion), gift and guard read with their names, the session ended
at the stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.chat import outcomes
from engine.checkpoints import ModelFiles
from tests.bilibili import fixtures as fx
from tests.bilibili import open_fixtures as ofx
from tests.bilibili.fake_open_platform import APP_ID, CODE, KEY_ID, KEY_SECRET, FakeOpenPlatform
from tests.botprocess import BotProcess
from tests.runconfig import write_run_config


async def test_open_platform_room_read_end_to_end(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISHOWTTS_BILIBILI_CODE", CODE)
    monkeypatch.setenv("ISHOWTTS_BILIBILI_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ISHOWTTS_BILIBILI_ACCESS_KEY_SECRET", KEY_SECRET)
    async with FakeOpenPlatform() as server:
        server.dead_link_first = False
        platform = {k: v for k, v in server.config().items() if k in ("enabled", "mode")}
        platform |= {"app_id": APP_ID, "open_api_url": server.config()["open_api_url"]}
        config = write_run_config(
            tmp_path, tiny_files, platforms={"bilibili": platform}, policy={"gift_merge_s": 0.5}
        )
        bot = await BotProcess.start(config)
        ends = []
        await bot.until("bilibili.connected", mode="open")
        game_id = server.newest_game
        await server.send(fx.message_packet(ofx.danmaku("主播好", msg_id="dm1")))
        ends.append(await bot.until(outcomes.SPOKEN, msg_id="dm1"))
        # Deleted before it is read: taken back.
        await server.send(
            fx.zlib_batch(ofx.superchat(message_id=77, rmb=30), ofx.superchat_delete(77))
        )
        ends.append(await bot.until(outcomes.RETRACTED, msg_id="sc:77"))
        await server.send(fx.message_packet(ofx.gift(num=2, msg_id="g1")))
        ends.append(await bot.until(outcomes.SPOKEN, msg_id="gift:g1"))
        await server.send(fx.message_packet(ofx.guard()))
        ends.append(await bot.until(outcomes.SPOKEN, msg_id="guard:guard-1"))
        assert await bot.stop() == 0
    assert [(e["msg_id"], e["user"], e["platform"]) for e in ends] == [
        ("dm1", "小明", "bilibili"),
        ("sc:77", "大佬", "bilibili"),
        ("gift:g1", "送礼人", "bilibili"),
        ("guard:guard-1", "舰长大人", "bilibili"),
    ]
    # Every message ended once, and only once.
    later = [e["msg_id"] for e in bot.events if e["event"] in outcomes.TERMINAL_EVENTS]
    assert later == []
    assert bot.logged("bilibili.open_ended", game_id=game_id)
    assert server.paths()[-1] == f"end:{game_id}"
    assert server.refused == []
    text = json.dumps(bot.events, ensure_ascii=False) + "\n".join(bot.other)
    assert CODE not in text and KEY_SECRET not in text and KEY_ID not in text
