"""Is a chat message speakable, how is it read, and how urgent is it.

`SpeechPolicy.evaluate` is pure but for one record: the same message, config
and state give the same answer, and it changes nothing except noting who sent
it (`PolicyState.saw`, so commands can name them). The caller records what it
accepted.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from adapters.events import ChatMessage, EventKind, Platform, Role
from adapters.twitch.config import RewardRule
from bot.chat import textnorm
from bot.chat.language import detect
from bot.chat.mod_changes import ByName
from bot.chat.rewards import RewardsSeen
from bot.chat.spoken import SpeechText
from bot.chat.users import SeenUsers, UserKey, name_keys, user_handle
from bot.config import BlockedMatch, Currency, Language, PolicyConfig, ReadMode

log = structlog.get_logger()

#: Hostile input is cut to this many characters (times the length cap) before
#: the regex passes run, so a 100 KB line costs no more than a long one.
_PRE_CAP_FACTOR = 8

#: A user name is cut to this many characters before clean-up (hostile input),
#: and shown at most this long after it.
_NAME_PRE_CAP = 1000
_NAME_MAX = 64

#: How much longer than `max_chars` a line may get once its numbers and
#: shorthand are written out ("$5" → "five dollars").
_SPOKEN_GROWTH = 2
#: Longest blocked word the panel takes (the config file's are not limited).
MAX_BLOCKED_WORD_CHARS = 100

#: Endings `blocked_match: stem` also matches after a blocked word.
_STEM_ENDINGS = ("s", "es", "ed", "ing")

#: Paid amounts rank within the paid level as value / (value + this), in the
#: reference currency: monotonic, and always below the next level up.
_PAID_HALF_POINT = 10.0

PRIVILEGED_ROLES = frozenset({Role.BROADCASTER, Role.MODERATOR})
MEMBER_ROLES = frozenset({Role.SUBSCRIBER, Role.GUARD})
#: Twitch subs are counted in one currency per tier (SUB_PRIME, SUB_T1…);
#: configs from before the tiers have one currency for them all.
_SUB_CURRENCY_PREFIX = "SUB_"
_LEGACY_SUB_CURRENCY = "SUBS"
#: Events read in `paid` mode even without an amount attached.
_PAID_MODE_EVENTS = frozenset({EventKind.SUB, EventKind.GIFT, EventKind.GUARD})


@dataclass
class PolicyState:
    """What the policy reads that changes at run time (owned by `bot.control`)."""

    read_mode: ReadMode = "all"
    #: Mutes, nicknames and voices set live, by account (name: when muted).
    muted: dict[UserKey, str] = field(default_factory=dict)
    nicknames: dict[UserKey, str] = field(default_factory=dict)
    user_voices: dict[UserKey, str] = field(default_factory=dict)
    #: Last seen name of every account above.
    names: dict[UserKey, str] = field(default_factory=dict)
    #: From the config file, by name (`name_keys`): the streamer wrote names there.
    muted_names: frozenset[str] = frozenset()
    name_nicknames: dict[str, str] = field(default_factory=dict)
    #: Old name-keyed entries, bound to the first account seen with the name.
    by_name: ByName = field(default_factory=ByName)
    seen: SeenUsers = field(default_factory=SeenUsers)
    rewards: RewardsSeen = field(default_factory=RewardsSeen)
    #: Called when `saw` changes what must be saved.
    on_change: Callable[[], None] | None = None
    last_accepted: dict[tuple[Platform, str], float] = field(default_factory=dict)
    #: Third-party emote names by (platform, channel), stripped like the platform's own.
    emote_words: dict[tuple[Platform, str], frozenset[str]] = field(default_factory=dict)
    #: Size at which users outside their cooldown are forgotten (doubles when
    #: that frees little), so hours of new chatters cannot grow memory.
    prune_at: int = 10_000

    def saw(self, message: ChatMessage) -> None:
        """Remember who sent a message, so commands can resolve the name to the account."""
        self.seen.saw(message)
        key = message.user_key
        if key in self.names and self.names[key] != message.user_name:
            self.names[key] = message.user_name
            if key in self.muted:
                self.muted[key] = message.user_name
        handle = user_handle(message.user_name)
        pending = self.by_name
        if not pending or not handle:
            return
        bound = []
        if handle in pending.muted:
            del pending.muted[handle]
            self.muted[key] = message.user_name
            bound.append("muted")
        if (nick := pending.nicknames.pop(handle, None)) is not None:
            self.nicknames[key] = nick
            bound.append("nickname")
        if (voice := pending.user_voices.pop(handle, None)) is not None:
            self.user_voices[key] = voice
            bound.append("user_voice")
        if bound:
            self.names[key] = message.user_name
            log.info(
                "state.bound_by_name",
                user=message.user_name,
                platform=message.platform.value,
                user_id=message.user_id,
                entries=bound,
            )
            if self.on_change is not None:
                self.on_change()

    def record_accepted(self, item: SpeakableItem, cooldown_s: float) -> None:
        """Remember when a user was last read, for as long as the cooldown needs it."""
        if cooldown_s <= 0:
            return
        now = item.message.received
        self.last_accepted[item.message.user_key] = now
        if len(self.last_accepted) > self.prune_at:
            horizon = now - cooldown_s
            self.last_accepted = {k: t for k, t in self.last_accepted.items() if t > horizon}
            self.prune_at = max(self.prune_at, 2 * len(self.last_accepted))


@dataclass(frozen=True, slots=True)
class SpeakableItem:
    message: ChatMessage
    #: The cleaned message text alone.
    text: str
    #: The full line with the user announced, per the kind's template.
    spoken: str
    #: The line without the announcement, read when the same user spoke last.
    spoken_plain: str
    priority: float
    voice: str | None = None
    #: The user's name as the overlay and panel show it: cleaned, or the neutral
    #: `name_fallback` (a built item's own name where none is given).
    user: str = ""
    #: The language the line is read in (its templates, words and numbers).
    language: Language = "en"

    def __post_init__(self) -> None:
        if not self.user:
            object.__setattr__(self, "user", self.message.user_name)

    @property
    def key(self) -> tuple[Platform, str]:
        return (self.message.platform, self.message.message_id)

    def speech(self, previous_user: tuple[Platform, str] | None) -> str:
        """The line to say, given whose message was spoken just before."""
        if previous_user == self.message.user_key:
            return self.spoken_plain
        return self.spoken


@dataclass(frozen=True, slots=True)
class UserName:
    """A user name made safe to show (`shown`) and to read aloud (`spoken`)."""

    shown: str
    spoken: str


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


class SpeechPolicy:
    """Filters, normalises and ranks chat messages for speech."""

    def __init__(
        self,
        config: PolicyConfig,
        own_logins: Iterable[str] = (),
        rewards: Mapping[str, tuple[str, RewardRule]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._speech = SpeechText(config.lexicon)
        #: The variant said last, per (language, kind): never twice in a row.
        self._last_variant: dict[tuple[str, str], str] = {}
        #: Channel-point rewards by id: the streamer's name for each, and its rule.
        self.rewards = dict(rewards or {})
        self._ignored = {user_handle(n) for n in (*config.ignored_users, *own_logins) if n}
        self._replacements = [(r.compiled(), r.replacement) for r in config.replacements]
        self._blocked = _blocked_words_pattern(config.blocked_words, config.blocked_match)
        self._say_prefix = re.compile(re.escape(config.say_prefix) + r"(?:\s+|$)", re.IGNORECASE)

    def set_blocked_words(self, words: Sequence[str]) -> None:
        """Block these words from now on, in place of the ones before (the panel's
        live changes: `Control.block_word`); lines and names alike."""
        self._blocked = _blocked_words_pattern(list(words), self.config.blocked_match)

    def evaluate(self, message: ChatMessage, state: PolicyState) -> SpeakableItem | Drop:
        cfg = self.config
        handle = user_handle(message.user_name)
        state.saw(message)
        names = name_keys(message)
        if message.user_key in state.muted or any(n in state.muted_names for n in names):
            return Drop("muted")
        if handle in self._ignored:
            return Drop("ignored_user")
        reward: RewardRule | None = None
        if message.reward_id:  # listed even when not read: the streamer finds its id
            label, reward = self.rewards.get(message.reward_id, ("", None))
            state.rewards.saw(message, label)
        if message.emote_only and cfg.emotes == "strip":
            return Drop("emote_only")
        if message.event is not EventKind.CHAT and message.event not in cfg.speak_events:
            return Drop("event_disabled")
        if reward is not None and not reward.read:
            return Drop("reward_not_read")

        paid = message.paid
        if paid is not None and paid.amount < cfg.min_paid.get(paid.kind, 0.0):
            if cfg.below_min == "drop":
                return Drop("below_min")
            paid = None
        notable = paid is not None or message.event in _PAID_MODE_EVENTS

        text = message.text
        if cfg.emotes == "strip":
            text = textnorm.remove_spans(text, message.emotes)
            words = state.emote_words.get((message.platform, message.channel))
            if words:
                text = textnorm.remove_words(text, words)
        prefixed = self._say_prefix.match(text)
        if prefixed:
            text = text[prefixed.end() :]
        elif text.lstrip().startswith("!"):
            return Drop("command")
        if state.read_mode == "command" and not prefixed and not notable and reward is None:
            return Drop("not_command")
        if state.read_mode == "paid" and not notable:
            return Drop("not_paid")
        if state.read_mode == "reward" and not notable and reward is None:
            return Drop("not_reward")

        privileged = bool(message.roles & PRIVILEGED_ROLES)
        # Paid and redeemed lines were paid for: the cooldown is for free chat.
        if cfg.cooldown_s > 0 and not privileged and paid is None and reward is None:
            last = state.last_accepted.get(message.user_key)
            if last is not None and message.received - last < cfg.cooldown_s:
                return Drop("cooldown")

        cleaned = self.clean_text(text)
        if isinstance(cleaned, Drop):
            return cleaned
        if not cleaned and paid is None and message.event is EventKind.CHAT:
            return Drop("empty")

        language = self.language(message, cleaned)
        said = self.spoken_text(cleaned, language)
        if not said and cleaned and paid is None and message.event is EventKind.CHAT:
            return Drop("empty")  # every word was mapped to "" in the lexicon
        template_key = paid.kind.value if paid is not None else message.event.value
        template = self._variant(language, template_key)
        if reward is not None and reward.template is not None and paid is None:
            template_key, template = "reward", reward.template
        name = self.clean_name(message.user_name)
        user = self.spoken_name(message, state, name, language)
        amount = (
            self._amount_words(paid.amount, paid.currency, language) if paid is not None else ""
        )
        # Numbers are read out in the text and the amount; names are said as written.
        amount = self._speech.normalise(amount, language)
        spoken = _fill(template, user=user, amount=amount, text=said)
        if template_key == "chat":
            plain = _fill("{text}", user=user, amount=amount, text=said)
            if not cfg.announce_user:
                spoken = plain
        else:
            plain = spoken
        priority = self._priority(message, privileged, paid is not None)
        if reward is not None and reward.priority is not None:
            priority = float(reward.priority)
        voice = state.user_voices.get(message.user_key)
        if reward is not None and reward.voice is not None:
            voice = reward.voice
        return SpeakableItem(
            message=message,
            text=cleaned,
            spoken=spoken,
            spoken_plain=plain,
            priority=priority,
            voice=voice,
            user=name.shown,
            language=language,
        )

    def spoken_text(self, text: str, language: Language) -> str:
        """Cleaned text as it is said (the lexicon, then numbers). Numbers written
        out are longer than their digits: the result is cut again, so a line of
        numbers cannot turn into minutes of speech."""
        said = self._speech.speakable(text, language)
        return textnorm.cap_length(said, self.config.max_chars * _SPOKEN_GROWTH)

    def language(self, message: ChatMessage, text: str) -> Language:
        """The platform's language, unless the line's script says otherwise."""
        return detect(text, self.config.languages.get(message.platform.value, "en"))

    def _variant(self, language: Language, kind: str) -> str:
        """One of the kind's variants at random, not the one said last time."""
        variants: list[str] = getattr(self.config.templates.of(language), kind)
        last = self._last_variant.get((language, kind))
        choices = [v for v in variants if v != last] or variants
        chosen = choices[0] if len(choices) == 1 else self._rng.choice(choices)
        self._last_variant[(language, kind)] = chosen
        return chosen

    def clean_text(self, text: str) -> str | Drop:
        """The normalisation pipeline, from raw chat text to a speakable line."""
        cfg = self.config
        text = textnorm.cap_length(text, cfg.max_chars * _PRE_CAP_FACTOR)
        text = textnorm.clean_unicode(text)
        if cfg.links == "drop" and textnorm.find_links(text):
            return Drop("link")
        text = textnorm.replace_links(text, cfg.link_word if cfg.links == "replace" else "")
        if cfg.emotes == "strip":
            text = textnorm.strip_emoji(text)
        for pattern, replacement in self._replacements:
            text = pattern.sub(replacement, text)
        if self._blocked is not None:
            folded, where = textnorm.match_form(text)
            if cfg.blocked_action == "drop":
                if self._blocked.search(folded):
                    return Drop("blocked_word")
            else:
                text = _mask(text, folded, where, self._blocked, cfg.mask_word)
        text = textnorm.collapse_repeats(text, cfg.max_char_repeats, cfg.max_word_repeats)
        text = textnorm.normalise_whitespace(text)
        return textnorm.cap_length(text, cfg.max_chars)

    def spoken_name(
        self, message: ChatMessage, state: PolicyState, name: UserName, language: Language = "en"
    ) -> str:
        """A moderator's nickname for the account (or its name), else `name` cleaned;
        a name the platform masked ("x***") is said as the language's `viewer` word."""
        nick = state.nicknames.get(message.user_key) or next(
            (state.name_nicknames[n] for n in name_keys(message) if n in state.name_nicknames), None
        )
        if nick:
            return nick
        if message.name_masked:
            return self._variant(language, "viewer")
        return name.spoken

    def clean_name(self, user_name: str) -> UserName:
        """The name under the same rules as text: invisible and bidi characters and
        mark floods removed; a link or a blocked word (words run together in a
        name are split apart first) and the whole name is `name_fallback`."""
        cfg = self.config
        shown = textnorm.clean_unicode(user_name[:_NAME_PRE_CAP])
        shown = textnorm.normalise_whitespace(shown)
        if not shown or textnorm.find_links(shown) or self._has_blocked(textnorm.name_words(shown)):
            return UserName(cfg.name_fallback, cfg.name_fallback)
        spoken = shown.replace("_", " ")
        if cfg.emotes == "strip":
            spoken = textnorm.strip_emoji(spoken)
        spoken = textnorm.collapse_repeats(spoken, cfg.max_char_repeats, cfg.max_word_repeats)
        spoken = textnorm.normalise_whitespace(spoken)
        return UserName(shown[:_NAME_MAX], spoken[:_NAME_MAX] or cfg.name_fallback)

    def _has_blocked(self, text: str) -> bool:
        return self._blocked is not None and bool(
            self._blocked.search(textnorm.match_form(text)[0])
        )

    def _currency(self, code: str) -> Currency | None:
        """The configured unit; a sub tier left out of an older config falls back
        to its single `SUBS` entry, so such configs still rank subs as paid."""
        currencies = self.config.currencies
        code = code.upper()
        if code not in currencies and code.startswith(_SUB_CURRENCY_PREFIX):
            return currencies.get(_LEGACY_SUB_CURRENCY)
        return currencies.get(code)

    def _amount_words(self, amount: float, currency: str, language: Language) -> str:
        cur = self._currency(currency)
        if cur is None:
            return f"{amount:g} {currency}"
        word = cur.words.get(language, cur.word)
        # Chinese writes its own units right after the number ("30元").
        joined = language == "zh" and not word[:1].isascii()
        return f"{amount:g}{word}" if joined else f"{amount:g} {word}"

    def _priority(self, message: ChatMessage, privileged: bool, paid: bool) -> float:
        levels = self.config.priorities
        candidates = [float(levels.normal)]
        if privileged:
            candidates.append(levels.privileged)
        if paid and message.paid is not None:
            cur = self._currency(message.paid.currency)
            value = message.paid.amount * cur.value if cur else 0.0
            candidates.append(levels.paid + value / (value + _PAID_HALF_POINT))
        if message.first_time:
            candidates.append(levels.first_time)
        if message.roles & MEMBER_ROLES:
            candidates.append(levels.member)
        return max(candidates)


