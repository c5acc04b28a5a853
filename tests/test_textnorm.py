from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.chat import textnorm


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("go to scam.com now", "go to L now"),
        ("scam.com.evil", "L .evil"),
        ("..scam.com", ".. L"),
        ("x_scam.com here", "x_ L here"),
        ("看scam.com", "看 L"),
        ("foo--bar.com", "L"),
        ("a.b.c.example.co.uk/path?q=1 ok", "L ok"),
        ("example.community", "example.community"),
        ("e.g. node.js v1.2.3", "e.g. node.js v1.2.3"),
    ],
)
def test_link_table(text: str, expected: str) -> None:
    assert textnorm.normalise_whitespace(textnorm.replace_links(text, "L")) == expected


@pytest.mark.parametrize(
    "text",
    ["a." * 250, "a." * 800, "a-" * 800, ("a.b" * 534)[:1600], "1." * 800, "a" * 1600],
)
def test_link_worst_cases_have_no_link(text: str) -> None:
    # Their speed is bench/links.py's; here only the answer.
    assert not textnorm.find_links(text)
    assert textnorm.replace_links(text, "L") == text
    assert textnorm.find_links(text + "x.com")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bad", "bad"),
        ("b\u0430d", "bad"),  # Cyrillic а
        ("\u0412\u0410\u0414", "ba\u0434"),  # Cyrillic ВАД: В, А fold; Д has no Latin twin
        ("\u0455\u0441\u0430m", "scam"),  # Cyrillic ѕ с а
        ("\u0456\u0458", "ij"),
        ("\u0391\u0392\u0395", "abe"),  # Greek capitals
        ("\U0001d41b\U0001d41a\U0001d41d", "bad"),  # math bold
        ("\U0001d4eb\U0001d4ea\U0001d4ed", "bad"),  # math bold script
        ("\uff22\uff21\uff24", "bad"),  # full-width
        ("\u24b7\u24d0\u24d3", "bad"),  # circled
        ("b\u00e1d", "bad"),
        ("ba\u0301d", "bad"),
        ("\u0299\u1d00\u1d05", "bad"),  # small capitals
        ("bad_guy", "bad guy"),
        ("Stra\u00dfe", "strasse"),
        ("\u304c\u3093", "\u304c\u3093"),  # kana keep their marks
        ("\ud55c\uad6d", "\ud55c\uad6d"),  # hangul is not split into jamo
        ("\u50bb\u74dc", "\u50bb\u74dc"),
    ],
)
def test_match_form(text: str, expected: str) -> None:
    folded, where = textnorm.match_form(text)
    assert folded == expected
    assert len(where) == len(folded)
    assert list(where) == sorted(where)
    assert all(0 <= i < len(text) for i in where)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SlurLord99", "Slur Lord 99"),
        ("xXGamerXx", "x X Gamer Xx"),
        ("HTTPServer", "HTTP Server"),
        ("slur.lord-x", "slur lord x"),
        ("小明", "小明"),
    ],
)
def test_name_words(name: str, expected: str) -> None:
    assert textnorm.name_words(name) == expected


@given(st.text(max_size=300))
def test_match_form_indices_point_into_the_text(text: str) -> None:
    folded, where = textnorm.match_form(text)
    assert len(where) == len(folded)
    assert list(where) == sorted(where)
    assert all(0 <= i < len(text) for i in where)
