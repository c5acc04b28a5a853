"""What reading chat as speech costs (`bot.chat.spoken`): per message, for typical
English and Chinese lines and the hostile worst cases, plus the import time and
installed size of the number libraries (num2words, cn2an).

"cold" times lines whose numbers were not seen before (the number words are
cached), "warm" the same line again. With WeTextProcessing's runtime importable
(`PYTHONPATH=DIR` where `pip install --target DIR wetext` put it), the same lines
are timed through it too, the alternative that was measured and not taken.

Run: `python -m bench.speech_text` (CPU only; `--quick` for one short round).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
import timeit
from collections.abc import Callable, Iterator
from importlib import metadata

from bot.chat.spoken import SpeechText
from bot.config import PolicyConfig

#: The policy cuts hostile text to max_chars (200) x 8 before its passes run.
LINE = 1600

TYPICAL: dict[str, tuple[str, str]] = {
    "en: chat, no numbers": ("en", "lol that was so close, gg everyone"),
    "en: plain sentence": ("en", "hello there how are you doing today"),
    "en: money and count": ("en", "I have {n} cats and ${n}.50"),
    "en: time and date": ("en", "it's 3:{m:02d} pm on May {d}st"),
    "zh: chat, no numbers": ("zh", "主播好厉害啊 awsl 666"),
    "zh: ordinal, mixed": ("zh", "今天第{n}名 gg"),
    "zh: age and money": ("zh", "我{n}岁了，花了{n}元"),
    "zh: percent and time": ("zh", "涨了{n}%，{d}:{m:02d}见"),
}

HOSTILE: dict[str, str] = {
    '"9" x 1,600': "9" * LINE,
    '"1," x 800': "1," * (LINE // 2),
    '"9 " x 800 (one number 800 times)': "9 " * (LINE // 2),
    "800 different numbers": " ".join(str(i) for i in range(1000, 1000 + LINE // 5))[:LINE],
    '"$1" x 800': "$1" * (LINE // 2),
    '"gg " x 533': ("gg " * LINE)[:LINE],
}

#: The libraries the module pulls in, with their dependencies.
DISTRIBUTIONS = ("num2words", "docopt", "cn2an", "proces")
WETEXT_DISTRIBUTIONS = (
    "wetext",
    "kaldifst",
    "contractions",
    "textsearch",
    "anyascii",
    "pyahocorasick",
)


def best_us(fn: Callable[[], object], rounds: int) -> float:
    """The best of `rounds` timings, in µs per call (the least disturbed by other load);
    one round of a few calls is a smoke test, not a figure."""
    timer = timeit.Timer(fn)
    number = timer.autorange()[0] if rounds > 1 else 3
    return min(timer.repeat(rounds, number)) / number * 1e6


def cold_us(speak: Callable[[str, str], str], language: str, template: str, count: int) -> float:
    """Mean µs per call over `count` lines whose numbers were not read before."""
    lines = variants(template)
    batch = [next(lines) for _ in range(count)]
    timer = timeit.Timer(lambda: [speak(line, language) for line in batch])
    return timer.timeit(1) / count * 1e6


def variants(template: str) -> Iterator[str]:
    """The line with a different number each time (so no cached number words)."""
    i = 0
    while True:
        i += 1
        yield template.format(n=1000 + i, m=i % 60, d=1 + i % 28)


def installed_kb(names: tuple[str, ...]) -> float | None:
    total = 0
    for name in names:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            return None
        total += sum(f.size or 0 for f in files)
    return total / 1024


def import_ms(module: str) -> float:
    """The module's import time in a fresh interpreter (the best of three)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    ]
    return min(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    args = parser.parse_args()
    rounds, cold_count = (1, 20) if args.quick else (5, 2000)

    for names in (DISTRIBUTIONS, WETEXT_DISTRIBUTIONS):
        size = installed_kb(names)
        shown = f"{size / 1024:.1f} MB" if size is not None else "not installed"
        print(f"installed: {' + '.join(names)}: {shown}")
    if not args.quick:
        for module in ("num2words", "cn2an", "num2words, cn2an"):
            print(f"import {module}: {import_ms(module):.0f} ms")

    spoken = SpeechText(PolicyConfig().lexicon)
    wetext = _wetext()
    header = f"{'line':<36}{'warm µs':>9}{'cold µs':>9}"
    print("\n" + header + (f"{'wetext µs':>11}" if wetext else ""))
    for name, (language, template) in TYPICAL.items():
        line = next(variants(template))
        warm = best_us(functools.partial(spoken.speakable, line, language), rounds)
        cold = cold_us(spoken.speakable, language, template, cold_count)
        row = f"{name:<36}{warm:>9.1f}{cold:>9.1f}"
        if wetext:
            row += f"{best_us(functools.partial(wetext[language], line), rounds):>11.0f}"
        print(row)

    print(f"\n{'hostile (1,600 chars)':<36}{'en ms':>9}{'zh ms':>9}")
    for name, text in HOSTILE.items():
        en, zh = (
            best_us(functools.partial(spoken.speakable, text, lang), rounds) / 1000
            for lang in ("en", "zh")
        )
        print(f"{name:<36}{en:>9.2f}{zh:>9.2f}")


def _wetext() -> dict[str, Callable[[str], object]] | None:
    """WeTextProcessing's normalisers per language, where it is importable."""
    if importlib.util.find_spec("wetext") is None:
        return None
    import wetext  # type: ignore[import-not-found]  # measured only, not a dependency

    en = wetext.Normalizer(lang="en", operator="tn")
    zh = wetext.Normalizer(lang="zh", operator="tn")
    return {"en": en.normalize, "zh": zh.normalize}


if __name__ == "__main__":
    main()
