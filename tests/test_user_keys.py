"""Mutes, nicknames and user voices follow the account (platform, user id), never
the display name; commands still take names, resolved to accounts seen in chat."""

from __future__ import annotations

import itertools
import json
import time
import zlib
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from adapters.bilibili.codec import BilibiliCodec
from adapters.bilibili.open_codec import OpenLiveCodec
from adapters.events import ChatMessage, Platform, Retraction, Role
from bot.chat import outcomes
from bot.chat.policy import SpeakableItem, SpeechPolicy
from bot.chat.queue import SpeechQueue
from bot.chat.router import Router
from bot.config import Config
from bot.control import Control
from tests.bilibili import fixtures as fx
from tests.bilibili import open_fixtures as ofx
from tests.factories import RecordingSpeaker, chat

MOD = frozenset({Role.MODERATOR})


class Bot:
    """The real router, policy, control and queue, as the app wires them."""

    def __init__(self, tmp_path: Path, **cfg: Any) -> None:
        self.state_file = tmp_path / "state.json"
        config = Config.model_validate(
            {
                "policy": {"cooldown_s": 0},
                "commands": {"state_file": str(self.state_file)},
                **cfg,
            }
        )
        self.queue = SpeechQueue(config.queue)
        self.control = Control(config, self.queue, lambda: ["alice", "bob"])
        self.router = Router(SpeechPolicy(config.policy), self.control, self.queue, config.commands)
        self.codec = BilibiliCodec(fx.ROOM, owner_uid=fx.OWNER)
        self._ids = itertools.count()

    def say(self, message: ChatMessage) -> str | SpeakableItem:
        """The message's fate: the queued item, or the reason it was filtered."""
        with capture_logs() as logs:
            self.router.handle(message)
        for item in self.queue.snapshot():
            if item.message is message:
                return item
        (end,) = [e for e in logs if e["event"] in outcomes.TERMINAL_EVENTS]
        return str(end.get("reason", end["event"]))

    def command(self, text: str) -> str:
        replies = []
        self.router._reply = lambda _m, reply: replies.append(reply.text)
        self.router.handle(chat(text, roles=MOD, user_name="mod", user_id="mod"))
        return replies[0]

    def danmaku(self, text: str, uid: int, name: str, crc_of: int = 0) -> ChatMessage:
        """A danmaku as an anonymous session sees it when uid is 0 (CRC of `crc_of`)."""
        doc = fx.danmaku(text=text, uid=uid, name=name, id_str=f"dm{next(self._ids)}")
        doc["info"][0][7] = f"{zlib.crc32(str(crc_of).encode()):x}"
        event = self.codec.command_event(doc, received=time.monotonic())
        assert isinstance(event, ChatMessage)
        return event


def twitch(text: str, user_id: str, name: str, **fields: Any) -> ChatMessage:
    return chat(text, user_id=user_id, user_name=name, **fields)


