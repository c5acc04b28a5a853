from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.events import Platform, Role
from bot.chat import outcomes
from bot.chat.commands import Command, CommandError, is_command, may_run, parse_command, run_command
from bot.chat.policy import SpeakableItem
from bot.chat.queue import SpeechQueue
from bot.config import CommandsConfig, Config
from bot.control import Control, Reply
from tests.factories import RecordingSpeaker, chat

MOD = frozenset({Role.MODERATOR})
VIEWER: frozenset[Role] = frozenset()


def make_control(**cfg: Any) -> tuple[Control, SpeechQueue]:
    config = Config.model_validate(cfg)
    queue = SpeechQueue(config.queue)
    return Control(config, queue, lambda: ["alice", "bob"]), queue


def queued(queue: SpeechQueue, user: str) -> SpeakableItem:
    message = chat("hi", user_name=user)
    item = SpeakableItem(message, "hi", "hi", "hi", 0)
    queue.push(item)
    return item


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!tts skip", Command("skip")),
        ("!TTS Skip please", Command("skip")),
        ("!tts voice alice", Command("voice", ("alice",))),
        ("!tts volume 40", Command("volume", ("40",))),
        ("!tts mode paid", Command("mode", ("paid",))),
        ("!tts mute @Troll", Command("mute", ("@Troll",))),
        ("!tts nick xX_Gamer_Xx The Gamer", Command("nick", ("xX_Gamer_Xx", "The Gamer"))),
        ("!tts status", Command("status")),
    ],
)
def test_parse(text: str, expected: Command) -> None:
    assert parse_command(text, "!tts") == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("!tts", "usage: !tts voice|voices|skip"),
        ("!tts dance", "unknown command; try !tts voice|voices|skip"),
        ("!tts voice", "usage: !tts voice NAME"),
        ("!tts voice a b", "usage: !tts voice NAME"),
        ("!tts volume loud", "usage: !tts volume 0-100"),
        ("!tts volume 101", "usage: !tts volume 0-100"),
        ("!tts volume -5", "usage: !tts volume 0-100"),
        ("!tts volume ²", "usage: !tts volume 0-100"),
        ("!tts mute", "usage: !tts mute USER"),
        ("!tts nick bob", "usage: !tts nick USER NAME"),
    ],
)
def test_parse_errors(text: str, reason: str) -> None:
    result = parse_command(text, "!tts")
    assert isinstance(result, CommandError)
    assert result.reason.startswith(reason)


def test_is_command() -> None:
    assert is_command("!tts skip", "!tts")
    assert is_command("!TTS", "!tts")
    assert not is_command("!ttsskip", "!tts")
    assert not is_command("say !tts skip", "!tts")
    assert not is_command("", "!tts")


def test_permissions_by_role_not_name() -> None:
    config = CommandsConfig()
    assert may_run("skip", MOD, config)
    assert may_run("skip", frozenset({Role.BROADCASTER}), config)
    assert not may_run("skip", frozenset({Role.SUBSCRIBER, Role.VIP}), config)
    open_status = CommandsConfig.model_validate({"permissions": {"status": ["everyone"]}})
    assert may_run("status", VIEWER, open_status)
    vips = CommandsConfig.model_validate({"permissions": {"skip": ["vip"]}})
    assert may_run("skip", frozenset({Role.VIP}), vips)
    assert not may_run("skip", MOD, vips)


def test_viewer_named_like_the_streamer_is_refused() -> None:
    control, _ = make_control()
    message = chat("!tts pause", user_name="streamer", roles=VIEWER)
    with capture_logs() as logs:
        reply = run_command(message, control, CommandsConfig())
    assert not reply.ok
    assert not control.paused
    assert logs[0]["event"] == "tts.command_refused"
    assert logs[0]["reason"] == "not_allowed"
    assert logs[0]["command"] == "pause"


def test_bad_command_is_a_logged_refusal_not_an_exception() -> None:
    control, _ = make_control()
    bad = ("!tts", "!tts explode", "!tts volume 9000", "!tts voice ../../etc", "!tts unmute x")
    for text in bad:
        with capture_logs() as logs:
            reply = run_command(chat(text, roles=MOD), control, CommandsConfig())
        assert not reply.ok
        assert logs[0]["event"] == "tts.command_refused", text


