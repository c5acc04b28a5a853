"""Worst-case and typical timings of the link pattern (`bot.chat.textnorm`), before and
after it was made linear, and of the whole text clean-up per message.

The earlier pattern tried a bare domain from every label of a dotted run and
walked to the run's end each time, so "a.a.a.…" cost the square of its length
on the event loop. Run: `python -m bench.links` (CPU only; prints milliseconds
per call, the best of several rounds).
"""

from __future__ import annotations

import functools
import re
import timeit
from collections.abc import Callable

from bot.chat import textnorm
from bot.chat.policy import SpeechPolicy
from bot.config import PolicyConfig

#: The pattern as it was, kept here only to measure against.
BEFORE = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|tv|gg|io|ly|be|me|co|cn|uk|de|jp|ru|"
    r"xyz|app|dev|live|info|link|site|shop)\b(?:/\S*)?",
    re.IGNORECASE,
)

#: The policy cuts hostile text to max_chars (200) x 8 before its passes run.
LINE = 1600

CASES: dict[str, str] = {
    '"a." x 250': "a." * 250,
    '"a." x 800 (1,600 chars)': "a." * (LINE // 2),
    '"a-" x 800 (1,600 chars)': "a-" * (LINE // 2),
    '"a.b" to 1,600 chars': ("a.b" * LINE)[:LINE],
    '"1." x 800 (1,600 chars)': "1." * (LINE // 2),
    "1,600 chars of words": ("the quick brown fox jumps over the lazy dog " * 40)[:LINE],
    "1,600 chars of look-alikes": ("\u0455\u0441\u0430m b\u0430d " * LINE)[:LINE],
    '"b" + "a" x 1,599': "b" + "a" * (LINE - 1),
    "typical: short chat": "lol that was so close, gg everyone",
    "typical: with a link": "check out my clip https://clips.twitch.tv/AbcDef and twitch.tv/bob",
    "typical: CJK": "主播好！今日はいい天気ですね, nice stream 한국어",
}


def best_ms(fn: Callable[[], object], rounds: int = 3) -> float:
    """The best of `rounds` timings, in ms per call (the least disturbed by other load)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(rounds, number)) / number * 1000


def main() -> None:
    policy = SpeechPolicy(
        PolicyConfig(blocked_words=["scam", "bad", "傻瓜"], blocked_action="mask")
    )
    print(f"{'input':<28}{'chars':>6}{'before ms':>12}{'after ms':>12}{'clean_text ms':>15}")
    for name, text in CASES.items():
        assert (BEFORE.search(text) is None) == (not textnorm.find_links(text)), name
        before = best_ms(functools.partial(BEFORE.sub, " link ", text))
        after = best_ms(functools.partial(textnorm.replace_links, text, "link"))
        whole = best_ms(functools.partial(policy.clean_text, text))
        print(f"{name:<28}{len(text):>6}{before:>12.3f}{after:>12.3f}{whole:>15.3f}")


if __name__ == "__main__":
    main()