def test_muting_a_masked_name_mutes_that_viewer_only(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    first = bot.danmaku("我是第一个", 0, "小***", crc_of=111)
    second = bot.danmaku("我是第二个", 0, "小***", crc_of=222)
    assert first.user_id != second.user_id
    bot.say(first)
    bot.say(second)
    assert bot.command("!tts mute 小***") == "muted that user; their waiting messages are removed"
    # The most recently seen 小*** is muted; the other masked viewer still speaks.
    assert bot.say(bot.danmaku("还是我", 0, "小***", crc_of=222)) == "muted"
    assert isinstance(bot.say(bot.danmaku("我能说话", 0, "小***", crc_of=111)), SpeakableItem)


def test_a_rename_neither_escapes_a_mute_nor_steals_a_voice_or_nickname(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    bot.say(twitch("hi", "100", "Troll"))
    bot.say(twitch("hi", "200", "ModAlice", roles=MOD))
    assert bot.command("!tts mute troll").startswith("muted that user")
    assert bot.command("!tts uservoice ModAlice alice") == (
        "that user now speaks with the voice alice"
    )
    assert bot.command("!tts nick ModAlice Alice the Great") == "nickname saved"
    # Same account, new name: still muted.
    assert bot.say(twitch("I'm back", "100", "NotATroll")) == "muted"
    # Another account (here on Bilibili) taking the moderator's name gets neither.
    impostor = bot.say(bot.danmaku("hello", 4242, "ModAlice"))
    assert isinstance(impostor, SpeakableItem)
    assert impostor.voice is None
    assert impostor.spoken.startswith("ModAlice")  # not the nickname
    real = bot.say(twitch("hello", "200", "ModAlice", roles=MOD))
    assert isinstance(real, SpeakableItem)
    assert real.voice == "alice"
    assert real.spoken.startswith("Alice the Great")


def test_a_name_never_seen_is_refused_not_silently_kept(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    reply = bot.command("!tts mute ghost")
    assert reply == "that user has not chatted since the bot started"
    assert bot.control.policy_state.muted == {}
    assert not bot.control.mute("ghost").ok  # the web panel's path
    assert not bot.control.set_nick("ghost", "Boo").ok
    assert not bot.control.set_user_voice("ghost", "alice").ok


def test_platform_prefix_picks_the_account_else_the_most_recent(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    on_twitch = twitch("hi", "7", "Bob")
    bot.say(on_twitch)
    on_bilibili = bot.danmaku("你好", 77, "bob")
    bot.say(on_bilibili)
    bot.command("!tts nick twitch:bob Twitch Bob")
    bot.command("!tts nick bob Bilibili Bob")
    assert bot.control.policy_state.nicknames == {
        on_twitch.user_key: "Twitch Bob",
        on_bilibili.user_key: "Bilibili Bob",
    }
    bot.command("!tts uservoice bilibili:BOB bob")
    assert bot.control.policy_state.user_voices == {on_bilibili.user_key: "bob"}


def test_unmute_by_the_name_it_was_muted_under_after_a_restart(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    bot.say(twitch("hi", "100", "Troll"))
    bot.command("!tts mute troll")
    bot.control.flush()
    again = Bot(tmp_path)
    assert again.say(twitch("hi", "100", "Troll")) == "muted"
    assert again.control.muted_list() == ["Troll (twitch)"]
    assert again.command("!tts unmute Troll") == "unmuted that user"
    assert isinstance(again.say(twitch("hi", "100", "Troll")), SpeakableItem)


def test_old_name_keyed_state_is_kept_until_the_name_is_seen_and_rewritten(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "state.json"
    old = {"user_voices": {"bob": "alice"}, "nicknames": {"xx_1_xx": "One"}, "muted": ["troll"]}
    state_file.write_text(json.dumps(old), encoding="utf-8")
    with capture_logs() as logs:
        bot = Bot(tmp_path)
    assert next(e for e in logs if e["event"] == "state.migrated")["pending_by_name"] == 3
    rewritten = json.loads(state_file.read_text(encoding="utf-8"))
    assert rewritten["version"] == 2
    assert rewritten["by_name"] == {
        "muted": ["troll"],
        "nicknames": {"xx_1_xx": "One"},
        "user_voices": {"bob": "alice"},
    }
    # The first account seen with the name takes the entry, and keeps it after a rename.
    assert bot.say(twitch("hi", "9", "Troll")) == "muted"
    assert bot.say(twitch("hi", "9", "Renamed")) == "muted"
    bob = bot.say(twitch("hi", "5", "Bob"))
    assert isinstance(bob, SpeakableItem) and bob.voice == "alice"
    bot.control.flush()
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    assert saved["muted"] == {"twitch:9": "Renamed"}  # the name last seen
    assert saved["user_voices"] == {"twitch:5": "alice"}
    assert saved["by_name"]["muted"] == []


def test_a_ban_seen_by_an_anonymous_session_retracts_the_masked_danmaku(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    playing = bot.danmaku("more spam", 0, "小***", crc_of=12345)
    banned = bot.danmaku("spam", 0, "小***", crc_of=12345)
    other = bot.danmaku("hi", 0, "小***", crc_of=999)
    for message in (playing, banned, other):
        bot.say(message)
    assert bot.queue.pop_nowait() is not None  # `playing` is with the speaker now
    speaker = RecordingSpeaker()
    bot.control.attach(speaker)
    ban = bot.codec.command_event(fx.room_block(12345), received=0.0)
    assert isinstance(ban, Retraction) and ban.user_id == "12345"
    with capture_logs() as logs:
        bot.router.handle(ban)
    assert [(e["event"], e["msg_id"]) for e in logs] == [(outcomes.RETRACTED, banned.message_id)]
    assert [i.message.message_id for i in bot.queue.snapshot()] == [other.message_id]
    assert [tuple(i.text for i in items or ()) for items, _ in speaker.cuts] == [("more spam",)]


def test_open_platform_viewers_are_keyed_by_open_id(tmp_path: Path) -> None:
    bot = Bot(tmp_path)
    decoder = OpenLiveCodec(fx.ROOM, ofx.ANCHOR_OPEN_ID)

    def danmaku(text: str, open_id: str, name: str) -> ChatMessage:
        doc = ofx.danmaku(text, msg_id=f"o{next(bot._ids)}", open_id=open_id, uname=name)
        event = decoder.command_event(doc, received=time.monotonic())
        assert isinstance(event, ChatMessage)
        return event

    troll = danmaku("spam", "open-troll", "捣乱的")
    assert troll.user_key == (Platform.BILIBILI, "open-troll")
    bot.say(troll)
    bot.say(danmaku("hi", "open-fan", "粉丝"))
    assert bot.command("!tts mute bilibili:捣乱的").startswith("muted that user")
    assert bot.command("!tts nick 粉丝 小粉") == "nickname saved"
    # A new name does not escape the mute; the nickname follows the account.
    assert bot.say(danmaku("again", "open-troll", "改名了")) == "muted"
    fan = bot.say(danmaku("你好", "open-fan", "新名字"))
    assert isinstance(fan, SpeakableItem) and fan.spoken.startswith("小粉")
    # Someone else taking the name gets neither (the web path's uid included).
    other = bot.say(bot.danmaku("你好", 4242, "粉丝"))
    assert isinstance(other, SpeakableItem) and not other.spoken.startswith("小粉")
    bot.control.flush()
    saved = json.loads(bot.state_file.read_text(encoding="utf-8"))
    assert list(saved["muted"]) == ["bilibili:open-troll"]