def _fill(template: str, *, user: str, amount: str, text: str) -> str:
    return textnorm.normalise_whitespace(template.format(user=user, amount=amount, text=text))


def _mask(text: str, folded: str, where: Sequence[int], pattern: re.Pattern[str], word: str) -> str:
    """Replace in `text` what `pattern` matched in its match form `folded`."""
    out: list[str] = []
    done = 0
    for match in pattern.finditer(folded):
        start, end = where[match.start()], where[match.end() - 1] + 1
        if match.end() == match.start() or end <= done:
            continue  # within a character already masked (one can fold to several: "㍿")
        start = max(start, done)
        out.append(text[done:start])
        out.append(f" {word} ")
        done = end
    out.append(text[done:])
    return "".join(out)


def _stretched(word: str) -> str:
    """A pattern for `word` that also matches it with letters stretched: a letter
    written three or more times counts as once ("baaaad" is "bad"), a doubled
    one as twice (so "good" is not "god", but "gooood" is). Runs are possessive:
    a long run is never re-split, so matching stays linear."""
    parts = []
    for ch, run in itertools.groupby(word):
        count = len(list(run))
        if ch.isspace():
            parts.append(r"\s++")
        elif not ch.isalpha():
            parts.append(re.escape(ch) * count)
        elif count == 1:
            parts.append(f"{re.escape(ch)}(?:{re.escape(ch)}{{2,}}+)?")
        else:
            parts.append(f"{re.escape(ch)}{{{count},}}+")
    return "".join(parts)


