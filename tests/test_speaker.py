"""The speaker with the real tiny engine and the real player on the null sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.events import Role
from bot.app import Bot
from bot.audio.player import Player
from bot.audio.speaker import Speaker
from bot.chat import outcomes
from bot.config import Config
from engine.checkpoints import ModelFiles
from engine.synth import Engine
from tests.engine.tiny import TINY_ARCH, write_voice
from tests.factories import chat


@pytest.fixture
def queue_config() -> dict[str, Any]:
    """The `queue` section of the rig's config (a test overrides it)."""
    return {}


@pytest.fixture
async def rig(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path, queue_config: dict[str, Any]
) -> AsyncIterator[Any]:
    voices = tmp_path / "voices"
    write_voice(voices, "default")
    config = Config.model_validate(
        {
            "engine": {
                "voices_dir": str(voices),
                "arch": TINY_ARCH.model_dump(),
                "nfe_steps": 4,
                "stall_timeout_s": 1.0,
                "fault_file": str(tmp_path / "fault"),
            },
            "commands": {"state_file": str(tmp_path / "state.json")},
            "queue": queue_config,
        }
    )
    bot = Bot(config)
    engine = Engine(config.engine, bot.voices, tiny_files)
    engine.start()
    await engine.wait_ready()
    player = Player(config.audio)
    player_task = asyncio.create_task(player.run())
    await asyncio.wait_for(player.opened.wait(), 10)
    speaker = Speaker(bot.queue, engine, player, bot.control)
    task = asyncio.create_task(speaker.run())
    yield bot, speaker
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await player.close()
    player_task.cancel()
    engine.close()


async def wait_for(logs: list[dict[str, Any]], event: str, msg_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            for e in logs:
                if e["event"] == event and e.get("msg_id") == msg_id:
                    return e
            await asyncio.sleep(0.02)


async def test_spoken_with_ttfa_and_one_end_each(rig: Any) -> None:
    bot, _ = rig
    with capture_logs() as logs:
        a, b = chat("first message"), chat("second message")
        bot.router.handle(a)
        bot.router.handle(b)
        first = await wait_for(logs, outcomes.SPOKEN, a.message_id)
        second = await wait_for(logs, outcomes.SPOKEN, b.message_id)
    assert first["ttfa_ms"] > 0 and first["audio_s"] > 0
    # Exactly what the engine was given; a calm queue reads at the normal speed.
    # (English chat has two template variants.)
    assert first["text"] in {f"{a.user_name} says first message", f"{a.user_name}: first message"}
    assert second["text"] in {
        f"{b.user_name} says second message",
        f"{b.user_name}: second message",
    }
    assert "speed" not in first
    ends = [e["msg_id"] for e in logs if e["event"] in outcomes.TERMINAL_EVENTS]
    assert ends == [a.message_id, b.message_id]


async def test_pause_holds_new_messages_until_resume(rig: Any) -> None:
    bot, _ = rig
    bot.control.pause()
    with capture_logs() as logs:
        m = chat("wait for it")
        bot.router.handle(m)
        await asyncio.sleep(1.0)
        assert not [e for e in logs if e["event"] == outcomes.SPOKEN]
        bot.control.resume()
        await wait_for(logs, outcomes.SPOKEN, m.message_id)


async def test_after_a_pause_the_most_urgent_line_goes_first(rig: Any) -> None:
    # The speaker idles in the queue when the pause comes; the first line of the
    # pause must not jump ahead of a more urgent one sent after it.
    bot, _ = rig
    await asyncio.sleep(0.1)
    bot.control.pause()
    with capture_logs() as logs:
        chat_line = chat("just chatting")
        moderator = chat("moderator line", roles=frozenset({Role.MODERATOR}))
        bot.router.handle(chat_line)
        await asyncio.sleep(0.2)
        bot.router.handle(moderator)
        await asyncio.sleep(0.2)
        bot.control.resume()
        await wait_for(logs, outcomes.SPOKEN, chat_line.message_id)
    playing = [e["msg_id"] for e in logs if e["event"] == "tts.playing"]
    assert playing == [moderator.message_id, chat_line.message_id]


async def test_engine_failure_ends_the_item_as_skipped(rig: Any) -> None:
    bot, _ = rig
    bot.control.voice = "missing"
    with capture_logs() as logs:
        m = chat("this cannot be said")
        bot.router.handle(m)
        skipped = await wait_for(logs, outcomes.SKIPPED, m.message_id)
    assert skipped["reason"] == "engine_error"
    assert any(e["event"] == "engine.error" for e in logs)


async def test_a_stalled_synthesis_is_skipped_and_the_next_message_spoken(
    rig: Any, tmp_path: Path
) -> None:
    bot, _ = rig
    (tmp_path / "fault").write_text("hang 3")
    with capture_logs() as logs:
        stuck, after = chat("this one hangs"), chat("this one follows")
        bot.router.handle(stuck)
        bot.router.handle(after)
        skipped = await wait_for(logs, outcomes.SKIPPED, stuck.message_id)
        await wait_for(logs, outcomes.SPOKEN, after.message_id)
    assert skipped["reason"] == "engine_stalled"
    assert [e["event"] for e in logs if e["event"].startswith("engine.")][:2] == [
        "engine.fault_injected",
        "engine.stalled",
    ]


async def test_retraction_between_pop_and_preparation_is_honoured(rig: Any) -> None:
    bot, speaker = rig
    item = bot.policy.evaluate(chat("retracted in the gap"), bot.control.policy_state)
    # The queue reports it in flight, the speaker does not hold it yet.
    assert speaker.cut([item], outcomes.RETRACTED)
    prepared = speaker._prepare(item)
    assert prepared.ended == (outcomes.RETRACTED, "retracted")
    with capture_logs() as logs:
        await speaker._play(prepared)
    assert [(e["event"], e["msg_id"]) for e in logs if e["event"] in outcomes.TERMINAL_EVENTS] == [
        (outcomes.RETRACTED, item.message.message_id)
    ]


@pytest.mark.parametrize(
    "queue_config",
    [{"pacing": {"busy_backlog_s": 1, "target_delay_s": 1, "busy_max_chars": 30}}],
)
async def test_a_busy_queue_is_read_faster_without_names_and_shorter(rig: Any) -> None:
    bot, _ = rig
    bot.control.pause()
    long = "a long line from chat, with a second half that the busy queue leaves out"
    lines = [chat("the first line, said last"), chat(long), chat("and a third line to say")]
    with capture_logs() as logs:
        for m in lines:
            bot.router.handle(m)
        bot.control.resume()
        said = [await wait_for(logs, outcomes.SPOKEN, m.message_id) for m in lines]
    ends = [e["msg_id"] for e in logs if e["event"] in outcomes.TERMINAL_EVENTS]
    assert ends == [m.message_id for m in reversed(lines)]  # busy: the newest first
    # Busy: at the top speed, without the name, free chat cut short.
    assert (said[2]["text"], said[2]["speed"]) == ("and a third line to say", 1.3)
    assert (said[1]["text"], said[1]["speed"]) == ("a long line from chat,", 1.3)
    # Nothing left waiting: calm again, the name back, at the normal speed.
    name = lines[0].user_name  # (English chat has two template variants)
    assert said[0]["text"] in {
        f"{name} says the first line, said last",
        f"{name}: the first line, said last",
    }
    assert "speed" not in said[0]
