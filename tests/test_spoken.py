"""Chat text as it is said (`bot.chat.spoken`): tables of line → spoken text, in
English, Chinese and mixed lines, with the shipped lexicon from `PolicyConfig`."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.chat.spoken import SpeechText
from bot.config import ConfigError, PolicyConfig, parse_config

#: The policy builds it this way, after the user's replacements.
SHIPPED = SpeechText(PolicyConfig().lexicon)


def say(text: str, language: str) -> str:
    return SHIPPED.speakable(text, language)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        # money
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("it was $20.50", "it was twenty dollars and fifty cents"),
        ("$0.99", "ninety nine cents"),
        ("$05", "five dollars"),
        ("$1,000,000,000.50", "one billion dollars and fifty cents"),
        ("$5k", "five thousand dollars"),
        ("€3 or £2.01", "three euros or two pounds and one penny"),
        ("¥30", "thirty yuan"),
        # percentages, times
        ("50%", "fifty percent"),
        ("down -5%", "down minus five percent"),
        ("3:30", "three thirty"),
        ("3:05", "three oh five"),
        ("at 3:00", "at three o'clock"),
        ("3:30pm", "three thirty p m"),
        ("see you at 9am", "see you at nine a m"),
        # ordinals, dates
        ("1st", "first"),
        ("2nd place", "second place"),
        ("the 23rd", "the twenty third"),
        ("May 1st", "May first"),
        ("2024-05-01", "May first twenty twenty four"),
        ("the 90s and the 1990s", "the nineties and the nineteen nineties"),
        # units
        ("10kg", "ten kilograms"),
        ("5 km", "five kilometers"),
        ("1 km", "one kilometer"),
        ("-5°C", "minus five degrees Celsius"),
        ("brb 5 min", "be right back five minutes"),
        # plain numbers
        ("I'm 25", "I'm twenty five"),
        ("1,000 viewers", "one thousand viewers"),
        ("3.14", "three point one four"),
        ("#1 fan", "number one fan"),
        ("007", "zero zero seven"),
        ("call 5551234567", "call five five five one two three four five six seven"),
        # numbers touching letters are kept apart from them
        ("1v1 me", "one v one me"),
        ("100k subs", "one hundred k subs"),
        ("v2.0", "v two point zero"),
        # left alone: a dotted run (a version, an address)
        ("1.2.3.4", "1.2.3.4"),
        # the lexicon
        ("gg wp", "good game well played"),
        ("gg 2 ez", "good game two easy"),
        ("GG", "good game"),
        ("gggggg", "good game"),
        ("lol that was close", "haha that was close"),
        ("gl hf", "good luck have fun"),
        ("GL   HF everyone", "good luck have fun everyone"),
        ("wtf", "what the heck"),
        ("idk tbh", "I don't know to be honest"),
        # Chinese number slang is a number in English lines
        ("666", "six hundred and sixty six"),
        ("88", "eighty eight"),
    ],
)
def test_english_lines(text: str, spoken: str) -> None:
    assert say(text, "en") == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("第2名", "第二名"),
        ("50%", "百分之五十"),
        ("3:30", "三点三十分"),
        ("3:05", "三点零五分"),
        ("2:00", "两点"),
        ("3:30pm", "下午三点三十分"),
        ("30元", "三十元"),
        ("¥30", "三十元"),
        ("价格是$5", "价格是五美元"),
        ("$1.5m", "一百五十万美元"),
        ("2024年5月1日", "二零二四年五月一日"),
        ("2024-05-01", "二零二四年五月一日"),
        ("我25岁了", "我二十五岁了"),
        ("2个人", "两个人"),
        ("2点半", "两点半"),
        ("2点5", "二点五"),
        ("3.14", "三点一四"),
        ("1,000人", "一千人"),
        ("100万粉丝", "一百万粉丝"),
        ("10kg", "十公斤"),
        ("温度-5℃", "温度负五摄氏度"),
        ("1st", "第一"),
        ("qq号1234567890", "qq号一二三四五六七八九零"),
        # the lexicon: number slang where it is not a number
        ("666", "六六六"),
        ("主播666", "主播六六六"),
        ("6666666", "六六六"),
        ("2333", "哈哈哈"),
        ("23333333", "哈哈哈"),
        ("拜拜88", "拜拜拜拜"),
        ("555", "呜呜呜"),
        # … and a number where it is one
        ("88个", "八十八个"),
        ("第666名", "第六百六十六名"),
        ("555元", "五百五十五元"),
        ("$88", "八十八美元"),
        ("666%", "百分之六百六十六"),
        ("6.666", "六点六六六"),
        ("2333人", "二千三百三十三人"),
        # pinyin initials, any case, next to Chinese
        ("awsl", "啊我死了"),
        ("主播yyds", "主播永远的神"),
        ("AWSL!!", "啊我死了!!"),
        ("xswl hhhh", "笑死我了 哈哈哈"),
        ("u1s1 这个好", "有一说一 这个好"),
        # English shorthand is said as letters in Chinese chat
        ("gg", "gg"),
        ("lol", "lol"),
        ("gg 2 ez", "gg 二 ez"),
    ],
)
def test_chinese_lines(text: str, spoken: str) -> None:
    assert say(text, "zh") == spoken


@pytest.mark.parametrize(
    ("language", "text", "spoken"),
    [
        # a number next to Chinese characters is read in Chinese, in any line
        ("zh", "今天第2名 gg", "今天第二名 gg"),
        ("en", "今天第2名 gg", "今天第二名 good game"),
        ("en", "I ate 2个 apples", "I ate 两个 apples"),
        ("en", "我 25 岁, I'm 25", "我 二十五 岁, I'm twenty five"),
        ("zh", "主播 gg, 3:30 见", "主播 gg, 三点三十分 见"),
        # any other language is read as English
        ("ja", "gg $5", "good game five dollars"),
        ("", "gg $5", "good game five dollars"),
    ],
)
def test_mixed_lines(language: str, text: str, spoken: str) -> None:
    assert say(text, language) == spoken


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize(
    "text",
    [
        "hello there, how are you?",
        "eggs and lollipop and ggwp",
        "eggs? no: egg, nbc, xsl, awsome",
        "主播好厉害啊！！",
        "哈哈哈哈 笑死我了",
        "  spaces   kept\tas they are  ",
        "a.b.c 1.2.3",
        "$ and % and : alone",
        "",
    ],
)
def test_lines_with_nothing_to_change_come_back_unchanged(language: str, text: str) -> None:
    assert say(text, language) == text


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("eggs", "eggs"),
        ("lollipop", "lollipop"),
        ("ggwp", "ggwp"),
        ("5gg", "five gg"),
        ("gg's", "good game's"),
        ("(gg)", "(good game)"),
        ("glhf, gl", "good luck have fun, good luck"),
    ],
)
def test_lexicon_keys_match_whole_words_only(text: str, spoken: str) -> None:
    assert say(text, "en") == spoken


def test_lexicon_and_numbers_are_separate_passes() -> None:
    assert SHIPPED.lexicon("gg 5", "en") == "good game 5"
    assert SHIPPED.normalise("gg 5", "en") == "gg five"
    assert SHIPPED.lexicon("666", "zh") == "六六六"
    assert SHIPPED.normalise("666", "zh") == "六百六十六"


def test_an_empty_lexicon_reads_numbers_only() -> None:
    spoken = SpeechText()
    assert spoken.speakable("gg 666 $5", "en") == "gg six hundred and sixty six five dollars"
    assert spoken.speakable("awsl 666", "zh") == "awsl 六百六十六"


def test_custom_keys_any_case_with_chinese_and_digit_keys() -> None:
    spoken = SpeechText({"zh": {"主播": "播主", "520": "我爱你", "OK": "好的"}, "en": {"W": "win"}})
    assert spoken.lexicon("主播主播好", "zh") == "播主播主好"  # Chinese keys: anywhere
    assert spoken.lexicon("520!", "zh") == "我爱你!"
    assert spoken.lexicon("520人", "zh") == "520人"
    assert spoken.lexicon("ok OK Ok", "zh") == "好的 好的 好的"
    assert spoken.lexicon("W in chat, what a w", "en") == "win in chat, what a win"


def test_user_entries_merge_over_the_shipped_ones() -> None:
    config = parse_config(
        "policy:\n"
        "  lexicon:\n"
        "    en: {GG: get good, lol: lol, brb: '', pog: poggers}\n"
        "    zh: {520: 我爱你, 88: 88}\n",
        environ={},
    )
    spoken = SpeechText(config.policy.lexicon)
    assert spoken.speakable("gg", "en") == "get good"  # overridden, whatever the case
    assert spoken.speakable("lol", "en") == "lol"  # mapped to itself: as written
    assert spoken.speakable("ok brb 5 min", "en") == "ok five minutes"  # "": not read
    assert spoken.speakable("pog idk", "en") == "poggers I don't know"  # added; shipped kept
    assert spoken.speakable("520 666", "zh") == "我爱你 六六六"  # an unquoted number key
    assert spoken.speakable("88", "zh") == "八十八"  # as written: a number
    assert config.policy.lexicon["en"]["gg"] == "get good"
    assert "GG" not in config.policy.lexicon["en"]


@pytest.mark.parametrize(
    ("yaml_text", "error"),
    [
        ("lexicon: {en: {'  ': x}}", "policy.lexicon.en: keys must not be empty"),
        (
            "lexicon: {fr: {bonjour: hello}}",
            "policy.lexicon.fr.[key]: must be one of 'en' or 'zh', got 'fr'",
        ),
        ("lexicon: {en: [gg]}", "policy.lexicon.en: must be a mapping of keys, got ['gg']"),
        (
            "lexicon: {en: {gg: [good, game]}}",
            "policy.lexicon.en.gg: must be text, got ['good', 'game']",
        ),
    ],
)
def test_lexicon_mistakes_are_config_errors(yaml_text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"policy:\n  {yaml_text}\n", environ={})
    assert caught.value.lines == [f"config error: {error}"]


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize(
    "text",
    [
        "9" * 5000,
        "$" * 1000,
        str(10**30),
        "1," * 2500,
        "1." * 2500,
        "1:" * 2500,
        "-1" * 2500,
        "$1" * 2500,
        "9 " * 2500,
        "6" * 5000,
        "666 " * 1250,
        "gg " * 1700,
        "2333" * 1250,
        "1st" * 1600,
        "$" + "9" * 5000 + ".50",
        "$" + "0" * 5000 + ".50",
        "9" * 5000 + "." + "9" * 5000,
        "9" * 4000 + ",999",
        "#" + "9" * 5000,
        "1" * 5000 + ":30",
        "$" + "9" * 5000 + "k",
    ],
)
def test_hostile_lines_cost_time_and_words_linear_in_their_length(language: str, text: str) -> None:
    started = time.perf_counter()
    spoken = say(text, language)
    assert time.perf_counter() - started < 1.0  # about 40 ms at worst alone
    assert len(spoken) <= 12 * len(text)


def test_a_long_digit_run_is_read_digit_by_digit() -> None:
    assert say("9" * 20, "en") == " ".join(["nine"] * 20)
    assert say("9" * 20, "zh") == "九" * 20
    assert say(str(10**30), "en").startswith("one zero zero")
    assert say("999,999,999,999,999", "en").startswith("nine hundred and ninety nine trillion")


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="0123456789$€¥%:.,-/#°kmsth ap gl主播第个元年", max_size=40),
    language=st.sampled_from(["en", "zh", "xx"]),
)
def test_any_line_of_numbers_and_symbols_is_read_without_error(text: str, language: str) -> None:
    assert isinstance(say(text, language), str)
