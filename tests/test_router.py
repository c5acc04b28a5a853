from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from adapters.events import (
    ChatEvent,
    Connected,
    Disconnected,
    EmoteNames,
    Platform,
    Retraction,
    Role,
)
from bot.app import Bot
from bot.chat import outcomes
from bot.config import Config
from bot.control import Reply
from tests.factories import RecordingSpeaker, chat


def make_bot(**cfg: object) -> Bot:
    return Bot(Config.model_validate(cfg))


def test_message_flows_to_queue_or_filtered_with_reason() -> None:
    bot = make_bot()
    ok = chat("hello")
    with capture_logs() as logs:
        bot.router.handle(ok)
        bot.router.handle(chat("!uptime"))
        bot.router.handle(chat("hi", user_name="Nightbot"))
    assert [i.message for i in bot.queue.snapshot()] == [ok]
    assert [(e["event"], e["reason"]) for e in logs] == [
        (outcomes.FILTERED, "command"),
        (outcomes.FILTERED, "ignored_user"),
    ]


def test_command_is_applied_replied_and_ends_as_filtered() -> None:
    replies: list[tuple[str, Reply]] = []
    bot = make_bot()
    bot.router._reply = lambda m, r: replies.append((m.message_id, r))
    cmd = chat("!tts pause", roles=frozenset({Role.MODERATOR}))
    with capture_logs() as logs:
        bot.router.handle(cmd)
    assert bot.control.paused
    assert replies == [(cmd.message_id, Reply(True, "paused"))]
    assert [e["event"] for e in logs] == ["tts.command", outcomes.FILTERED]
    assert len(bot.queue) == 0
    # A viewer trying a mod command gets no answer in chat (only the log).
    bot.router.handle(chat("!tts skip", roles=frozenset()))
    assert len(replies) == 1


def test_viewers_cannot_make_the_bot_post_in_chat() -> None:
    """A flood of `!tts <link>` from viewers gets no reply at all, so the bot never
    posts their text and a moderator's command still gets its answer."""
    replies: list[Reply] = []
    bot = make_bot()
    bot.router._reply = lambda m, r: replies.append(r)
    with capture_logs() as logs:
        for n in range(20):
            bot.router.handle(chat(f"!tts https://free-nitro.example.com/{n}", roles=frozenset()))
        bot.router.handle(chat("!tts unknown-thing", roles=frozenset({Role.SUBSCRIBER})))
        bot.router.handle(chat("!tts pause", roles=frozenset({Role.MODERATOR})))
    assert replies == [Reply(True, "paused")]
    refused = [e for e in logs if e["event"] == "tts.command_refused"]
    assert len(refused) == 21
    assert {e["reason"] for e in refused} == {"not_allowed"}
    assert all(e["reason"] == "command" for e in logs if e["event"] == outcomes.FILTERED)


def test_accepted_message_starts_cooldown() -> None:
    bot = make_bot(policy={"cooldown_s": 30})
    bot.router.handle(chat("one", user_id="7", received=100.0))
    with capture_logs() as logs:
        bot.router.handle(chat("two", user_id="7", received=110.0))
    assert logs[0]["reason"] == "cooldown"


def test_retraction_by_id_before_speaking() -> None:
    bot = make_bot()
    msg = chat("delete me")
    keep = chat("keep me")
    bot.router.handle(msg)
    bot.router.handle(keep)
    with capture_logs() as logs:
        bot.router.handle(
            Retraction(Platform.TWITCH, "streamer", message_ids=frozenset({msg.message_id}))
        )
    assert [i.message for i in bot.queue.snapshot()] == [keep]
    assert [(e["event"], e["msg_id"]) for e in logs] == [(outcomes.RETRACTED, msg.message_id)]