def test_mod_commands_change_state_and_log() -> None:
    control, _ = make_control()
    cfg = CommandsConfig()

    def run(text: str) -> str:
        with capture_logs() as logs:
            reply = run_command(chat(text, roles=MOD), control, cfg)
        expected = "tts.command" if reply.ok else "tts.command_refused"
        assert [e["event"] for e in logs] == [expected]
        return reply.text

    assert run("!tts voice bob") == "voice is now bob"
    assert control.voice == "bob"
    assert run("!tts voice carol") == "unknown voice; voices: alice, bob (current: bob)"
    assert control.voice == "bob"
    assert run("!tts voices") == "voices: alice, bob (current: bob)"
    run("!tts volume 35")
    assert control.volume == 35
    run("!tts pause")
    assert control.paused
    run("!tts resume")
    assert not control.paused
    run("!tts mode reward")
    assert control.policy_state.read_mode == "reward"
    run("!tts mode command")
    assert control.policy_state.read_mode == "command"
    control.policy_state.saw(chat("hi", user_name="xX_Gamer_Xx", user_id="g1"))
    run("!tts nick xX_Gamer_Xx The Gamer")
    assert control.policy_state.nicknames == {(Platform.TWITCH, "g1"): "The Gamer"}
    status = run("!tts status")
    assert status == "playing | voice bob | volume 35 | mode command | queue 0 | muted 0"


def test_voice_name_cannot_escape_voices_dir() -> None:
    control, _ = make_control()
    assert not control.set_voice("../../x").ok
    assert not control.set_voice("alice/../bob").ok
    assert control.voice == "default"


def test_mute_removes_pending_and_unmute() -> None:
    control, queue = make_control()
    troll = queued(queue, "Troll")
    other = queued(queue, "Nice")
    control.policy_state.saw(troll.message)
    with capture_logs() as logs:
        reply = control.mute("@TROLL")
    assert reply.ok
    assert troll.message.user_key in control.policy_state.muted
    assert [i.message.message_id for i in queue.snapshot()] == [other.message.message_id]
    assert logs == [
        {
            "event": outcomes.SKIPPED,
            "log_level": "info",
            "msg_id": troll.message.message_id,
            "platform": "twitch",
            "user": "Troll",
            "reason": "muted",
        }
    ]
    assert control.unmute("troll").ok
    assert not control.unmute("troll").ok


def test_clear_ends_all_pending_as_skipped() -> None:
    control, queue = make_control()
    for name in ("a", "b", "c"):
        queued(queue, name)
    with capture_logs() as logs:
        assert control.clear().text == "cleared 3 pending message(s)"
    assert len(queue) == 0
    assert [e["event"] for e in logs] == [outcomes.SKIPPED] * 3


def test_skip_asks_the_speaker() -> None:
    control, _ = make_control()
    # No speaker registered: nothing can be playing.
    assert control.skip().text == "nothing is playing"
    speaker = RecordingSpeaker()
    control.attach(speaker)
    assert control.skip().ok
    assert speaker.cuts == [(None, outcomes.SKIPPED)]


def test_initial_state_from_config() -> None:
    control, _ = make_control(
        policy={"muted_users": ["@Spam"], "nicknames": {"Bob_": "Robert"}, "read_mode": "paid"},
        audio={"volume": 55},
        engine={"default_voice": "alice"},
    )
    assert control.policy_state.muted_names == {"spam"}
    assert control.policy_state.name_nicknames == {"bob_": "Robert"}
    assert control.policy_state.read_mode == "paid"
    assert control.volume == 55
    assert control.voice == "alice"


def test_control_validates_direct_calls() -> None:
    control, _ = make_control()
    assert not control.set_volume(101).ok
    assert not control.set_mode("loud").ok
    assert not control.mute("  ").ok
    assert control.volume == 80


def test_uservoice_checked_persisted_and_reloaded(tmp_path: Any) -> None:
    state_file = tmp_path / "state.json"
    cfg = {"commands": {"state_file": str(state_file)}}
    control, _ = make_control(**cfg)
    commands = CommandsConfig.model_validate(cfg["commands"])
    for name, user_id in (("Bob", "1"), ("Troll", "2"), ("xX_1_Xx", "3")):
        control.policy_state.saw(chat("hi", user_name=name, user_id=user_id))
    reply = run_command(chat("!tts uservoice @Bob alice", roles=MOD), control, commands)
    assert reply == Reply(True, "that user now speaks with the voice alice")
    refused = run_command(chat("!tts uservoice bob carol", roles=MOD), control, commands)
    assert refused.text == "unknown voice; voices: alice, bob (current: default)"
    run_command(chat("!tts mute Troll", roles=MOD), control, commands)
    run_command(chat("!tts nick xX_1_Xx One", roles=MOD), control, commands)
    # A restart reads it all back.
    again, _ = make_control(**cfg)
    assert again.policy_state.user_voices == {(Platform.TWITCH, "1"): "alice"}
    assert again.policy_state.muted == {(Platform.TWITCH, "2"): "Troll"}
    assert again.policy_state.nicknames == {(Platform.TWITCH, "3"): "One"}
    run_command(chat("!tts uservoice bob off", roles=MOD), again, commands)
    assert make_control(**cfg)[0].policy_state.user_voices == {}


