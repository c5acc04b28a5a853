from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from structlog.testing import capture_logs

from adapters.events import ChatMessage, Platform, Role
from bot.chat import outcomes
from bot.chat.policy import SpeakableItem
from bot.chat.queue import SpeechQueue
from bot.config import PacingConfig, QueueConfig
from tests.factories import chat


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def item(priority: float = 0, **fields: Any) -> SpeakableItem:
    fields.setdefault("received", 1000.0)  # Clock() starts there
    message = chat("hi", **fields)
    return SpeakableItem(message, "hi", "hi", "hi", priority)


def make(clock: Clock, **cfg: Any) -> SpeechQueue:
    """A queue without ageing or pacing (the tests of pacing turn it on)."""
    cfg = {"aging_s": 0, "pacing": {"enabled": False}, **cfg}
    return SpeechQueue(QueueConfig.model_validate(cfg), clock=clock)


def ids(items: list[SpeakableItem] | tuple[SpeakableItem, ...]) -> list[str]:
    return [i.message.message_id for i in items]


def test_pops_highest_priority_then_arrival_order() -> None:
    clock = Clock()
    q = make(clock)
    a, b, c, d = item(0), item(2), item(0), item(2)
    for i in (a, b, c, d):
        q.push(i)
    assert [q.pop_nowait() for _ in range(4)] == [b, d, a, c]
    assert q.pop_nowait() is None


def test_ageing_lets_old_normal_message_through() -> None:
    clock = Clock()
    q = make(clock, aging_s=10)
    old = item(0, received=clock.now)
    q.push(old)
    clock.now += 25  # waited 2.5 levels' worth
    fresh_member = item(2, received=clock.now)
    q.push(fresh_member)
    assert q.pop_nowait() is old
    # Without ageing the member would win.
    q2 = make(clock, aging_s=0)
    old2, fresh2 = item(0, received=clock.now - 25), item(2, received=clock.now)
    q2.push(old2)
    q2.push(fresh2)
    assert q2.pop_nowait() is fresh2


def test_overflow_drops_lowest_priority_newest_and_logs() -> None:
    clock = Clock()
    q = make(clock, max_size=3)
    low_old, high, low_new = item(0), item(3), item(0)
    for i in (low_old, high, low_new):
        q.push(i)
    with capture_logs() as logs:
        assert q.push(item(1))
    assert len(q) == 3
    # The oldest is due next: it keeps its turn.
    assert [(e["event"], e["msg_id"], e["reason"]) for e in logs] == [
        (outcomes.OVERFLOW, low_new.message.message_id, "queue_full")
    ]


def test_overflow_drops_from_whoever_has_most_waiting() -> None:
    clock = Clock()
    q = make(clock, max_size=4)
    other = item(0, user_id="other")
    flood = [item(0, user_id="flooder") for _ in range(3)]
    for i in (other, *flood):
        q.push(i)
    incoming = item(0, user_id="newcomer")
    with capture_logs() as logs:
        assert q.push(incoming)
    assert [e["msg_id"] for e in logs] == [flood[-1].message.message_id]
    assert ids(q.snapshot()) == ids([other, flood[0], flood[1], incoming])
    # The flooder's own new line is the one refused now.
    again = item(0, user_id="flooder")
    with capture_logs() as logs:
        assert not q.push(again)
    assert [e["msg_id"] for e in logs] == [again.message.message_id]


def test_per_user_cap_refuses_the_new_line_unless_it_outranks() -> None:
    clock = Clock()
    q = make(clock, max_per_user=2)
    first, second = item(0, user_id="u"), item(0, user_id="u")
    q.push(first)
    q.push(second)
    third = item(0, user_id="u")
    with capture_logs() as logs:
        assert not q.push(third)
    assert logs == [
        {
            "event": outcomes.OVERFLOW,
            "log_level": "info",
            "msg_id": third.message.message_id,
            "platform": "twitch",
            "user": third.message.user_name,
            "reason": "user_cap",
            "max_per_user": 2,
        }
    ]
    # A paid line from the same viewer replaces their newest normal one.
    paid = item(3, user_id="u")
    with capture_logs() as logs:
        assert q.push(paid)
    assert [e["msg_id"] for e in logs] == [second.message.message_id]
    # Others and the broadcaster are not capped by it.
    assert q.push(item(0, user_id="v"))
    boss = frozenset({Role.BROADCASTER})
    assert all(q.push(item(0, user_id="boss", roles=boss)) for _ in range(3))


def test_overflow_never_drops_higher_for_lower() -> None:
    clock = Clock()
    q = make(clock, max_size=2)
    q.push(item(2))
    q.push(item(3))
    incoming = item(1)
    with capture_logs() as logs:
        assert not q.push(incoming)
    assert [(e["event"], e["msg_id"]) for e in logs] == [
        (outcomes.OVERFLOW, incoming.message.message_id)
    ]
    assert len(q) == 2


