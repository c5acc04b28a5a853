"""Gift combos (#23): one viewer's identical Bilibili gifts read as one line."""

from __future__ import annotations

from collections import Counter
from typing import Any

from structlog.testing import capture_logs

from adapters.events import ChatMessage, EventKind, Paid, PaidKind, Platform, Retraction, Role
from bot.app import Bot
from bot.chat import outcomes
from bot.chat.gifts import MAX_HOLD_S, GiftMerger
from bot.chat.router import Router
from bot.config import Config
from tests.factories import chat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gift(
    n: int, *, uid: str = "5555", name: str = "牛哇牛哇", num: int = 1, cny: float = 0.1, **kw: Any
) -> ChatMessage:
    """A paid gift as the Bilibili codec makes it."""
    fields: dict[str, Any] = {
        "platform": Platform.BILIBILI,
        "channel": "21452505",
        "message_id": f"gift:{uid}:{n}",
        "user_id": uid,
        "user_name": f"user{uid}",
        "text": f"{name} x{num}",
        "paid": Paid(cny, "CNY", PaidKind.GIFT),
        "event": EventKind.GIFT,
    }
    fields.update(kw)
    return ChatMessage(**fields)


def ends(logs: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["msg_id"] for e in logs if e["event"] in outcomes.TERMINAL_EVENTS)


def test_a_combo_is_held_and_read_once_with_the_sums() -> None:
    clock = Clock()
    merger = GiftMerger(3.0, clock)
    out: list[ChatMessage] = []
    with capture_logs() as logs:
        for n in range(30):
            out += merger.offer(gift(n))
            clock.now += 0.1
        assert out == []
        clock.now += 2.8  # 2.9 s after the last gift: still open
        assert merger.due() == []
        clock.now += 0.2
        (line,) = merger.due()
    assert line.message_id == "gift:5555:0" and line.text == "牛哇牛哇 x30"
    assert line.paid == Paid(3.0, "CNY", PaidKind.GIFT)
    merged = [e for e in logs if e["event"] == outcomes.MERGED]
    assert len(merged) == 29 and {e["into"] for e in merged} == {"gift:5555:0"}
    assert [e["msg_id"] for e in merged] == [f"gift:5555:{n}" for n in range(1, 30)]
    assert len(merger) == 0 and merger.next_deadline() is None


def test_counts_are_summed_and_a_single_gift_is_passed_on_unchanged() -> None:
    clock = Clock()
    merger = GiftMerger(3.0, clock)
    single = gift(0, uid="1", num=5, cny=0.5)
    assert merger.offer(single) == []
    merger.offer(gift(0, uid="2", num=10, cny=1.0))
    merger.offer(gift(1, uid="2", num=10, cny=1.0))
    clock.now += 3
    alone, pair = merger.due()
    assert alone is single
    assert (pair.text, pair.paid) == ("牛哇牛哇 x20", Paid(2.0, "CNY", PaidKind.GIFT))


def test_the_window_restarts_on_each_gift_and_is_capped() -> None:
    clock = Clock()
    merger = GiftMerger(3.0, clock)
    lines: list[ChatMessage] = []
    for n in range(8):  # a gift every 2 s for 14 s: each one inside the 3 s window
        lines += merger.offer(gift(n))
        first = 1000.0 if n < 5 else 1010.0
        assert merger.next_deadline() == min(clock.now + 3.0, first + MAX_HOLD_S)
        clock.now += 2.0
    clock.now += 3.0
    lines += merger.due()
    # Gifts at 0..8 s are read at the 10 s cap; the one at 10 s opens the next line.
    assert [m.text for m in lines] == ["牛哇牛哇 x5", "牛哇牛哇 x3"]
    assert [m.message_id for m in lines] == ["gift:5555:0", "gift:5555:5"]


def test_other_users_and_other_gift_kinds_are_not_merged() -> None:
    clock = Clock()
    merger = GiftMerger(3.0, clock)
    with capture_logs() as logs:
        assert merger.offer(gift(0)) == []
        assert merger.offer(gift(0, uid="6666")) == []
        # Another kind from the same user ends that user's combo (their order is kept).
        (first,) = merger.offer(gift(1, name="小花花"))
        assert first.message_id == "gift:5555:0"
        clock.now += 3
        rest = merger.due()
    assert [m.message_id for m in rest] == ["gift:6666:0", "gift:5555:1"]
    assert [m.text for m in rest] == ["牛哇牛哇 x1", "小花花 x1"]
    assert not any(e["event"] == outcomes.MERGED for e in logs)


