"""Language-aware speech: which language a line is read in, its templates (with
variants), masked names and currency words."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from adapters.events import Paid, PaidKind, Platform
from bot.chat.language import detect
from bot.chat.policy import PolicyState, SpeakableItem, SpeechPolicy
from bot.config import ConfigError, Language, PolicyConfig, parse_config
from tests.factories import chat


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("hello chat", "en", "en"),
        ("hello chat", "zh", "en"),
        ("gg", "en", "en"),
        ("gg", "zh", "zh"),  # one Latin word on Bilibili is its slang
        ("yyds", "zh", "zh"),
        ("nice play bro", "zh", "en"),
        ("主播好", "en", "zh"),
        ("今天第2名 gg", "en", "zh"),  # any Han character: Chinese
        ("你好 from China", "en", "zh"),
        ("666", "en", "en"),  # nothing to tell by: the platform's
        ("666", "zh", "zh"),
        ("？？？", "zh", "zh"),
        ("", "zh", "zh"),
        ("こんにちは", "en", "en"),  # kana alone: no templates for it
        ("𠀀", "en", "zh"),  # Han beyond the basic plane
    ],
)
def test_detect(text: str, default: Language, expected: Language) -> None:
    assert detect(text, default) == expected


def policy(seed: int = 0, **overrides: Any) -> SpeechPolicy:
    return SpeechPolicy(PolicyConfig.model_validate(overrides), rng=random.Random(seed))


def said(pol: SpeechPolicy, text: str, **fields: Any) -> SpeakableItem:
    item = pol.evaluate(chat(text, **fields), PolicyState())
    assert isinstance(item, SpeakableItem), item
    return item


def test_each_platform_reads_in_its_language_unless_the_line_says() -> None:
    pol = policy(
        templates={"en": {"chat": "{user} says {text}"}, "zh": {"chat": "{user}说：{text}"}}
    )
    bilibili = {"platform": Platform.BILIBILI, "user_name": "小明"}
    assert said(pol, "你好", **bilibili).spoken == "小明说：你好"
    assert said(pol, "666", **bilibili).language == "zh"
    assert said(pol, "hello from overseas", **bilibili).spoken == "小明 says hello from overseas"
    assert said(pol, "hi all", user_name="Bob").spoken == "Bob says hi all"
    assert said(pol, "主播好", user_name="Bob").spoken == "Bob说：主播好"
    assert said(policy(languages={"twitch": "zh"}), "666").language == "zh"


def test_variants_are_picked_at_random_never_twice_in_a_row() -> None:
    variants = ["{user} says {text}", "{user}: {text}", "{user} writes {text}"]
    pol = policy(seed=3, templates={"en": {"chat": variants}})
    lines = [said(pol, "hi", user_name="Bob").spoken for _ in range(60)]
    assert set(lines) == {"Bob says hi", "Bob: hi", "Bob writes hi"}
    assert all(a != b for a, b in itertools.pairwise(lines))


def test_shipped_sets_are_complete_in_both_languages() -> None:
    pol = policy()
    sc = Paid(30, "CNY", PaidKind.SUPERCHAT)
    assert said(pol, "加油", user_name="小明", paid=sc).spoken == "小明发了三十元的醒目留言：加油"
    assert said(pol, "go go", user_name="Bob", paid=sc).spoken == (
        "Bob sent a super chat of thirty yuan. go go"
    )
    bits = Paid(500, "BITS", PaidKind.BITS)
    assert said(pol, "冲", user_name="Bob", paid=bits).spoken == "Bob打赏了五百比特。冲"
    for language in ("en", "zh"):
        templates = PolicyConfig().templates.of(language)
        assert all(getattr(templates, kind) for kind in templates.model_fields)


def test_the_older_single_string_templates_load_as_english() -> None:
    config = PolicyConfig.model_validate({"templates": {"chat": "{text}, from {user}"}})
    assert config.templates.en.chat == ["{text}, from {user}"]
    assert config.templates.en.raid == ["{user} is raiding!"]
    assert config.templates.zh.chat == ["{user}说：{text}", "{user}：{text}"]


def test_one_kind_of_one_language_overrides_only_that() -> None:
    config = PolicyConfig.model_validate({"templates": {"zh": {"chat": "{user}：{text}"}}})
    assert config.templates.zh.chat == ["{user}：{text}"]
    assert config.templates.zh.gift[0] == "{user}送出了{amount}。{text}"
    assert config.templates.en.chat == ["{user} says {text}", "{user}: {text}"]


@pytest.mark.parametrize(
    ("yaml", "error"),
    [
        ("templates: {zh: {chat: []}}", "policy.templates.zh.chat: needs at least one variant"),
        ("templates: {en: {raid: ['{who}']}}", "policy.templates.en.raid: unknown placeholder"),
        ("templates: {fr: {chat: x}}", "policy.templates.fr: unknown key"),
        ("languages: {youtube: en}", "policy.languages: unknown platform 'youtube'"),
        ("languages: {twitch: fr}", "policy.languages.twitch: must be one of 'en' or 'zh'"),
    ],
)
def test_template_and_language_mistakes(yaml: str, error: str) -> None:
    text = "policy:\n  " + yaml + "\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, environ={})
    assert raised.value.lines[0].startswith(f"config error: {error}"), raised.value.lines


def test_a_masked_name_is_said_as_a_viewer_never_as_stars() -> None:
    pol = policy(
        templates={"zh": {"chat": "{user}说：{text}"}, "en": {"chat": "{user} says {text}"}}
    )
    masked = {"platform": Platform.BILIBILI, "user_name": "小***", "user_id": "crc:1",
              "name_masked": True}  # fmt: skip
    assert said(pol, "你好", **masked).spoken == "一位观众说：你好"
    assert said(pol, "hello there all", **masked).spoken == "a viewer says hello there all"
    gift = said(pol, "小心心 x3", paid=Paid(0.3, "CNY", PaidKind.GIFT), **masked)
    assert "***" not in gift.spoken and "一位观众" in gift.spoken
    # A moderator's nickname for the account still wins.
    state = PolicyState(nicknames={(Platform.BILIBILI, "crc:1"): "老朋友"})
    item = pol.evaluate(chat("你好", **masked), state)
    assert isinstance(item, SpeakableItem) and item.spoken == "老朋友说：你好"


def test_currency_words_per_language() -> None:
    pol = policy(
        currencies={
            "COINS": {"word": "coins", "value": 0.01},
            "USD": {"word": "dollars", "words": {"zh": "美元"}, "value": 1},
        }
    )
    coins = Paid(5, "COINS", PaidKind.BITS)
    assert said(pol, "冲冲冲", user_name="A", paid=coins).spoken == "A打赏了五 coins。冲冲冲"
    usd = Paid(5, "USD", PaidKind.SUPERCHAT)
    assert said(pol, "加油", user_name="A", paid=usd).spoken == "A发了五美元的醒目留言：加油"


@pytest.mark.parametrize(
    ("platform", "text", "spoken"),
    [
        (Platform.TWITCH, "gg 2 ez", "Bob says good game two easy"),
        (Platform.TWITCH, "brb in 5 min, $5 says he wins",
         "Bob says be right back in five minutes, five dollars says he wins"),
        (Platform.BILIBILI, "666 第2名 yyds", "Bob说：六六六 第二名 永远的神"),
        (Platform.BILIBILI, "3:30开播 50%", "Bob说：三点三十分开播 百分之五十"),
        (Platform.TWITCH, "nothing to change here", "Bob says nothing to change here"),
    ],
)  # fmt: skip
def test_the_policy_reads_shorthand_and_numbers_in_the_lines_language(
    platform: Platform, text: str, spoken: str
) -> None:
    pol = policy(
        templates={"en": {"chat": "{user} says {text}"}, "zh": {"chat": "{user}说：{text}"}}
    )
    item = said(pol, text, platform=platform, user_name="Bob")
    assert item.spoken == spoken
    assert item.text == text  # the panel and overlay show what was typed


def test_a_line_the_lexicon_empties_is_not_read() -> None:
    pol = policy(lexicon={"en": {"lol": ""}})
    assert pol.evaluate(chat("lol LOL"), PolicyState()).reason == "empty"  # type: ignore[union-attr]


def test_the_streamers_own_line_is_read_out_too() -> None:
    from bot.chat.queue import SpeechQueue
    from bot.chat.router import Router
    from bot.config import Config
    from bot.control import Control

    config = Config()
    queue = SpeechQueue(config.queue)
    control = Control(config, queue, lambda: ["default"])
    router = Router(SpeechPolicy(config.policy), control, queue, config.commands)
    assert router.say("back in 5 min", "default").ok
    (item,) = queue.snapshot()
    assert item.spoken == "back in five minutes" and item.text == "back in 5 min"


def test_numbers_written_out_cannot_make_a_line_minutes_long() -> None:
    # 200 characters of grouped numbers would be ~1,500 characters as words.
    line = " ".join(f"{n},{n:03d},{n:03d}" for n in range(100, 200))[:200]
    pol = policy(templates={"en": {"chat": "{text}"}}, max_chars=200)
    item = said(pol, line)
    assert len(item.text) <= 200
    assert len(item.spoken) <= 400