def test_overflow_prefers_dropping_expired() -> None:
    clock = Clock()
    q = make(clock, max_size=1, ttl_s=10)
    stale = item(3, received=clock.now)
    q.push(stale)
    clock.now += 11
    with capture_logs() as logs:
        assert q.push(item(0, received=clock.now))
    assert [e["event"] for e in logs] == [outcomes.EXPIRED]


def test_ttl_expires_on_pop() -> None:
    clock = Clock()
    q = make(clock, ttl_s=30)
    old = item(5, received=clock.now)
    q.push(old)
    clock.now += 20
    young = item(0, received=clock.now)
    q.push(young)
    clock.now += 15
    with capture_logs() as logs:
        assert q.pop_nowait() is young
    assert logs[0]["event"] == outcomes.EXPIRED
    assert logs[0]["msg_id"] == old.message.message_id
    assert logs[0]["age_s"] == 35.0


def test_duplicate_message_id_is_filtered() -> None:
    clock = Clock()
    q = make(clock)
    first = item(0)
    q.push(first)
    again = SpeakableItem(first.message, "hi", "hi", "hi", 0)
    with capture_logs() as logs:
        assert not q.push(again)
    assert logs[0]["event"] == outcomes.FILTERED
    assert logs[0]["reason"] == "duplicate"


def test_retract_by_ids_user_channel_and_in_flight_report() -> None:
    clock = Clock()
    q = make(clock)
    a = item(5, user_id="bob")
    b = item(0, user_id="bob")
    c = item(0, user_id="ann")
    d = item(0, user_id="ann", channel="other")
    e = item(0, user_id="ann", platform=Platform.BILIBILI)
    for i in (a, b, c, d, e):
        q.push(i)
    playing = q.pop_nowait()
    assert playing is a
    with capture_logs() as logs:
        result = q.retract_user(Platform.TWITCH, "bob")
    assert ids(result.removed) == ids([b])
    assert result.in_flight == (a,)
    assert [x["event"] for x in logs] == [outcomes.RETRACTED]
    # Same id on another platform is not touched.
    result = q.retract(Platform.TWITCH, frozenset({e.message.message_id, "unknown"}))
    assert result.removed == ()
    result = q.retract_channel(Platform.TWITCH, "streamer")
    assert ids(result.removed) == ids([c])
    assert result.in_flight == (a,)
    q.done(a)
    assert q.retract(Platform.TWITCH, frozenset({a.message.message_id})).in_flight == ()
    assert ids(q.snapshot()) == ids([d, e])


async def test_get_waits_for_push() -> None:
    q = make(Clock())
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    x = item(0)
    q.push(x)
    assert await asyncio.wait_for(waiter, 1) is x


PRIORITIES = st.sampled_from([0.0, 1.0, 2.0, 3.0, 3.5, 4.0])