def test_guards_super_chats_chat_and_other_platforms_are_never_held() -> None:
    merger = GiftMerger(3.0, Clock())
    guard = gift(0, event=EventKind.GUARD, paid=Paid(198, "CNY", PaidKind.GUARD), text="舰长")
    sc = gift(1, event=EventKind.CHAT, paid=Paid(30, "CNY", PaidKind.SUPERCHAT), text="x2")
    twitch = gift(2, platform=Platform.TWITCH, paid=Paid(5, "SUBS", PaidKind.GIFT))
    for message in (guard, guard, sc, sc, chat("牛哇牛哇 x1"), twitch, twitch):
        assert merger.offer(message) == [message]
    assert len(merger) == 0


def test_zero_turns_merging_off() -> None:
    merger = GiftMerger(0.0, Clock())
    gifts = [gift(n) for n in range(3)]
    assert [merger.offer(g) for g in gifts] == [[g] for g in gifts]


def router_bot(clock: Clock, **cfg: Any) -> Bot:
    bot = Bot(Config.model_validate(cfg))
    bot.router = Router(bot.policy, bot.control, bot.queue, bot.config.commands, clock=clock)
    return bot


def test_router_queues_the_merged_line_through_the_gift_template() -> None:
    clock = Clock()
    bot = router_bot(clock)
    with capture_logs() as logs:
        for n in range(30):
            bot.router.handle(gift(n))
        assert len(bot.queue) == 0  # held, not queued
        clock.now += 3
        bot.router.flush_gifts()
    (item,) = bot.queue.snapshot()
    assert item.message.message_id == "gift:5555:0"
    # A Bilibili gift reads in Chinese: one of the two gift variants.
    assert item.spoken in {
        "user5555送出了三元。牛哇牛哇 x三十",
        "感谢user5555送的三元。牛哇牛哇 x三十",
    }
    # Every gift has its end: 29 merged now, the line's own end when it is spoken.
    assert Counter(e["event"] for e in logs) == {outcomes.MERGED: 29}


def test_router_flushes_due_combos_before_the_next_event_in_order() -> None:
    clock = Clock()
    bot = router_bot(clock)
    bot.router.handle(gift(0))
    bot.router.handle(gift(1))
    clock.now += 5
    later = chat("after")
    bot.router.handle(later)
    assert [i.message.text for i in bot.queue.snapshot()][-1] == "after"
    assert {i.message.text for i in bot.queue.snapshot()} == {"牛哇牛哇 x2", "after"}


def test_a_ban_retracts_a_held_combo_and_shutdown_skips_the_rest() -> None:
    clock = Clock()
    bot = router_bot(clock)
    with capture_logs() as logs:
        for n in range(3):
            bot.router.handle(gift(n))
            bot.router.handle(gift(n, uid="6666"))
        bot.router.handle(Retraction(Platform.BILIBILI, "21452505", user_id="5555", reason="ban"))
        assert bot.router.drain(bot.events) == 1
        clock.now += 10
        bot.router.flush_gifts()
    assert len(bot.queue) == 0
    assert ends(logs) == {f"gift:{u}:{n}": 1 for u in ("5555", "6666") for n in range(3)}
    heads = [(e["event"], e["msg_id"], e.get("reason")) for e in logs if e.get("into") is None]
    assert heads == [
        (outcomes.RETRACTED, "gift:5555:0", "user_cleared"),
        (outcomes.SKIPPED, "gift:6666:0", "shutdown"),
    ]


def test_a_privileged_gift_combo_is_still_one_line() -> None:
    clock = Clock()
    bot = router_bot(clock)
    for n in range(4):
        bot.router.handle(gift(n, roles=frozenset({Role.GUARD})))
    clock.now += 3
    bot.router.flush_gifts()
    assert [i.message.text for i in bot.queue.snapshot()] == ["牛哇牛哇 x4"]
