"""A busy chat against the real bot: how long from a message to its sound, and what
became of every message, with pacing off and on.

The real router, policy, control, queue and speaker run with the shipped
defaults; only the engine and the audio device are simulated: a line's audio
lasts its length over a fixed speaking rate (`SPEAKING_CHARS_PER_S`, divided
by the pace's speed), synthesis takes a GPU's time, and the player keeps the
real one's buffer. The CPU engine is not real-time on a small machine, so it
cannot stand in. Everything runs on a virtual clock (`VirtualClockLoop`), so
minutes of chat take a second or two. Chat is a seeded mix of many viewers,
subscribers, first-time chatters, a few moderators, bits and subs, commands,
links and CJK lines, arriving at 1x, 3x and 10x the rate the bot can say it.

Run: `python -m bench.pacing` (`--quick` for one short run of each; `--ways`
also measures each pacing measure on its own at 3x).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import selectors
import tempfile
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from adapters.events import ChatMessage, EventKind, Paid, PaidKind, Platform, Role
from bot.audio.player import BUFFER_SECONDS, Player
from bot.audio.speaker import Speaker
from bot.chat import outcomes
from bot.chat.pacing import speech_units
from bot.chat.policy import PRIVILEGED_ROLES, PolicyState, SpeakableItem, SpeechPolicy
from bot.chat.queue import SpeechQueue
from bot.chat.router import Router
from bot.config import AudioConfig, Config
from bot.control import Control
from engine.audio import SAMPLE_RATE
from engine.synth import Engine
from engine.voices import VoiceLibrary

#: The simulated voice's speaking rate (characters a second; CJK counts three).
SPEAKING_CHARS_PER_S = 14.0
#: A GPU's time to a line's first audio, and its real-time factor after that.
FIRST_AUDIO_S = 0.03
REAL_TIME_FACTOR = 0.005
#: The audio device's latency, added to the first sample of each line.
OUTPUT_LATENCY_S = 0.05

RATES = (1.0, 3.0, 10.0)

#: Every measure of `queue.pacing` off but the switch: each way is measured
#: from here on its own.
NEUTRAL: dict[str, Any] = {
    "enabled": True,
    "max_speed": 1.0,
    "announce_when_busy": True,
    "busy_max_chars": 5000,
    "stale_after_s": 0,
    "prefer_recent": False,
}
WAYS: dict[str, dict[str, Any]] = {
    "speed up to 1.3x": {**NEUTRAL, "max_speed": 1.3},
    "no announcement when busy": {**NEUTRAL, "announce_when_busy": False},
    "100 chars when busy": {**NEUTRAL, "busy_max_chars": 100},
    "newest first when busy": {**NEUTRAL, "prefer_recent": True},
    "stale after 15 s": {**NEUTRAL, "stale_after_s": 15},
}


class _VirtualSelector(selectors.BaseSelector):
    """Nothing is ever ready: waiting `timeout` seconds moves the loop's clock on
    by that much instead. Nothing may wait on a thread or a socket: a wait
    without a timeout would never end, so it raises."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("the simulation waits on nothing: it would never end")
        self._loop.now += max(0.0, timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock that jumps to the next timer when idle."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self.now


class SimulatedEngine(Engine):
    """Audio as long as the line takes to say at `SPEAKING_CHARS_PER_S` and the
    request's speed, after a GPU's synthesis time."""

    def __init__(self, voices: VoiceLibrary) -> None:
        # Nothing of the real engine (device, model) is started.
        self.voices = voices

    async def stream(
        self,
        text: str,
        voice: str,
        seed: int | None = None,
        *,
        preview: bool = False,
        speed: float = 1.0,
        steps: int | None = None,
    ) -> AsyncGenerator[np.ndarray, None]:
        audio_s = speech_units(text) / SPEAKING_CHARS_PER_S / speed
        await asyncio.sleep(FIRST_AUDIO_S + REAL_TIME_FACTOR * audio_s)
        yield np.zeros(int(audio_s * SAMPLE_RATE), dtype=np.float32)


@dataclass
class _Utterance:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    first_sample: float | None = None
    ends_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


class SimulatedPlayer(Player):
    """Plays nothing, in the time the real player would take: utterances back to
    back, with the real one's buffer (a write waits while it is full)."""

    def __init__(self) -> None:
        super().__init__(AudioConfig())
        self._sim: dict[int, _Utterance] = {}
        self._sim_ids = itertools.count(1)
        self._ends_at = 0.0  # when all audio written so far has played

    def begin(self) -> int:
        utt = next(self._sim_ids)
        self._sim[utt] = _Utterance()
        return utt

    async def write(self, utt: int, chunk: np.ndarray, last: bool = False) -> None:
        state = self._sim.get(utt)
        if state is None or state.done.is_set():
            return
        loop = asyncio.get_running_loop()
        full_for = self._ends_at - loop.time() - BUFFER_SECONDS
        if full_for > 0:
            await asyncio.sleep(full_for)
        start = max(loop.time(), self._ends_at)
        if state.first_sample is None:
            state.first_sample = start + OUTPUT_LATENCY_S
        self._ends_at = state.ends_at = start + len(chunk) / SAMPLE_RATE

    def finish(self, utt: int) -> None:
        state = self._sim.get(utt)
        if state is None:
            return
        loop = asyncio.get_running_loop()
        state.timer = loop.call_at(max(loop.time(), state.ends_at), state.done.set)

    def cut(self, utt: int) -> None:
        state = self._sim.get(utt)
        if state is not None and not state.done.is_set():
            if state.timer is not None:
                state.timer.cancel()
            self._ends_at = min(self._ends_at, asyncio.get_running_loop().time())
            state.done.set()

    async def wait_done(self, utt: int) -> None:
        state = self._sim.get(utt)
        if state is not None:
            await state.done.wait()

    def first_sample_time(self, utt: int) -> float | None:
        state = self._sim.get(utt)
        return None if state is None else state.first_sample

    def forget(self, utt: int) -> None:
        self._sim.pop(utt, None)

    def set_paused(self, paused: bool) -> None:
        pass

    def set_volume(self, volume: float) -> None:
        pass


PHRASES = (
    "lol",
    "gg",
    "nice play",
    "that was close",
    "what a shot",
    "chat is wild today",
    "let's go",
    "how long have you been streaming",
    "what game is next",
    "can you say hi to my friend",
    "this boss is so hard",
    "you got this",
    "no way that actually worked",
    "clutch",
    "I just got here, what did I miss",
    "the music is great",
    "what keyboard is that",
)
CJK = ("主播好厉害", "这个太强了", "哈哈哈笑死", "今天玩什么游戏", "晚上好大家", "加油加油")


class ChatMix:
    """A seeded busy Twitch chat: who sends what, and how often."""

    def __init__(self, seed: int, viewers: int = 400, moderators: int = 3) -> None:
        self.rng = random.Random(seed)
        self.viewers = [f"viewer{n}" for n in range(viewers)]
        # A few viewers write a lot, most a little.
        self.weights = [1 / (n + 1) ** 0.8 for n in range(viewers)]
        self.moderators = [f"mod{n}" for n in range(moderators)]
        self.ids = itertools.count(1)

    def text(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return "".join(rng.choices(CJK, k=rng.randint(1, 3)))
        phrases = rng.choice((1, 1, 2, rng.randint(3, 6)))
        if rng.random() < 0.08:
            phrases = rng.randint(8, 20)  # a wall of text, up to the length cap
        line = " ".join(rng.choices(PHRASES, k=phrases))
        if rng.random() < 0.05:
            line += " https://clips.twitch.tv/SomeClip"
        return line

    def message(self, at: float) -> ChatMessage:
        rng = self.rng
        n = next(self.ids)
        roll = rng.random()
        fields: dict[str, Any] = {}
        if roll < 0.02:
            user = rng.choice(self.moderators)
            fields["roles"] = frozenset({Role.MODERATOR})
        else:
            user = rng.choices(self.viewers, self.weights)[0]
        text = self.text()
        if 0.02 <= roll < 0.04:
            bits = rng.choice((100, 100, 500, 1000))
            fields["paid"] = Paid(bits, "BITS", PaidKind.BITS)
            text = f"Cheer{bits} {text}"
        elif 0.04 <= roll < 0.05:
            fields["event"] = EventKind.SUB
            fields["paid"] = Paid(1, "SUB_T1", PaidKind.SUB)
        elif 0.05 <= roll < 0.10:
            text = rng.choice(("!discord", "!uptime", "!so someone"))
        elif 0.10 <= roll < 0.13:
            fields["first_time"] = True
        elif 0.13 <= roll < 0.33:
            fields["roles"] = frozenset({Role.SUBSCRIBER})
        return ChatMessage(
            platform=Platform.TWITCH,
            channel="streamer",
            message_id=f"m{n}",
            user_id=f"id-{user}",
            user_name=user,
            text=text,
            received=at,
            **fields,
        )


def line_seconds(config: Config, seed: int, sample: int = 3000) -> float:
    """The mean time to say one line of this chat, announced, at the normal speed:
    the bot says 1 / this many lines a second."""
    policy, state, mix = SpeechPolicy(config.policy), PolicyState(), ChatMix(seed)
    lengths = []
    for n in range(sample):
        item = policy.evaluate(mix.message(n * 100.0), state)
        if isinstance(item, SpeakableItem):
            lengths.append(speech_units(item.spoken))
    return float(np.mean(lengths)) / SPEAKING_CHARS_PER_S


def must_not_drop(message: ChatMessage) -> bool:
    return message.paid is not None or bool(message.roles & PRIVILEGED_ROLES)


@dataclass
class Result:
    sent: int = 0
    ends: Counter[str] = field(default_factory=Counter)
    delays: list[float] = field(default_factory=list)
    kept_delays: list[float] = field(default_factory=list)
    kept_sent: int = 0
    kept_dropped: int = 0
    speeds: list[float] = field(default_factory=list)
    stale: int = 0
    once_each: bool = False

    def share(self, event: str) -> float:
        return 100 * self.ends[event] / max(1, self.sent)

    def add(self, other: Result) -> None:
        """Pool another run's figures into these."""
        self.sent += other.sent
        self.ends.update(other.ends)
        self.delays += other.delays
        self.kept_delays += other.kept_delays
        self.kept_sent += other.kept_sent
        self.kept_dropped += other.kept_dropped
        self.speeds += other.speeds
        self.stale += other.stale
        self.once_each = self.once_each and other.once_each


async def _simulate(pacing: Mapping[str, Any], rate: float, seconds: float, seed: int) -> Result:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.model_validate(
            {
                "commands": {"state_file": str(Path(tmp) / "state.json")},
                "queue": {"pacing": dict(pacing)},
            }
        )
        queue = SpeechQueue(config.queue, clock=loop.time)
        voices = VoiceLibrary(Path(tmp), builtins=False)
        control = Control(config, queue, voices.names)
        router = Router(
            SpeechPolicy(config.policy), control, queue, config.commands, clock=loop.time
        )
        speaker = Speaker(queue, SimulatedEngine(voices), SimulatedPlayer(), control)
        result = Result()
        messages: dict[str, ChatMessage] = {}

        def listen(event: str, message: ChatMessage, fields: dict[str, Any]) -> None:
            if message.message_id not in messages:
                return
            result.ends[event] += 1
            ended[message.message_id] += 1
            if chat_over and len(ended) == len(messages):
                all_ended.set()
            kept = must_not_drop(message)
            if event == outcomes.SPOKEN:
                delay = fields["ttfa_ms"] / 1000
                result.delays.append(delay)
                result.speeds.append(fields.get("speed", 1.0))
                if kept:
                    result.kept_delays.append(delay)
            elif kept and event in (outcomes.EXPIRED, outcomes.OVERFLOW):
                result.kept_dropped += 1
            if event == outcomes.EXPIRED and fields.get("reason") == "stale":
                result.stale += 1

        ended: Counter[str] = Counter()
        chat_over, all_ended = False, asyncio.Event()
        mix = ChatMix(seed)
        outcomes.add_listener(listen)
        speaking = asyncio.create_task(speaker.run())
        try:
            at = 0.0
            while True:
                at += mix.rng.expovariate(rate)
                if at > seconds:
                    break
                await asyncio.sleep(at - loop.time())
                message = mix.message(loop.time())
                messages[message.message_id] = message
                result.kept_sent += must_not_drop(message)
                router.handle(message)
            # Chat stops; every message still waiting ends one way or another.
            chat_over = True
            if len(ended) < len(messages):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_ended.wait(), config.queue.ttl_s + 120)
        finally:
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)
            outcomes.remove_listener(listen)
        result.sent = len(messages)
        result.once_each = len(ended) == len(messages) and set(ended.values()) == {1}
        return result


