"""Pacing: the pacer's decisions (pure), and what the queue does with them."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.events import EventKind, Paid, PaidKind, Platform, Role
from bot.chat import outcomes
from bot.chat.pacing import CALM, Backlog, Pace, Pacer, is_free_chat, line_for, speech_units
from bot.chat.policy import PolicyState, SpeakableItem, SpeechPolicy
from bot.chat.queue import SpeechQueue
from bot.config import PacingConfig, PolicyConfig, QueueConfig
from tests.factories import chat
from tests.test_queue import Clock

#: One template variant per language, so the lines' lengths are known.
POLICY = SpeechPolicy(
    PolicyConfig.model_validate(
        {
            "cooldown_s": 0,
            "templates": {"en": {"chat": "{user} says {text}"}, "zh": {"chat": "{user}说：{text}"}},
        }
    )
)
MOD = frozenset({Role.MODERATOR})


def said(text: str, **fields: Any) -> SpeakableItem:
    """A chat line as the policy makes it ("{user} says {text}")."""
    fields.setdefault("received", 1000.0)  # Clock() starts there
    item = POLICY.evaluate(chat(text, **fields), PolicyState())
    assert isinstance(item, SpeakableItem), item
    return item


def pacer(**cfg: Any) -> Pacer:
    return Pacer(PacingConfig.model_validate(cfg))


def test_calm_below_the_target_and_faster_beyond_it_up_to_the_cap() -> None:
    p = pacer(target_delay_s=10, busy_backlog_s=100, max_speed=1.3)
    assert p.decide(Backlog(5.0, 2)) == CALM
    assert p.decide(Backlog(12.0, 4)) == Pace(speed=1.2)
    assert p.decide(Backlog(60.0, 9)).speed == 1.3


def test_busy_leaves_out_names_cuts_free_chat_and_prefers_recent_until_half_the_backlog() -> None:
    p = pacer(target_delay_s=10, busy_backlog_s=20, busy_max_chars=80)
    busy = p.decide(Backlog(20.0, 5))
    assert busy == Pace(speed=1.3, busy=True, announce=False, max_chars=80, prefer_recent=True)
    assert p.decide(Backlog(11.0, 3)).busy  # still busy: not below half yet
    assert p.decide(Backlog(9.0, 3)) == CALM
    assert p.decide(Backlog(19.0, 5)) == Pace(speed=1.3)  # calm again until 20


def test_each_busy_measure_can_be_turned_off() -> None:
    p = pacer(busy_backlog_s=1, max_speed=1.0, announce_when_busy=True, prefer_recent=False)
    assert p.decide(Backlog(100.0, 30)) == Pace(busy=True, max_chars=100)
    assert pacer(enabled=False).decide(Backlog(1000.0, 50)) == CALM


def test_backlog_is_seconds_of_speech_with_cjk_counting_three() -> None:
    p = pacer(chars_per_s=15)
    assert speech_units("ab 主播") == 9
    items = [said("abcdefghij", user_name="ann"), said("主播好", user_name="bob")]
    # "ann says abcdefghij" (19) + "bob说：主播好" (3 + 5 x 3): a Chinese line reads in Chinese
    assert p.backlog(items) == Backlog(37 / 15, 2)


def test_the_speaking_rate_is_measured_from_lines_said_in_full() -> None:
    p = pacer(chars_per_s=15)
    p.observe("a" * 130, audio_s=10.0, speed=1.0)  # 13 chars/s
    assert p.chars_per_s == pytest.approx(15 + 0.2 * (13 - 15))
    rate = p.chars_per_s
    p.observe("a" * 130, audio_s=10.0 / 1.3, speed=1.3)  # the same voice, faster
    assert p.chars_per_s == pytest.approx(rate + 0.2 * (13 - rate))
    rate = p.chars_per_s
    p.observe("lol", audio_s=0.6, speed=1.0)  # too short to say anything
    p.observe("a" * 500, audio_s=1.0, speed=1.0)  # absurd: clamped
    assert p.chars_per_s == pytest.approx(rate + 0.2 * (60 - rate))


@pytest.mark.parametrize(
    ("fields", "free"),
    [
        ({}, True),
        ({"first_time": True}, True),
        ({"roles": frozenset({Role.SUBSCRIBER})}, True),
        ({"roles": MOD}, False),
        ({"roles": frozenset({Role.BROADCASTER})}, False),
        ({"paid": Paid(100, "BITS", PaidKind.BITS)}, False),
        ({"event": EventKind.SUB, "paid": Paid(1, "SUB_T1", PaidKind.SUB)}, False),
        ({"reward_id": "0c4bd3a8"}, False),
        ({"platform": Platform.LOCAL}, False),
    ],
)
def test_only_free_chat_goes_stale(fields: dict[str, Any], free: bool) -> None:
    item = said("a line", **fields)
    assert is_free_chat(item) is free
    p = pacer(stale_after_s=15)
    assert p.is_stale(item, 16.0) is free
    assert not p.is_stale(item, 14.0)
    assert not pacer(stale_after_s=0).is_stale(item, 1000.0)
    assert not pacer(enabled=False).is_stale(item, 1000.0)


def test_the_line_said_at_each_pace() -> None:
    long = "first part of a long line, and then a second part that goes on and on"
    item = said(long, user_name="ann")
    ann = item.message.user_key
    short = Pace(busy=True, announce=False, max_chars=40)
    assert line_for(item, None, CALM) == f"ann says {long}"
    assert line_for(item, ann, CALM) == long  # same viewer again: no name, as before
    assert line_for(item, None, short) == "first part of a long line,"
    kept = Pace(busy=True, announce=True, max_chars=40)
    assert line_for(item, None, kept) == "ann says first part of a long line,"
    # Paid lines and events keep their template and their length.
    cheer = said(long, user_name="ann", paid=Paid(100, "BITS", PaidKind.BITS))
    assert line_for(cheer, None, short) == cheer.spoken
    assert cheer.spoken.startswith("ann cheered one hundred bits.")
    mod = said(long, user_name="mo", roles=MOD)
    assert line_for(mod, None, short) == long


# The queue ------------------------------------------------------------------------


def queue(clock: Clock, **pacing: Any) -> SpeechQueue:
    config = QueueConfig.model_validate({"aging_s": 60, "pacing": pacing})
    return SpeechQueue(config, clock=clock)


def test_stale_free_chat_expires_early_but_paid_and_mods_wait_their_turn() -> None:
    clock = Clock()
    q = queue(clock, stale_after_s=15)
    old_chat = said("old chat")
    old_mod = said("old mod", roles=MOD)
    old_cheer = said("old cheer", paid=Paid(100, "BITS", PaidKind.BITS))
    for item in (old_chat, old_mod, old_cheer):
        q.push(item)
    clock.now += 16
    fresh = said("fresh", received=clock.now)
    q.push(fresh)
    with capture_logs() as logs:
        popped = [q.pop_nowait() for _ in range(3)]
    assert popped == [old_mod, old_cheer, fresh]
    assert [(e["event"], e["msg_id"], e["reason"], e["age_s"]) for e in logs] == [
        (outcomes.EXPIRED, old_chat.message.message_id, "stale", 16.0)
    ]


def test_when_busy_the_newest_free_chat_goes_first_and_paid_lines_in_order() -> None:
    clock = Clock()
    q = queue(clock, busy_backlog_s=1)
    lines = [said(f"line number {n}", user_name=f"v{n}") for n in range(4)]
    cheers = [said(f"cheer {n}", paid=Paid(100, "BITS", PaidKind.BITS)) for n in range(2)]
    member = said("member line", roles=frozenset({Role.SUBSCRIBER}))
    for item in (*lines, *cheers, member):
        q.push(item)
    assert q.snapshot() == [*cheers, member, *reversed(lines)]
    assert [q.pop_nowait() for _ in range(7)] == [*cheers, member, *reversed(lines)]


def test_when_busy_a_viewers_own_lines_keep_their_order() -> None:
    clock = Clock()
    q = queue(clock, busy_backlog_s=1)
    a1, b1, a2 = said("a one", user_id="a"), said("b one", user_id="b"), said("a two", user_id="a")
    for item in (a1, b1, a2):
        q.push(item)
    # Ann's first waiting line is older than Bob's: Bob first, then Ann in order.
    assert [q.pop_nowait() for _ in range(3)] == [b1, a1, a2]


def test_calm_queue_keeps_arrival_order_and_logs_busy_and_calm() -> None:
    clock = Clock()
    q = queue(clock, busy_backlog_s=3, chars_per_s=10)
    first, second = said("one", user_name="a"), said("two", user_name="b")  # 1 s each
    q.push(first)
    q.push(second)
    with capture_logs() as logs:
        assert q.pop_nowait() is first
        for n, name in enumerate("cde"):
            q.push(said(f"more {n}", user_name=name))  # 1.3 s each
        newest = q.pop_nowait()
        assert newest is not None and newest.text == "more 2"  # busy: newest first
        for _ in range(3):
            q.pop_nowait()
    events = [(e["event"], e.get("waiting")) for e in logs if e["event"].startswith("queue.")]
    assert events == [("queue.busy", 4), ("queue.calm", 1)]


def test_the_panels_look_at_the_queue_does_not_move_the_pace() -> None:
    # The panel reads the order several times a second: only the speaker's next
    # line decides when busy starts (logged once, then).
    clock = Clock()
    q = queue(clock, busy_backlog_s=1)
    lines = [said(f"line number {n}", user_name=f"v{n}") for n in range(3)]
    for item in lines:
        q.push(item)
    with capture_logs() as logs:
        assert q.snapshot() == list(reversed(lines))  # the order a busy queue pops in
        assert q.snapshot() == list(reversed(lines))
        assert not q.pacer.busy
        assert [e for e in logs if e["event"].startswith("queue.")] == []
        assert q.pop_nowait() is lines[-1]
    assert q.pacer.busy
    assert [e["event"] for e in logs if e["event"].startswith("queue.")] == ["queue.busy"]
