"""Which language a chat line is read in: the platform's, unless its script says.

The bot reads English and Chinese; the question per line is only which of the
two. Han characters decide it for Chinese, Latin letters for English; a line
with neither (digits, "666", punctuation, emoji) keeps the platform's default.
On chat lines this script test is as right as a statistical detector and
much cheaper (bench/language.py measures both).
"""

from __future__ import annotations

from bot.chat.textnorm import HAS_HAN
from bot.config import Language

#: Latin words that make a line English on a platform whose chat is not: one
#: word there is usually slang of that chat ("yyds", "gg" on Bilibili).
_LATIN_WORDS_FOR_EN = 2


def detect(text: str, default: Language) -> Language:
    """The line's language: Chinese if it has a Han character; else English if it
    has Latin words (two or more where the default is not English); else
    `default`. Kana or Hangul alone keep the default: the bot has no templates
    for them."""
    if HAS_HAN.search(text):
        return "zh"
    words = 0
    in_word = False
    for ch in text:
        letter = ch.isascii() and ch.isalpha()
        if letter and not in_word:
            words += 1
        in_word = letter
    if words >= (1 if default == "en" else _LATIN_WORDS_FOR_EN):
        return "en"
    return default