def test_damaged_state_file_is_logged_not_fatal(tmp_path: Any) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text("{not json")
    with capture_logs() as logs:
        control, _ = make_control(commands={"state_file": str(state_file)})
    assert control.policy_state.user_voices == {}
    assert logs[0]["event"] == "state.corrupt"


HOSTILE = "https://free-nitro.example.com/claim"


@pytest.mark.parametrize(
    "text",
    [
        f"!tts {HOSTILE}",
        "!tts",
        "!tts slurword",
        "!tts voice ../../etc",
        "!tts volume 9000",
        f"!tts nick {HOSTILE}",
        "!tts skip",
    ],
)
def test_viewer_who_may_run_nothing_gets_no_reply(text: str) -> None:
    control, _ = make_control()
    with capture_logs() as logs:
        reply = run_command(chat(text, roles=VIEWER), control, CommandsConfig())
    assert not reply.ok
    assert not reply.public
    assert HOSTILE not in reply.text
    assert [(e["event"], e["reason"]) for e in logs] == [("tts.command_refused", "not_allowed")]


def test_viewer_with_one_open_command_is_told_only_that_one() -> None:
    control, _ = make_control()
    config = CommandsConfig.model_validate({"permissions": {"status": ["everyone"]}})
    reply = run_command(chat(f"!tts {HOSTILE}", roles=VIEWER), control, config)
    assert reply == Reply(False, "unknown command; try !tts status")
    # A command they may not run stays silent, usage error or not.
    assert not run_command(chat("!tts voice", roles=VIEWER), control, config).public
    assert run_command(chat("!tts status", roles=VIEWER), control, config).ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"!tts {HOSTILE}", "unknown command; try !tts voice|voices|skip|clear"),
        ("!tts voice slurword", "unknown voice; voices: alice, bob (current: default)"),
        ("!tts uservoice scam.example.com slurword", "unknown voice; voices: alice, bob"),
        ("!tts uservoice scam.example.com alice", "that user now speaks with the voice alice"),
        ("!tts uservoice scam.example.com off", "that user now speaks with the current voice"),
        ("!tts mute scam.example.com", "muted that user; their waiting messages are removed"),
        ("!tts unmute scam.example.com", "that user is not muted"),
        ("!tts mute @", "usage: !tts mute USER"),
        ("!tts nick scam.example.com visit scam.example.com", "nickname saved"),
        ("!tts nick @ slurword", "usage: !tts nick USER NAME"),
        ("!tts mode scam.example.com", "usage: !tts mode all|command|paid"),
        ("!tts volume scam.example.com", "usage: !tts volume 0-100"),
    ],
)
def test_replies_to_moderators_never_repeat_what_was_typed(text: str, expected: str) -> None:
    control, _ = make_control()
    control.policy_state.saw(chat("hi", user_name="scam.example.com", user_id="66"))
    reply = run_command(chat(text, roles=MOD), control, CommandsConfig())
    assert reply.public
    assert reply.text.startswith(expected)
    typed = {w.casefold().lstrip("@") for w in text.split()[1:]} - {"voice", "mute", "off"}
    typed -= {"alice", "uservoice", "unmute", "nick", "mode", "volume", ""}
    assert not [w for w in typed if w in reply.text.casefold()], reply.text


def test_moderator_unmute_of_a_muted_user() -> None:
    control, _ = make_control()
    control.policy_state.saw(chat("hi", user_name="Troll", user_id="2"))
    run_command(chat("!tts mute Troll", roles=MOD), control, CommandsConfig())
    reply = run_command(chat("!tts unmute troll", roles=MOD), control, CommandsConfig())
    assert reply == Reply(True, "unmuted that user")
    assert control.policy_state.muted == {}


