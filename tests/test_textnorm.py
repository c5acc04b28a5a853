from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import textnorm


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hahahahahaha", "hahaha"),
        ("loooooool", "loool"),
        ("!!!!!!!!!", "!!!"),
        ("哈哈哈哈哈哈哈", "哈哈哈"),
        ("你好！！！！！！", "你好！！！"),
        ("lol lol lol lol", "lol lol"),
        ("LOL lol Lol lol", "LOL LOL"),
        ("1000000 dollars", "1000000 dollars"),
        ("hello", "hello"),
        ("aaa", "aaa"),
    ],
)
def test_collapse_repeats(text: str, expected: str) -> None:
    assert textnorm.collapse_repeats(text, 3, 2) == expected


def test_clean_unicode_strips_controls_and_invisibles() -> None:
    dirty = "he\u200bl\u200dlo\u202e\x00wor\u2060ld\ufeff\x07!"
    assert textnorm.normalise_whitespace(textnorm.clean_unicode(dirty)) == "hello world !"
    cleaned = textnorm.clean_unicode(dirty)
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in cleaned if c != " ")
    assert cleaned.replace(" ", "") == "helloworld!"


def test_clean_unicode_removes_zalgo_but_keeps_real_accents() -> None:
    zalgo = "h" + "\u0336\u0321\u032a\u032f\u0368\u034a\u033d" + "i" + "\u0345\u0353\u0362\u0350"
    assert textnorm.clean_unicode(zalgo) == "hi"
    # Vietnamese in NFD (two marks on one letter) is a real script, kept and composed.
    assert textnorm.clean_unicode("Vie\u0302\u0323t") == "Việt"
    # Thai vowel + tone mark above a consonant.
    assert textnorm.clean_unicode("ที่") == "ที่"


def test_clean_unicode_fullwidth_letters_to_ascii_punctuation_kept() -> None:
    assert textnorm.clean_unicode("ｈｅｌｌｏ１２３！？") == "hello123！？"


def test_mixed_scripts_untouched() -> None:
    text = "今日はgood day、你好world。한국어도 OK"
    assert textnorm.clean_unicode(text) == text
    assert textnorm.collapse_repeats(text, 3, 2) == text


def test_links() -> None:
    text = "see https://example.com/a?b=1 and www.foo.org or twitch.tv/bob but not node.js"
    assert textnorm.find_links(text)
    assert (
        textnorm.normalise_whitespace(textnorm.replace_links(text, "link"))
        == "see link and link or link but not node.js"
    )
    assert not textnorm.find_links("e.g. this is fine")


def test_strip_emoji_keeps_text_and_cjk() -> None:
    text = "gg 👍🏽 nice 👨‍👩‍👧 ❤️ 好的 🇯🇵 1️⃣"
    assert textnorm.normalise_whitespace(textnorm.strip_emoji(text)) == "gg nice 好的 1"


def test_remove_spans_uses_code_points() -> None:
    # Twitch counts emote positions in code points: an emoji before the emote
    # is one position, not two UTF-16 units or four bytes.
    text = "😀 你好 Kappa hi"
    start = text.index("Kappa")
    assert (start, start + 4) == (5, 9)
    assert textnorm.normalise_whitespace(textnorm.remove_spans(text, ((5, 9),))) == "😀 你好 hi"


def test_remove_spans_ignores_out_of_range() -> None:
    assert textnorm.remove_spans("abc", ((2, 10), (-1, 0), (2, 1))) == "abc"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("First sentence here. Second one is long", 30, "First sentence here."),
        ("one two three four five", 12, "one two"),
        ("今天天气很好。我们去公园玩吧", 10, "今天天气很好。"),
        ("我们去公园玩吧我们去公园玩吧", 5, "我们去公园"),
        ("abcdefghijklmnop", 5, "abcde"),
        ("short", 10, "short"),
        ("well, this is a rather long clause", 20, "well, this is a"),
    ],
)
def test_cap_length(text: str, limit: int, expected: str) -> None:
    assert textnorm.cap_length(text, limit) == expected


@given(st.text(), st.integers(min_value=1, max_value=60))
def test_cap_length_never_exceeds_and_is_prefix(text: str, limit: int) -> None:
    cut = textnorm.cap_length(text, limit)
    assert len(cut) <= limit
    assert cut in text


@given(st.text(max_size=300))
def test_pipeline_never_crashes_and_removes_invisibles(text: str) -> None:
    out = textnorm.normalise_whitespace(
        textnorm.collapse_repeats(textnorm.strip_emoji(textnorm.clean_unicode(text)), 3, 2)
    )
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in out)
    assert out == out.strip()


def test_printable_ascii_is_already_clean() -> None:
    # The fast path for plain chat gives what the full pass gives.
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    assert textnorm.clean_unicode(printable) == printable
    assert textnorm.clean_unicode(printable + "\u00e9") == printable + "\u00e9"
    assert textnorm.clean_unicode("tab\there") == "tab here"