def _stemmed(word: str) -> str:
    """`word` with an optional simple English ending: s, es, ed, ing; a final
    consonant doubled ("scammed"), a final e dropped ("hating"), y as ies/ied."""
    endings = [_stretched(e) for e in _STEM_ENDINGS]
    last, before = word[-1], word[:-1]
    if last == "e":
        endings.append("d")
    elif last.isalpha() and last.isascii() and last not in "aeiouwxy":
        endings += [_stretched(last + "ed"), _stretched(last + "ing")]
    body = f"{_stretched(word)}(?:{'|'.join(endings)})?"
    if before and last == "e":
        body += f"|{_stretched(before)}ing"
    elif before and last == "y":
        body += f"|{_stretched(before)}(?:ies|ied)"
    return f"(?:{body})"


def blocked_form(word: str) -> str:
    """What a blocked word matches as (`textnorm.match_form`): two words with the
    same form are the same entry."""
    return textnorm.match_form(" ".join(word.split()))[0]


def blocked_word_problem(word: str) -> str | None:
    """Why `word` cannot be added to the blocked words; None when it can. A word
    with nothing left to match once folded would match every line."""
    if not word.strip():
        return "the word is empty"
    if len(word) > MAX_BLOCKED_WORD_CHARS:
        return f"a blocked word is at most {MAX_BLOCKED_WORD_CHARS} characters"
    form = blocked_form(word)
    if not form.strip() or not any(ch.isalnum() for ch in form):
        return "the word has no letters or digits to match"
    return None


def _blocked_words_pattern(words: list[str], match: BlockedMatch) -> re.Pattern[str] | None:
    """One pattern over the words' match forms (`textnorm.match_form`): whole words
    (with endings, for `stem`) for alphabetic scripts; plain substrings for CJK,
    which has no spaces."""
    if not words:
        return None
    parts = []
    for word in sorted(words, key=len, reverse=True):
        folded = textnorm.match_form(word)[0]
        if textnorm.is_cjk(word[0]) or textnorm.is_cjk(word[-1]):
            parts.append(re.escape(folded))
        else:
            body = _stemmed(folded) if match == "stem" else _stretched(folded)
            parts.append(rf"(?<!\w){body}(?!\w)")
    return re.compile("|".join(parts))