# The panel's ways in: entries by key, blocked words, the queue's order -----------
def test_entries_are_listed_with_keys_and_changed_by_key() -> None:
    control, queue = make_control(
        policy={"muted_users": ["ConfigTroll"], "nicknames": {"cfg": "Config Name"}}
    )
    troll = chat("hi", user_name="Troll", user_id="2")
    fan = chat("hi", user_name="Fan", user_id="3")
    for message in (troll, fan):
        control.policy_state.saw(message)
    control.mute("Troll")
    control.policy_state.by_name.muted["oldname"] = None
    control.set_nick("Fan", "The Fan")
    control.set_user_voice("Fan", "bob")
    assert [(e.key, e.name, e.editable) for e in control.muted_entries(10).entries] == [
        ("twitch:2", "Troll", True),
        ("name:oldname", "oldname", True),
        ("config:configtroll", "configtroll", False),
    ]
    assert [(e.key, e.value) for e in control.nickname_entries(10).entries] == [
        ("twitch:3", "The Fan"),
        ("config:cfg", "Config Name"),
    ]
    assert [(e.key, e.value) for e in control.user_voice_entries(10).entries] == [
        ("twitch:3", "bob")
    ]
    first = control.muted_entries(1)
    assert [e.key for e in first.entries] == ["twitch:2"] and first.total == 3

    assert control.unmute_key("twitch:2") == Reply(True, "unmuted Troll")
    assert control.unmute_key("name:oldname").ok
    assert control.muted_entries(10).entries[0].key == "config:configtroll"
    for key, why in (
        ("twitch:2", "not muted"),
        ("config:configtroll", "set in the config file"),
        ("nonsense", "names no account"),
        ("twitch:", "names no account"),
    ):
        refused = control.unmute_key(key)
        assert not refused.ok and why in refused.text, (key, refused)

    assert control.set_nick_key("twitch:3", "  Big   Fan ").text == "Fan will be read as Big Fan"
    assert control.policy_state.nicknames[fan.user_key] == "Big Fan"
    assert control.set_nick_key("twitch:3", "").ok
    assert fan.user_key not in control.policy_state.nicknames
    assert not control.set_nick_key("twitch:999", "Who").ok  # an account never seen
    # By name: only a row the panel listed; a new name goes through set_nick's checks.
    control.policy_state.by_name.nicknames["waiting"] = "Old"
    assert control.set_nick_key("name:waiting", "New").ok
    assert control.policy_state.by_name.nicknames["waiting"] == "New"
    refused = control.set_nick_key("name:anyone", "Whatever")
    assert not refused.ok and "not in the list" in refused.text
    assert "anyone" not in control.policy_state.by_name.nicknames
    assert control.set_nick_key("name:waiting", "").ok
    assert not control.set_nick_key("config:cfg", "").ok
    assert control.set_user_voice_key("twitch:3", "alice").ok
    assert control.policy_state.user_voices[fan.user_key] == "alice"
    assert not control.set_user_voice_key("twitch:3", "nobody").ok
    assert control.set_user_voice_key("twitch:3", None).ok
    assert control.user_voice_entries(10).entries == []
    assert len(queue) == 0


def test_a_broken_voice_is_refused_everywhere_and_chat_is_told_without_details() -> None:
    config = Config.model_validate({})
    broken = {"bob": "clip bob.wav is silent"}
    control = Control(config, SpeechQueue(config.queue), lambda: ["alice", "bob"], broken.get)
    refused = control.set_voice("bob")
    assert not refused.ok and refused.text == "unusable voice 'bob': clip bob.wav is silent"
    control.policy_state.saw(chat("hi", user_name="Fan", user_id="3"))
    assert not control.set_user_voice("Fan", "bob").ok
    assert not control.set_user_voice_key("twitch:3", "bob").ok
    assert control.list_voices().text == "voices: alice (current: default)"
    reply = run_command(chat("!tts voice bob", roles=MOD), control, CommandsConfig())
    assert reply == Reply(False, "that voice's files are broken; voices: alice (current: default)")
    assert control.set_voice("alice").ok


def test_blocked_words_change_until_restart_and_reach_the_policy() -> None:
    control, _ = make_control(policy={"blocked_words": ["darn"]})
    given: list[list[str]] = []
    control.follow_blocked_words(lambda words: given.append(list(words)))
    assert control.block_word("  scam  ").text == "blocked 'scam' until the bot stops"
    assert given[-1] == ["darn", "scam"]
    assert not control.block_word("SCAM").ok  # the same word
    assert not control.block_word("!!").ok
    assert control.unblock_word("DARN").ok  # the config file's too, until restart
    assert given[-1] == ["scam"] and control.blocked_words == ["scam"]
    assert not control.unblock_word("darn").ok


def test_play_next_moves_a_waiting_line_to_the_front() -> None:
    control, queue = make_control()
    first, second = queued(queue, "a"), queued(queue, "b")
    key = f"twitch:{second.message.message_id}"
    assert control.play_next(key) == Reply(True, "moved to the front: it plays next")
    assert queue.snapshot() == [second, first]
    assert not control.play_next("twitch:gone").ok
    assert not control.play_next("no key").ok