def simulate(pacing: Mapping[str, Any], rate: float, seconds: float, seed: int = 1) -> Result:
    """`seconds` of chat at `rate` messages a second, on a virtual clock."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(_simulate(pacing, rate, seconds, seed))


def measure(pacing: Mapping[str, Any], times: float, seconds: float, seeds: int) -> Result:
    """Chat at `times` the rate the bot speaks, one run per seed, pooled."""
    line_s = line_seconds(Config(), 1)
    pooled = Result(once_each=True)
    for seed in range(1, seeds + 1):
        pooled.add(simulate(pacing, times / line_s, seconds, seed))
    return pooled


def quiet_logs() -> None:
    """Outcome events reach the benchmark through their listeners, not the log."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


HEADER = (
    f"{'rate':>5} {'pacing':<26} {'sent':>5} {'spoken':>7} {'expired':>8} {'stale':>6}"
    f" {'overflow':>9} {'filtered':>9} {'p50 s':>6} {'p95 s':>6} {'max s':>6}"
    f" {'speed':>6} {'paid+mods':>9} {'dropped':>8} {'their max s':>11} {'1 end each':>10}"
)


def row(rate: float, name: str, r: Result) -> str:
    speed = float(np.mean(r.speeds)) if r.speeds else 1.0
    return (
        f"{rate:>4g}x {name:<26} {r.sent:>5} {r.share(outcomes.SPOKEN):>6.1f}%"
        f" {r.share(outcomes.EXPIRED):>7.1f}% {100 * r.stale / max(1, r.sent):>5.1f}%"
        f" {r.share(outcomes.OVERFLOW):>8.1f}% {r.share(outcomes.FILTERED):>8.1f}%"
        f" {percentile(r.delays, 50):>6.1f} {percentile(r.delays, 95):>6.1f}"
        f" {max(r.delays, default=float('nan')):>6.1f} {speed:>6.2f}"
        f" {r.kept_sent:>9} {r.kept_dropped:>8} {max(r.kept_delays, default=0.0):>11.1f}"
        f" {'yes' if r.once_each else 'NO':>10}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="chat per run (virtual)")
    parser.add_argument("--seeds", type=int, default=3, help="runs pooled per row")
    parser.add_argument("--quick", action="store_true", help="one minute of chat at 3x")
    parser.add_argument("--ways", action="store_true", help="each measure alone, at 3x")
    args = parser.parse_args(argv)
    quiet_logs()
    minutes, seeds = (1.0, 1) if args.quick else (args.minutes, args.seeds)
    rates = (3.0,) if args.quick else RATES
    line_s = line_seconds(Config(), 1)
    print(
        f"speaking rate {SPEAKING_CHARS_PER_S:g} chars/s: a line takes {line_s:.2f} s on"
        f" average, the bot says {1 / line_s:.3f} lines/s; {minutes:g} min of chat per run,"
        f" {seeds} run(s) pooled per row; delays are chat to first sound of spoken lines"
    )
    print(HEADER)
    configs: dict[str, dict[str, Any]] = {"off (before)": {"enabled": False}, "on (defaults)": {}}
    for rate in rates:
        for name, pacing in configs.items():
            print(row(rate, name, measure(pacing, rate, minutes * 60, seeds)), flush=True)
    if args.ways:
        for name, pacing in WAYS.items():
            print(row(3.0, name, measure(pacing, 3.0, minutes * 60, seeds)), flush=True)


if __name__ == "__main__":
    main()