class QueueMachine(RuleBasedStateMachine):
    """Random push/pop/retract/time sequences against the queue's promises."""

    @initialize(
        max_size=st.integers(1, 6),
        ttl=st.sampled_from([5.0, 30.0]),
        aging=st.sampled_from([0.0, 4.0]),
        stale=st.sampled_from([0.0, 8.0]),
    )
    def setup(self, max_size: int, ttl: float, aging: float, stale: float) -> None:
        self.clock = Clock()
        # Every line here is free chat, and too short for the queue to be busy.
        pacing = PacingConfig(stale_after_s=stale)
        self.config = QueueConfig(max_size=max_size, ttl_s=ttl, aging_s=aging, pacing=pacing)
        self.q = SpeechQueue(self.config, clock=self.clock)
        self._capture = capture_logs()
        self.logs = self._capture.__enter__()
        self.pushed: dict[str, SpeakableItem] = {}
        self.order: dict[str, int] = {}
        self.popped: list[str] = []
        self.in_flight: list[SpeakableItem] = []
        self.ended_before_pop: set[str] = set()
        self.n = 0

    def teardown(self) -> None:
        if hasattr(self, "_capture"):
            self._capture.__exit__(None, None, None)

    def terminal(self) -> Counter[str]:
        return Counter(e["msg_id"] for e in self.logs if e["event"] in outcomes.TERMINAL_EVENTS)

    @rule(priority=PRIORITIES, user=st.sampled_from(["a", "b", "c"]), age=st.floats(0, 10))
    def push(self, priority: float, user: str, age: float) -> None:
        self.n += 1
        message = ChatMessage(
            platform=Platform.TWITCH,
            channel="ch",
            message_id=f"id{self.n}",
            user_id=user,
            user_name=user,
            text="x",
            received=self.clock.now - age,
        )
        it = SpeakableItem(message, "x", "x", "x", priority)
        self.pushed[message.message_id] = it
        self.order[message.message_id] = self.n
        before = self.q.snapshot()
        seen = len(self.logs)
        self.q.push(it)
        overflowed = [e for e in self.logs[seen:] if e["event"] == outcomes.OVERFLOW]
        if overflowed:
            (event,) = overflowed
            dropped = self.pushed[event["msg_id"]]
            contenders = [i for i in before if i.message.message_id in self.q_keys()] + [it]
            if event["reason"] == "user_cap":
                # Only the sender's own lines pay for their cap.
                assert dropped.message.user_id == user
                own = [c for c in [*contenders, dropped] if c.message.user_id == user]
                assert len(own) > self.config.max_per_user
                return
            # The lowest priority goes, never a higher one in favour of a lower; among
            # equals the newest line of whoever has the most waiting.
            pool = [*contenders, dropped]
            lowest = min(c.priority for c in pool)
            assert dropped.priority == lowest
            at_low = [c for c in pool if c.priority == lowest]
            counts = Counter(c.message.user_id for c in at_low)
            assert counts[dropped.message.user_id] == max(counts.values())
            mine = [c for c in at_low if c.message.user_id == dropped.message.user_id]
            assert all(
                self.order[dropped.message.message_id] >= self.order[c.message.message_id]
                for c in mine
            )

    def q_keys(self) -> set[str]:
        return {i.message.message_id for i in self.q.snapshot()}

    def urgency(self, it: SpeakableItem) -> float:
        if self.config.aging_s <= 0:
            return it.priority
        return it.priority + (self.clock.now - it.message.received) / self.config.aging_s

    def too_old(self, it: SpeakableItem) -> bool:
        age = self.clock.now - it.message.received
        stale = self.config.pacing.stale_after_s
        return age > self.config.ttl_s or 0 < stale < age

    @rule()
    def pop(self) -> None:
        live_before = self.q.snapshot()
        got = self.q.pop_nowait()
        if got is None:
            assert all(self.too_old(i) for i in live_before)
            return
        mid = got.message.message_id
        # Never a retracted, expired or otherwise ended item.
        assert self.terminal()[mid] == 0
        assert not self.too_old(got)
        # Highest urgency among live items; ties go to the earlier arrival.
        for other in self.q.snapshot():
            assert (self.urgency(other), -self.order[other.message.message_id]) < (
                self.urgency(got),
                -self.order[mid],
            )
        self.popped.append(mid)
        self.in_flight.append(got)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        it = data.draw(st.sampled_from(self.in_flight))
        self.in_flight.remove(it)
        self.q.done(it)

    @rule(data=st.data())
    def retract_ids(self, data: st.DataObject) -> None:
        if not self.pushed:
            return
        chosen = data.draw(st.sets(st.sampled_from(sorted(self.pushed)), max_size=3))
        result = self.q.retract(Platform.TWITCH, frozenset(chosen))
        assert {i.message.message_id for i in result.in_flight} == {
            i.message.message_id for i in self.in_flight if i.message.message_id in chosen
        }

    @rule(user=st.sampled_from(["a", "b", "c"]))
    def retract_user(self, user: str) -> None:
        self.q.retract_user(Platform.TWITCH, user)

    @rule()
    def clear(self) -> None:
        self.q.remove_where(lambda _: True, outcomes.SKIPPED, "cleared")

    @rule(dt=st.floats(0.1, 20))
    def tick(self, dt: float) -> None:
        self.clock.now += dt

    @invariant()
    def bounded(self) -> None:
        if hasattr(self, "q"):
            assert len(self.q) <= self.config.max_size

    @invariant()
    def one_end_each(self) -> None:
        if not hasattr(self, "q"):
            return
        counts = self.terminal()
        popped = Counter(self.popped)
        pending = {i.message.message_id for i in self.q.snapshot()}
        for mid in self.pushed:
            ends = counts[mid] + popped[mid]
            # Exactly one end once it left the queue; none while it waits.
            assert ends == (0 if mid in pending else 1), (mid, counts[mid], popped[mid])


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_queue_properties = QueueMachine.TestCase


def test_move_to_front_plays_it_next_and_keeps_it_in_the_queue_logic() -> None:
    clock = Clock()
    q = make(clock, ttl_s=60)
    urgent, low, lower = item(5), item(1), item(0)
    for i in (urgent, low, lower):
        q.push(i)
    assert q.move_to_front(lower.key)
    assert ids(q.snapshot()) == ids([lower, urgent, low])
    assert q.move_to_front(low.key)  # moved later: before the one moved first
    assert ids(q.snapshot()) == ids([low, lower, urgent])
    assert q.pop_nowait() is low
    assert not q.move_to_front(low.key)  # no longer waiting
    assert not q.move_to_front((Platform.TWITCH, "nobody"))
    assert q.snapshot()[0] is lower and lower.priority == 0  # its priority is its own
    clock.now += 61
    with capture_logs() as logs:  # the TTL still applies
        assert q.pop_nowait() is None
    assert sorted(e["msg_id"] for e in logs) == sorted(ids([lower, urgent]))


def test_a_line_moved_to_the_front_is_not_dropped_as_stale_when_busy() -> None:
    clock = Clock()
    q = make(clock, pacing={"enabled": True, "stale_after_s": 5}, aging_s=0)
    chosen, other = item(0), item(0)
    q.push(chosen)
    q.push(other)
    assert q.move_to_front(chosen.key)
    clock.now += 10
    with capture_logs() as logs:
        assert q.pop_nowait() is chosen
    assert [(e["msg_id"], e["reason"]) for e in logs] == [(other.message.message_id, "stale")]
