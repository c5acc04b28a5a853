"""Gift combos end to end: the loopback Bilibili server, the real client, router and queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.app import Bot
from bot.chat import outcomes
from bot.config import Config
from tests.bilibili import fixtures as fx
from tests.bilibili.fake_server import FakeBilibili


@pytest.fixture
async def server() -> AsyncIterator[FakeBilibili]:
    async with FakeBilibili() as fake:
        yield fake


def combo(
    count: int, *, uid: int = 5555, name: str = "牛哇牛哇", start: int = 0
) -> list[dict[str, Any]]:
    """A combo as Bilibili sends it: a SEND_GIFT per gift, COMBO_SEND totals between."""
    docs: list[dict[str, Any]] = []
    for n in range(count):
        tid = f"{uid}{name}{start + n:04d}"
        docs.append(fx.gift(total=100, uid=uid, name=name, tid=tid))
        if n % 10 == 9:
            docs.append(fx.combo_send(n + 1, uid=uid, name=name))
    return docs


async def run_bot(
    server: FakeBilibili, policy: dict[str, Any], frames: list[bytes], queued: int
) -> tuple[Bot, list[dict[str, Any]]]:
    config = Config.model_validate(
        {
            "platforms": {"bilibili": server.config()},
            "policy": policy,
            "queue": {"max_per_user": 0},
        }
    )
    bot = Bot(config)
    assert bot.bilibili is not None
    with capture_logs() as logs:
        tasks = [
            asyncio.create_task(bot.bilibili.run()),
            asyncio.create_task(bot.router.run(bot.events)),
        ]
        await server.wait_connections(1)
        for frame in frames:
            await server.send(frame)
        async with asyncio.timeout(5):
            while len(bot.queue) < queued:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # nothing more arrives
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return bot, logs


async def test_a_30_gift_combo_is_one_queued_line_and_29_merged(server: FakeBilibili) -> None:
    docs = combo(30)  # 30 SEND_GIFTs and 3 COMBO_SENDs, over two frames
    frames = [
        fx.brotli_batch(*docs[:12]),
        fx.brotli_batch(*docs[12:]),
        fx.brotli_batch(*combo(1, uid=6666)),  # another user, the same gift
    ]
    bot, logs = await run_bot(server, {"gift_merge_s": 0.3}, frames, queued=2)
    items = {i.message.user_id: i for i in bot.queue.snapshot()}
    assert set(items) == {"5555", "6666"}
    line = items["5555"]
    assert line.message.message_id == "gift:5555牛哇牛哇0000"
    assert line.message.text == "牛哇牛哇 x30"
    assert line.message.paid is not None and line.message.paid.amount == 3.0
    assert line.spoken in {"送礼人送出了三元。牛哇牛哇 x三十", "感谢送礼人送的三元。牛哇牛哇 x三十"}
    assert items["6666"].message.text == "牛哇牛哇 x1"
    merged = [e for e in logs if e["event"] == outcomes.MERGED]
    assert len(merged) == 29
    assert {e["into"] for e in merged} == {line.message.message_id}
    # COMBO_SEND is not counted again, and not reported as unknown.
    assert not any(e["event"] == "bilibili.unknown_command" for e in logs)
    assert [e for e in logs if e["event"] in outcomes.TERMINAL_EVENTS] == merged


async def test_another_gift_kind_from_the_same_user_is_not_merged(server: FakeBilibili) -> None:
    docs = combo(3) + combo(2, name="小花花") + combo(1, start=3)
    bot, logs = await run_bot(server, {"gift_merge_s": 0.3}, [fx.brotli_batch(*docs)], 3)
    assert [i.message.text for i in bot.queue.snapshot()] == [
        "牛哇牛哇 x3",
        "小花花 x2",
        "牛哇牛哇 x1",
    ]
    assert sum(e["event"] == outcomes.MERGED for e in logs) == 3


async def test_gift_merge_s_0_reads_each_gift(server: FakeBilibili) -> None:
    bot, logs = await run_bot(server, {"gift_merge_s": 0}, [fx.brotli_batch(*combo(30))], 30)
    assert len(bot.queue) == 30
    assert {i.message.text for i in bot.queue.snapshot()} == {"牛哇牛哇 x1"}
    assert not any(e["event"] == outcomes.MERGED for e in logs)
