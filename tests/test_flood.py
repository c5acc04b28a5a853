"""One account flooding chat must not take over what is read aloud, and a chat
busier than speech must not push what is read further and further behind.

A simulated stream on a simulated clock: the real router, policy, control and
queue with the shipped defaults, and a speaker that takes one line every few
seconds, as if each took that long to say; for the delay, the real speaker too
(bench/pacing.py: a simulated engine and player on a virtual clock).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from adapters.events import ChatMessage, Platform
from bench.pacing import measure
from bot.chat import outcomes
from bot.chat.policy import SpeechPolicy
from bot.chat.queue import SpeechQueue
from bot.chat.router import Router
from bot.config import Config
from bot.control import Control

SPEAK_EVERY_S = 4.0
DURATION_S = 600.0
FLOOD_EVERY_S = 30.0 / 20  # Twitch's limit for a normal account: 20 messages per 30 s
VIEWER_EVERY_S = 20.0
VIEWERS = 5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(tmp_path: Path) -> tuple[Counter[str], Counter[str], int, int]:
    """Spoken lines per user, terminal events per message, messages sent, still pending."""
    config = Config.model_validate({"commands": {"state_file": str(tmp_path / "state.json")}})
    clock = Clock()
    queue = SpeechQueue(config.queue, clock=clock)
    control = Control(config, queue, lambda: [])
    router = Router(SpeechPolicy(config.policy), control, queue, config.commands)
    ends: Counter[str] = Counter()
    spoken: Counter[str] = Counter()

    def listen(event: str, message: ChatMessage, fields: dict[str, Any]) -> None:
        ends[message.message_id] += 1

    # (time, user): the flooder, and five viewers at a chatty but human rate, staggered.
    schedule = [(n * FLOOD_EVERY_S, "flooder") for n in range(int(DURATION_S / FLOOD_EVERY_S))]
    for v in range(VIEWERS):
        start = v * VIEWER_EVERY_S / VIEWERS + 0.3
        schedule += [
            (start + n * VIEWER_EVERY_S, f"viewer{v}")
            for n in range(int(DURATION_S / VIEWER_EVERY_S))
        ]
    schedule += [(n * SPEAK_EVERY_S + 0.1, "") for n in range(int(DURATION_S / SPEAK_EVERY_S))]
    schedule.sort()

    outcomes.add_listener(listen)
    try:
        for n, (at, user) in enumerate(schedule):
            clock.now = at
            if not user:
                item = queue.pop_nowait()
                if item is not None:
                    spoken[item.message.user_name] += 1
                    outcomes.log_outcome(outcomes.SPOKEN, item.message)
                    queue.done(item)
                continue
            message = ChatMessage(
                platform=Platform.TWITCH,
                channel="streamer",
                message_id=f"m{n}",
                user_id=f"id-{user}",
                user_name=user,
                text=f"message number {n} from {user}",
                received=at,
            )
            router.handle(message)
    finally:
        outcomes.remove_listener(listen)
    sent = sum(1 for _, user in schedule if user)
    return spoken, ends, sent, len(queue)


def test_a_flooder_gets_about_a_fair_share_of_spoken_lines(tmp_path: Path) -> None:
    spoken, ends, sent, pending = simulate(tmp_path)
    total = sum(spoken.values())
    assert total == int(DURATION_S / SPEAK_EVERY_S)  # the speaker was never idle
    # A fair share is 1/6; without limits the flooder took three lines in four.
    assert spoken["flooder"] <= total * 0.25, spoken
    assert all(spoken[f"viewer{v}"] >= total * 0.12 for v in range(VIEWERS)), spoken
    # Every message refused or dropped still ended exactly once.
    assert set(ends.values()) == {1}
    assert len(ends) + pending == sent


def test_chat_at_three_times_the_speaking_rate_is_read_within_twenty_seconds() -> None:
    # Three runs of five minutes of a mixed chat (bench/pacing.py); without pacing
    # the delay grows to the queue's TTL (p95 about 120 s).
    result = measure({}, times=3.0, seconds=300, seeds=3)
    assert result.once_each  # every message ended in exactly one terminal event
    assert result.sent > 600 and len(result.delays) > result.sent * 0.4
    delays = sorted(result.delays)
    assert delays[int(0.95 * (len(delays) - 1))] <= 20.0
    # Paid lines and moderators' are never dropped to keep up.
    assert result.kept_sent > 20 and result.kept_dropped == 0
    assert len(result.kept_delays) == result.kept_sent
