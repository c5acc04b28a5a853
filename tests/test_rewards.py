"""Twitch channel-point rewards: from the IRC tags to what is read, in which voice,
at which priority, and how an unmapped reward is made discoverable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.events import HIGHLIGHTED_MESSAGE, ChatMessage
from adapters.twitch.codec import DecodeFailed, TwitchCodec
from adapters.twitch.config import TwitchConfig
from bot.chat.policy import Drop, PolicyState, SpeakableItem, SpeechPolicy
from bot.config import ConfigError, PolicyConfig, parse_config
from bot.control import READ_MODES
from tests.factories import chat

TTS = "0c4bd3a8-9f7e-4b8a-8d3e-2f1c5a6b7d8e"
HYDRATE = "5a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
UNMAPPED = "99999999-aaaa-4bbb-8ccc-dddddddddddd"

REDEMPTION = (
    "@badge-info=;badges=;color=#1E90FF;custom-reward-id={reward};display-name=Ann;"
    "emotes=;first-msg=0;flags=;id={id};mod=0;returning-chatter=0;room-id=1337;"
    "subscriber=0;tmi-sent-ts=1732500000000;turbo=0;user-id=42;user-type= "
    ":ann!ann@ann.tmi.twitch.tv PRIVMSG #somestreamer :{text}"
)
HIGHLIGHT = (
    "@badges=;display-name=Bob;emotes=;id=h1;msg-id=highlighted-message;room-id=1337;"
    "user-id=43 :bob!bob@bob.tmi.twitch.tv PRIVMSG #somestreamer :look at me"
)


def decode(line: str) -> list[Any]:
    return TwitchCodec("justinfan1").feed(line + "\r\n", 1.0)


def twitch(rewards: dict[str, Any]) -> TwitchConfig:
    return TwitchConfig.model_validate({"rewards": rewards})


def policy(rewards: dict[str, Any] | None = None, **overrides: Any) -> SpeechPolicy:
    rules = twitch(rewards or {}).reward_rules()
    overrides.setdefault("templates", {"en": {"chat": "{user} says {text}"}})
    return SpeechPolicy(PolicyConfig.model_validate(overrides), rewards=rules)


def evaluate(pol: SpeechPolicy, state: PolicyState, reward: str, text: str = "hi") -> Any:
    return pol.evaluate(chat(text, reward_id=reward), state)


# The codec ---------------------------------------------------------------------


def test_a_redemption_carries_its_reward_id() -> None:
    (event,) = decode(REDEMPTION.format(reward=TTS.upper(), id="r1", text="read this"))
    assert isinstance(event, ChatMessage)
    assert event.reward_id == TTS  # Twitch's ids are lower case; compared as such
    assert event.text == "read this" and event.user_name == "Ann"


def test_highlight_my_message_is_a_reward_by_name() -> None:
    (event,) = decode(HIGHLIGHT)
    assert isinstance(event, ChatMessage) and event.reward_id == HIGHLIGHTED_MESSAGE


def test_plain_chat_has_no_reward() -> None:
    line = REDEMPTION.replace("custom-reward-id={reward};", "").format(id="c1", text="hey")
    (event,) = decode(line)
    assert isinstance(event, ChatMessage) and event.reward_id == ""


@pytest.mark.parametrize("bad", ["a b", "x" * 65, "../../etc", "ab;cd"])
def test_a_malformed_reward_id_costs_that_line_only(bad: str) -> None:
    line = REDEMPTION.format(reward=bad.replace(" ", "\\s").replace(";", "\\:"), id="b", text="t")
    (event,) = decode(line)
    assert isinstance(event, DecodeFailed) and "custom-reward-id" in event.error


# The config --------------------------------------------------------------------


def test_rewards_by_id_or_by_a_name_with_the_id() -> None:
    config = twitch(
        {
            TTS.upper(): {"voice": "mei", "priority": 3},
            "hydrate": {"id": HYDRATE, "read": False},
            HIGHLIGHTED_MESSAGE: {"template": "{user} highlights: {text}"},
        }
    )
    rules = config.reward_rules()
    assert set(rules) == {TTS, HYDRATE, HIGHLIGHTED_MESSAGE}
    assert rules[HYDRATE][0] == "hydrate" and rules[HYDRATE][1].read is False
    assert rules[TTS][1].voice == "mei"


@pytest.mark.parametrize(
    ("rewards", "error"),
    [
        (
            {"tts": {"voice": "mei"}},
            "config error: platforms.twitch.rewards.tts: give the reward's id (id: ...)",
        ),
        (
            {"a": {"id": TTS}, "b": {"id": TTS}},
            f"config error: platforms.twitch.rewards.b: reward {TTS} is already mapped by a",
        ),
        (
            {"tts": {"id": "not-an-id"}},
            "config error: platforms.twitch.rewards.tts.id: must be a reward id",
        ),
        (
            {TTS: {"template": "{user} {bits}"}},
            f"config error: platforms.twitch.rewards.{TTS}.template: unknown placeholder {{bits}}",
        ),
        (
            {TTS: {"priority": 500}},
            f"config error: platforms.twitch.rewards.{TTS}.priority: must be <= 100",
        ),
        (
            {TTS: {"loud": True}},
            f"config error: platforms.twitch.rewards.{TTS}.loud: unknown key",
        ),
    ],
)
def test_reward_map_mistakes_are_one_clear_line(rewards: dict[str, Any], error: str) -> None:
    import yaml

    text = yaml.safe_dump({"platforms": {"twitch": {"rewards": rewards}}})
    with pytest.raises(ConfigError) as raised:
        parse_config(text, environ={})
    assert raised.value.lines[0].startswith(error), raised.value.lines


# The policy --------------------------------------------------------------------


def test_a_mapped_reward_is_read_in_its_voice_template_and_priority() -> None:
    pol = policy({"tts": {"id": TTS, "voice": "mei", "template": "{user} asks: {text}",
                          "priority": 3}})  # fmt: skip
    state = PolicyState(user_voices={})
    item = pol.evaluate(chat("is it raining", reward_id=TTS, user_name="Ann"), state)
    assert isinstance(item, SpeakableItem)
    assert item.voice == "mei"
    assert item.spoken == "Ann asks: is it raining"
    assert item.speech(previous_user=item.message.user_key) == "Ann asks: is it raining"
    assert item.priority == 3.0


def test_the_reward_voice_wins_over_the_viewers_own() -> None:
    pol = policy({TTS: {"voice": "mei"}})
    message = chat("hello", reward_id=TTS)
    state = PolicyState(user_voices={message.user_key: "default"})
    item = pol.evaluate(message, state)
    assert isinstance(item, SpeakableItem) and item.voice == "mei"
    plain = pol.evaluate(chat("hello", user_id=message.user_id), state)
    assert isinstance(plain, SpeakableItem) and plain.voice == "default"


def test_a_reward_without_extras_reads_like_chat() -> None:
    item = evaluate(policy({TTS: {}}), PolicyState(), TTS, "good morning")
    assert isinstance(item, SpeakableItem)
    assert item.spoken.endswith("says good morning") and item.voice is None
    assert item.priority == 0.0


def test_read_false_keeps_a_reward_silent() -> None:
    drop = evaluate(policy({"hydrate": {"id": HYDRATE, "read": False}}), PolicyState(), HYDRATE)
    assert drop == Drop("reward_not_read")


def test_reward_mode_reads_only_mapped_rewards_and_paid_events() -> None:
    pol = policy({TTS: {}})
    state = PolicyState(read_mode="reward")
    assert isinstance(evaluate(pol, state, TTS), SpeakableItem)
    assert evaluate(pol, state, "") == Drop("not_reward")
    assert evaluate(pol, state, UNMAPPED) == Drop("not_reward")
    assert evaluate(pol, state, HIGHLIGHTED_MESSAGE) == Drop("not_reward")
    from adapters.events import Paid, PaidKind

    bits = pol.evaluate(chat("cheer", paid=Paid(100, "BITS", PaidKind.BITS)), state)
    assert isinstance(bits, SpeakableItem)
    assert "reward" in READ_MODES


def test_command_mode_still_reads_mapped_rewards() -> None:
    pol = policy({TTS: {}})
    state = PolicyState(read_mode="command")
    assert isinstance(evaluate(pol, state, TTS), SpeakableItem)
    assert evaluate(pol, state, UNMAPPED) == Drop("not_command")


def test_all_mode_reads_an_unmapped_reward_as_chat() -> None:
    assert isinstance(evaluate(policy(), PolicyState(), UNMAPPED), SpeakableItem)


def test_redemptions_skip_the_cooldown() -> None:
    pol = policy({TTS: {}}, cooldown_s=60)
    state = PolicyState()
    first = pol.evaluate(chat("one", user_id="7", reward_id=TTS), state)
    assert isinstance(first, SpeakableItem)
    state.record_accepted(first, 60)
    again = pol.evaluate(chat("two", user_id="7", reward_id=TTS), state)
    assert isinstance(again, SpeakableItem)
    assert pol.evaluate(chat("three", user_id="7"), state) == Drop("cooldown")


def test_an_unmapped_reward_is_logged_once_and_listed() -> None:
    pol = policy({"tts": {"id": TTS}})
    state = PolicyState()
    with capture_logs() as logs:
        for n in range(3):
            evaluate(pol, state, UNMAPPED, f"redeemed {n}")
        evaluate(pol, state, TTS, "mapped")
    seen = [e for e in logs if e["event"] == "twitch.reward_seen"]
    assert len(seen) == 1
    assert seen[0]["reward_id"] == UNMAPPED and seen[0]["text"] == "redeemed 0"
    listed = {r.reward_id: r for r in state.rewards.listed()}
    assert listed[UNMAPPED].count == 3 and listed[UNMAPPED].name == ""
    assert listed[UNMAPPED].example == "redeemed 2"
    assert listed[TTS].name == "tts"


def test_an_emote_only_redemption_is_listed_though_not_read() -> None:
    # Its id is what the streamer needs, whatever the viewer typed.
    pol, state = policy(), PolicyState()
    message = chat("Kappa", reward_id=UNMAPPED, emote_only=True, emotes=((0, 4),))
    assert pol.evaluate(message, state) == Drop("emote_only")
    assert [r.reward_id for r in state.rewards.listed()] == [UNMAPPED]


def test_the_seen_list_is_bounded() -> None:
    from bot.chat.rewards import RewardsSeen

    seen = RewardsSeen(limit=5)
    for n in range(20):
        seen.saw(chat("x" * 500, reward_id=f"id{n}"), "")
    listed = seen.listed()
    assert [r.reward_id for r in listed] == [f"id{n}" for n in range(15, 20)]
    assert all(len(r.example) == 100 for r in listed)


# The command line ----------------------------------------------------------------


def test_ishowtts_rewards_explains_and_lists_the_map(tmp_path: Path) -> None:
    from tests.test_cli import run

    voices = tmp_path / "voices"
    voices.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"engine: {{voices_dir: {voices}}}\n"
        "platforms:\n  twitch:\n    rewards:\n"
        f"      tts: {{id: {TTS}, voice: builtin-en, priority: 3}}\n"
        f"      {HYDRATE}: {{read: false, voice: nobody}}\n"
    )
    result = run("rewards", "--config", str(config))
    out = result.stdout
    assert "redeem the reward once" in out
    assert f"tts ({TTS}): read, voice builtin-en, priority 3" in out
    assert f"{HYDRATE}: not read, voice nobody" in out
    assert f"warning: platforms.twitch.rewards.{HYDRATE}: voice 'nobody'" in out
    assert result.returncode == 1