def test_retraction_of_user_and_whole_channel() -> None:
    bot = make_bot()
    bot.router.handle(chat("a", user_id="bad"))
    bot.router.handle(chat("b", user_id="bad"))
    bot.router.handle(chat("c", user_id="ok"))
    bot.router.handle(Retraction(Platform.TWITCH, "streamer", user_id="bad"))
    assert [i.message.user_id for i in bot.queue.snapshot()] == ["ok"]
    bot.router.handle(Retraction(Platform.TWITCH, "streamer"))
    assert len(bot.queue) == 0


def test_retraction_of_item_in_flight_is_cut() -> None:
    bot = make_bot()
    speaker = RecordingSpeaker()
    bot.control.attach(speaker)
    cuts = speaker.cuts
    msg = chat("now playing")
    bot.router.handle(msg)
    playing = bot.queue.pop_nowait()
    assert playing is not None
    bot.router.handle(
        Retraction(Platform.TWITCH, "streamer", message_ids=frozenset({msg.message_id}))
    )
    assert cuts == [((playing,), outcomes.RETRACTED)]


def test_connection_state_tracked() -> None:
    bot = make_bot()
    bot.router.handle(Connected(Platform.TWITCH, "streamer"))
    bot.router.handle(Disconnected(Platform.BILIBILI, "1", reason="closed"))
    assert bot.control.connections == {Platform.TWITCH: True, Platform.BILIBILI: False}
    assert "bilibili disconnected, twitch connected" in bot.control.status().text


async def test_run_survives_a_failing_event() -> None:
    bot = make_bot()
    events: asyncio.Queue[ChatEvent] = asyncio.Queue()
    broken = chat("boom")
    # A message whose text is not a str would crash the policy: it must be
    # logged and the next event still handled.
    object.__setattr__(broken, "text", None)
    good = chat("fine")
    events.put_nowait(broken)
    events.put_nowait(good)
    with capture_logs() as logs:
        task = asyncio.create_task(bot.router.run(events))
        for _ in range(100):
            if len(bot.queue):
                break
            await asyncio.sleep(0.01)
        task.cancel()
    assert [i.message for i in bot.queue.snapshot()] == [good]
    assert any(e["event"] == "router.error" for e in logs)
    # It still gets its one terminal outcome.
    ends = [e for e in logs if e["event"] in outcomes.TERMINAL_EVENTS]
    assert [(e["msg_id"], e["reason"]) for e in ends] == [(broken.message_id, "internal_error")]


def test_drain_ends_unrouted_messages_at_shutdown() -> None:
    bot = make_bot()
    events: asyncio.Queue[ChatEvent] = asyncio.Queue()
    first, second = chat("one"), chat("two")
    events.put_nowait(first)
    events.put_nowait(Connected(Platform.TWITCH, "streamer"))
    events.put_nowait(second)
    with capture_logs() as logs:
        ended = bot.router.drain(events)
    assert ended == 2
    assert events.empty()
    ends = [(e["event"], e["msg_id"], e["reason"]) for e in logs]
    assert ends == [
        (outcomes.SKIPPED, first.message_id, "shutdown"),
        (outcomes.SKIPPED, second.message_id, "shutdown"),
    ]


def test_emote_names_reach_the_policy_and_replace_the_channel_s_last_set() -> None:
    bot = make_bot(policy={"cooldown_s": 0})
    with capture_logs() as logs:
        bot.router.handle(EmoteNames(Platform.TWITCH, "streamer", frozenset({"KEKW", "Pog"})))
        bot.router.handle(chat("KEKW"))
        bot.router.handle(EmoteNames(Platform.TWITCH, "streamer", frozenset({"Pog"})))
        bot.router.handle(chat("KEKW Pog"))
    assert [i.text for i in bot.queue.snapshot()] == ["KEKW"]
    assert [(e["event"], e["reason"]) for e in logs] == [(outcomes.FILTERED, "empty")]
    assert bot.control.policy_state.emote_words == {
        (Platform.TWITCH, "streamer"): frozenset({"Pog"})
    }
