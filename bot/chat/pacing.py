"""How a busy chat stays close to live: the pace of the next line, decided from
what waits.

Speech plays in real time, so when chat comes faster than it can be said the
wait grows without bound unless something gives. The pacer estimates the
seconds of speech waiting (`Backlog`) from the lines' lengths and a speaking
rate it measures from the lines spoken, and answers with a `Pace`: read faster
(up to `max_speed`) as the backlog passes `target_delay_s`; once busy (the
backlog at `busy_backlog_s`, until it falls below half of that), leave out the
"{user} says" announcement, cut free chat lines shorter, and read free chat
newest first within a priority level (the queue keeps each viewer's own lines
in order). Separately, a free chat line older than
`stale_after_s` is too old to read. "Free chat" is a plain chat line from a
viewer: never a broadcaster's or moderator's line, a paid one, a sub, gift or
other event, or a channel-point redemption; those are never dropped here.

Pure but for the measured rate and the busy flag; the queue and the speaker
call it, and do the logging.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters.events import EventKind, Platform
from bot.chat import textnorm
from bot.chat.policy import PRIVILEGED_ROLES, SpeakableItem
from bot.chat.users import UserKey
from bot.config import PacingConfig

#: Weight of one new measurement in the speaking-rate estimate.
RATE_SMOOTHING = 0.2
#: Lines shorter than this (seconds of audio, characters) say little about the
#: rate: the engine gives very short lines a floor of time.
MIN_OBSERVED_S = 1.0
MIN_OBSERVED_UNITS = 12
#: Bounds of a measured rate (characters a second), whatever a line measured.
RATE_BOUNDS = (3.0, 60.0)


@dataclass(frozen=True, slots=True)
class Backlog:
    #: Estimated seconds of speech waiting, at the normal speed.
    seconds: float
    items: int


@dataclass(frozen=True, slots=True)
class Pace:
    """How the next line is said."""

    #: Multiplies the voice's own speed.
    speed: float = 1.0
    busy: bool = False
    #: Whether a chat line keeps its "{user} says" announcement.
    announce: bool = True
    #: A free chat line is cut to this many characters (None: as the policy left it).
    max_chars: int | None = None
    #: Within a priority level, the newest free chat line first.
    prefer_recent: bool = False


CALM = Pace()


def speech_units(text: str) -> int:
    """A line's length as the engine times it: UTF-8 bytes, so a CJK character
    counts three (and takes about three times as long to say)."""
    return len(text.encode("utf-8"))


def is_free_chat(item: SpeakableItem) -> bool:
    """A plain viewer's chat line: the only kind pacing may cut or drop."""
    message = item.message
    return (
        message.event is EventKind.CHAT
        and message.paid is None
        and not message.reward_id
        and not message.roles & PRIVILEGED_ROLES
        and message.platform is not Platform.LOCAL
    )


class Pacer:
    def __init__(self, config: PacingConfig) -> None:
        self.config = config
        #: Characters (speech units) a second at the normal speed, as measured.
        self.chars_per_s = config.chars_per_s
        self.busy = False

    def speech_s(self, text: str) -> float:
        """Estimated seconds to say `text` at the normal speed."""
        return speech_units(text) / self.chars_per_s

    def backlog(self, items: Iterable[SpeakableItem]) -> Backlog:
        seconds, count = 0.0, 0
        for item in items:
            seconds += self.speech_s(item.spoken)
            count += 1
        return Backlog(seconds, count)

    def decide(self, backlog: Backlog, *, settle: bool = True) -> Pace:
        """The pace for the next line, given what waits behind it. With `settle`
        false it is only a look (the panel's queue order): whether chat is busy
        stays as it was."""
        cfg = self.config
        if not cfg.enabled:
            return CALM
        busy = self.busy
        if backlog.seconds >= cfg.busy_backlog_s:
            busy = True
        elif backlog.seconds < cfg.busy_backlog_s / 2:
            busy = False
        if settle:
            self.busy = busy
        speed = round(min(cfg.max_speed, max(1.0, backlog.seconds / cfg.target_delay_s)), 2)
        if not busy:
            return Pace(speed=speed)
        return Pace(
            speed=speed,
            busy=True,
            announce=cfg.announce_when_busy,
            max_chars=cfg.busy_max_chars,
            prefer_recent=cfg.prefer_recent,
        )

    def is_stale(self, item: SpeakableItem, age_s: float) -> bool:
        """Whether a line that waited `age_s` is too old to read."""
        cfg = self.config
        return (
            cfg.enabled
            and cfg.stale_after_s > 0
            and age_s > cfg.stale_after_s
            and is_free_chat(item)
        )

    def observe(self, text: str, audio_s: float, speed: float) -> None:
        """A line said in full, in `audio_s` at `speed`: refine the speaking rate."""
        units = speech_units(text)
        if audio_s < MIN_OBSERVED_S or units < MIN_OBSERVED_UNITS or speed <= 0:
            return
        low, high = RATE_BOUNDS
        measured = min(high, max(low, units / (audio_s * speed)))
        self.chars_per_s += RATE_SMOOTHING * (measured - self.chars_per_s)


def line_for(item: SpeakableItem, previous_user: UserKey | None, pace: Pace) -> str:
    """What to say for `item` at `pace`: without its announcement when the pace
    says so (events and paid lines have no plain form: their template carries
    the meaning), and a free chat line's text cut to the pace's length."""
    line = item.speech(previous_user) if pace.announce else item.spoken_plain
    plain = item.spoken_plain
    if pace.max_chars is None or len(plain) <= pace.max_chars or not is_free_chat(item):
        return line
    short = textnorm.cap_length(plain, pace.max_chars)
    if line == plain:
        return short
    if line.endswith(plain):  # "{user} says {text}": the announcement kept
        return line[: len(line) - len(plain)] + short
    return line
