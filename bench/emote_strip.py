"""The cost of stripping third-party emote words (7TV, BetterTTV, FrankerFaceZ) per
chat message, with a channel's worth of names known: `textnorm.remove_words`
alone, and the speech policy's whole `evaluate` with the set against without it.

Goal: at most 50 µs per typical message (about ten words, one or two emotes)
with 5,000 names. Run: `python -m bench.emote_strip` (CPU only; prints
microseconds per message, the best of several rounds); `--quick` checks the
script in a moment.
"""

from __future__ import annotations

import argparse
import functools
import random
import string
import timeit
from collections.abc import Callable

from adapters.events import ChatMessage, Platform
from bot.chat import textnorm
from bot.chat.policy import PolicyState, SpeechPolicy
from bot.config import PolicyConfig

#: Names of the kind the services hand out, among the made-up ones.
REAL_NAMES = ("KEKW", "OMEGALUL", "catJAM", "Pog", "monkaS", "LULW", "EZ", ":tf:", "peepoHappy")

MESSAGES: dict[str, str] = {
    "1 emote in front": "KEKW that was so close, I thought he was done for",
    "2 emotes": "catJAM this song is a banger, what is it called? catJAM",
    "1 emote at the end": "no way he actually hit that shot from there OMEGALUL",
    "no emote": "gg everyone, see you all tomorrow at the same time",
    "emote-only": "KEKW KEKW OMEGALUL",
}


def emote_names(count: int, seed: int = 1) -> frozenset[str]:
    """`count` names, the real ones among them, the rest emote-like words."""
    rng = random.Random(seed)
    names = set(REAL_NAMES)
    while len(names) < count:
        head = rng.choice(["peepo", "monka", "pepe", "Feels", "widepeepo", "Kappa", "cat", ""])
        tail = "".join(rng.choices(string.ascii_letters, k=rng.randint(2, 8)))
        names.add(head + tail)
    return frozenset(names)


def best_us(fn: Callable[[], object], rounds: int, quick: bool) -> float:
    """The best of `rounds` timings, in µs per call (the least disturbed by other load)."""
    timer = timeit.Timer(fn)
    number = 200 if quick else timer.autorange()[0]
    return min(timer.repeat(rounds, number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=5000, help="emote names known (5000)")
    parser.add_argument("--quick", action="store_true", help="few rounds: checks the script")
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    names = emote_names(args.names)
    policy = SpeechPolicy(PolicyConfig(cooldown_s=0))
    with_set = PolicyState(emote_words={(Platform.TWITCH, "chan"): names})
    without = PolicyState()
    print(f"{len(names):,} emote names; best of {rounds} rounds, µs per message")
    print(f"{'message':<20}{'words':>6}{'remove_words':>14}{'evaluate':>10}{'without':>9}")
    worst = 0.0
    for label, text in MESSAGES.items():
        message = ChatMessage(Platform.TWITCH, "chan", "m1", "u1", "viewer", text)
        strip = best_us(functools.partial(textnorm.remove_words, text, names), rounds, args.quick)
        full = best_us(functools.partial(policy.evaluate, message, with_set), rounds, args.quick)
        plain = best_us(functools.partial(policy.evaluate, message, without), rounds, args.quick)
        worst = max(worst, strip)
        words = len(text.split())
        print(f"{label:<20}{words:>6}{strip:>14.2f}{full:>10.2f}{plain:>9.2f}")
    print(f"worst remove_words: {worst:.2f} µs per message (goal: at most 50)")


if __name__ == "__main__":
    main()
