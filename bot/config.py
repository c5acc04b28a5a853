"""The config schema, its defaults (the only place they live) and the loader.

`config/ishowtts.yaml` documents every key; loading validates it and turns any
mistake into one `config error: <key path>: <what is allowed>` line per problem.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from adapters.bilibili.config import OPEN_SETTINGS, BilibiliConfig
from adapters.config import template
from adapters.events import EventKind, PaidKind, Role
from adapters.twitch.config import TwitchConfig
from adapters.twitch.emotes import SERVICES, Service
from engine.config import EngineConfig, ServeConfig, UserPath, is_loopback

DEFAULT_CONFIG_PATH = Path("config") / "ishowtts.yaml"
#: Where mod changes were kept before the per-user data folder; still used if present.
LEGACY_STATE_FILE = Path("state") / "ishowtts-state.json"


#: Secrets may live in the environment so the YAML file can be shared.
SECRET_ENV_VARS: dict[str, tuple[str, ...]] = {
    "ISHOWTTS_TWITCH_TOKEN": ("platforms", "twitch", "token"),
    "ISHOWTTS_TWITCH_NICK": ("platforms", "twitch", "nick"),
    "ISHOWTTS_BILIBILI_COOKIE": ("platforms", "bilibili", "cookie"),
    **{var: ("platforms", "bilibili", key) for key, var in OPEN_SETTINGS.items()},
    "ISHOWTTS_WEB_TOKEN": ("web", "token"),
    "ISHOWTTS_ENGINE_TOKEN": ("engine", "token"),
    "ISHOWTTS_SERVE_TOKEN": ("serve", "token"),
}

#: Chat commands under the `!tts` prefix; permissions are keyed by these names.
COMMAND_NAMES = (
    "voice",
    "voices",
    "skip",
    "clear",
    "pause",
    "resume",
    "mute",
    "unmute",
    "volume",
    "mode",
    "nick",
    "uservoice",
    "status",
)

#: Permission entry that lets anyone in chat run a command.
EVERYONE = "everyone"

ReadMode = Literal["all", "command", "paid", "reward"]
BlockedMatch = Literal["word", "stem"]


class ConfigError(Exception):
    """A config the bot cannot start with; `str()` is the user-facing text."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlatformsConfig(_Section):
    twitch: TwitchConfig = TwitchConfig()
    bilibili: BilibiliConfig = BilibiliConfig()


class Replacement(_Section):
    pattern: str
    replacement: str = ""
    ignore_case: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}): {value!r}") from None
        return value

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)


class Currency(_Section):
    #: How the unit is read aloud ("500 bits", "30 yuan").
    word: str
    #: The word in other languages' lines, by language ({zh: 元}).
    words: dict[Language, str] = Field(default_factory=dict)
    #: What one unit is worth in the reference currency, to rank paid messages.
    value: float = Field(ge=0)


#: The languages messages are read in; each has its own templates and words.
Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")

#: What is said for each kind of message, per language; one variant is picked at
#: random for each line (never the same one twice in a row). `viewer` is said
#: instead of a name the platform masked (Bilibili without a cookie).
DEFAULT_TEMPLATES: dict[Language, dict[str, list[str]]] = {
    "en": {
        "chat": ["{user} says {text}", "{user}: {text}"],
        "bits": ["{user} cheered {amount}. {text}"],
        "superchat": ["{user} sent a super chat of {amount}. {text}"],
        "sub": ["{user} subscribed. {text}"],
        "raid": ["{user} is raiding!"],
        "gift": ["{user} gifted {amount}. {text}"],
        "guard": ["{user} became a guard. {text}"],
        "viewer": ["a viewer"],
    },
    "zh": {
        "chat": ["{user}说：{text}", "{user}：{text}"],
        "bits": ["{user}打赏了{amount}。{text}"],
        "superchat": ["{user}发了{amount}的醒目留言：{text}"],
        "sub": ["{user}订阅了。{text}"],
        "raid": ["{user}带着观众来了！"],
        "gift": ["{user}送出了{amount}。{text}", "感谢{user}送的{amount}。{text}"],
        "guard": ["{user}上舰了！{text}"],
        "viewer": ["一位观众"],
    },
}


#: The language of each platform's chat ("local": what the streamer types in the panel).
DEFAULT_LANGUAGES: dict[str, Language] = {"twitch": "en", "bilibili": "zh", "local": "en"}


class TemplateSet(_Section):
    """One language's templates: each kind a list of variants (or one string)."""

    chat: list[str]
    bits: list[str]
    superchat: list[str]
    sub: list[str]
    raid: list[str]
    gift: list[str]
    guard: list[str]
    viewer: list[str]

    @field_validator("*", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("*")
    @classmethod
    def _placeholders(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one variant")
        return [template(v) for v in value]


class Templates(_Section):
    en: TemplateSet
    zh: TemplateSet

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        """Each language's kinds left out keep their defaults; the older form,
        kinds at the top (`templates: {chat: "..."}`), is the English set."""
        if not isinstance(value, dict):
            return value
        if set(value) & set(TemplateSet.model_fields):
            value = {"en": value}
        merged: dict[str, Any] = {}
        for language, defaults in DEFAULT_TEMPLATES.items():
            own = value.get(language, {})
            merged[language] = {**defaults, **own} if isinstance(own, dict) else own
        return {**value, **merged}

    def of(self, language: str) -> TemplateSet:
        return self.zh if language == "zh" else self.en


class Priorities(_Section):
    """Priority level per class of message; higher is read first."""

    privileged: int = Field(4, ge=0, le=100)
    paid: int = Field(3, ge=0, le=100)
    first_time: int = Field(2, ge=0, le=100)
    member: int = Field(1, ge=0, le=100)
    normal: int = Field(0, ge=0, le=100)


def _default_currencies() -> dict[str, Currency]:
    return {
        "BITS": Currency(word="bits", words={"zh": "比特"}, value=0.01),
        "SUB_PRIME": Currency(word="Prime subs", words={"zh": "个Prime订阅"}, value=5.0),
        "SUB_T1": Currency(word="subs", words={"zh": "个订阅"}, value=5.0),
        "SUB_T2": Currency(word="tier 2 subs", words={"zh": "个二级订阅"}, value=10.0),
        "SUB_T3": Currency(word="tier 3 subs", words={"zh": "个三级订阅"}, value=25.0),
        "USD": Currency(word="dollars", words={"zh": "美元"}, value=1.0),
        "EUR": Currency(word="euros", words={"zh": "欧元"}, value=1.08),
        "GBP": Currency(word="pounds", words={"zh": "英镑"}, value=1.27),
        "CNY": Currency(word="yuan", words={"zh": "元"}, value=0.14),
    }


def lexicon_key(key: str) -> str:
    """A lexicon key as it is matched: lower case, one space between words."""
    return " ".join(key.lower().split())


def _number_text(value: object) -> object:
    """A whole number as its digits ("666"); anything else as it is."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _default_lexicon() -> dict[Language, dict[str, str]]:
    """Chat shorthand read as words, per line language (`bot.chat.spoken`)."""
    return {
        "en": {
            "gg": "good game",
            "ggs": "good games",
            "ggez": "good game easy",
            "wp": "well played",
            "gl": "good luck",
            "glhf": "good luck have fun",
            "gl hf": "good luck have fun",
            "ez": "easy",
            "brb": "be right back",
            "bbl": "be back later",
            "afk": "away from keyboard",
            "gtg": "got to go",
            "g2g": "got to go",
            "omw": "on my way",
            "lol": "haha",
            "lmao": "haha",
            "lmfao": "haha",
            "rofl": "hahaha",
            "xd": "haha",
            "omg": "oh my god",
            "wtf": "what the heck",
            "idk": "I don't know",
            "idc": "I don't care",
            "imo": "in my opinion",
            "imho": "in my humble opinion",
            "tbh": "to be honest",
            "ngl": "not gonna lie",
            "btw": "by the way",
            "irl": "in real life",
            "rn": "right now",
            "fr": "for real",
            "ofc": "of course",
            "smh": "shaking my head",
            "ikr": "I know right",
            "jk": "just kidding",
            "nvm": "never mind",
            "np": "no problem",
            "ty": "thank you",
            "tysm": "thank you so much",
            "tyvm": "thank you very much",
            "thx": "thanks",
            "pls": "please",
            "plz": "please",
            "gz": "congrats",
            "grats": "congrats",
            "ily": "I love you",
            "hbu": "how about you",
            "wbu": "what about you",
            "gn": "good night",
            "poggers": "pog",
        },
        "zh": {
            "666": "六六六",
            "233": "哈哈哈",
            "555": "呜呜呜",
            "88": "拜拜",
            "886": "拜拜了",
            "hhh": "哈哈哈",
            "awsl": "啊我死了",
            "yyds": "永远的神",
            "xswl": "笑死我了",
            "xs": "笑死",
            "nb": "牛",
            "tql": "太强了",
            "dbq": "对不起",
            "bhys": "不好意思",
            "zqsg": "真情实感",
            "u1s1": "有一说一",
            "plmm": "漂亮妹妹",
            "xjj": "小姐姐",
            "xgg": "小哥哥",
            "nsdd": "你说得对",
            "srds": "虽然但是",
            "bdjw": "不懂就问",
            "kswl": "嗑死我了",
            "gkd": "搞快点",
            "yygq": "阴阳怪气",
        },
    }


class PolicyConfig(_Section):
    read_mode: ReadMode = "all"
    say_prefix: str = "!say"
    announce_user: bool = True
    max_chars: int = Field(200, gt=0, le=5000)
    links: Literal["replace", "remove", "drop"] = "replace"
    link_word: str = "link"
    emotes: Literal["strip", "keep"] = "strip"
    #: Whose Twitch emotes (plain words in chat) `emotes: strip` also strips; [] = none.
    third_party_emotes: list[Service] = Field(default_factory=lambda: list(SERVICES))
    max_char_repeats: int = Field(3, ge=1, le=100)
    max_word_repeats: int = Field(2, ge=1, le=100)
    blocked_words: list[str] = Field(default_factory=list)
    blocked_action: Literal["drop", "mask"] = "drop"
    #: word: the listed word only; stem: also with a plural or verb ending (s, es, ed, ing).
    blocked_match: BlockedMatch = "stem"
    mask_word: str = "bleep"
    #: Read and shown for a user whose name has a link or a blocked word, or nothing readable.
    name_fallback: str = Field("someone", min_length=1)
    replacements: list[Replacement] = Field(default_factory=list)
    #: Chat shorthand read as words, per line language, after `replacements`; a
    #: user's entries are merged over these (see `bot.chat.spoken`).
    lexicon: dict[Language, dict[str, str]] = Field(default_factory=_default_lexicon)
    #: Seconds between one viewer's read messages: one account cannot take over the queue.
    cooldown_s: float = Field(5.0, ge=0)
    #: Seconds within which one viewer's identical Bilibili gifts become one line
    #: (the window restarts on each gift, held 10 s at most); 0 reads each gift.
    gift_merge_s: float = Field(3.0, ge=0, le=10)
    muted_users: list[str] = Field(default_factory=list)
    ignored_users: list[str] = Field(
        default_factory=lambda: ["nightbot", "streamelements", "streamlabs", "moobot", "fossabot"]
    )
    nicknames: dict[str, str] = Field(default_factory=dict)
    speak_events: list[EventKind] = Field(
        default_factory=lambda: [EventKind.SUB, EventKind.RAID, EventKind.GIFT, EventKind.GUARD]
    )
    min_paid: dict[PaidKind, float] = Field(default_factory=dict)
    below_min: Literal["chat", "drop"] = "chat"
    currencies: dict[str, Currency] = Field(default_factory=_default_currencies)
    templates: Templates = Field(default_factory=lambda: Templates.model_validate({}))
    #: The language of each platform's chat, refined per message by its script.
    languages: dict[str, Language] = Field(default_factory=lambda: dict(DEFAULT_LANGUAGES))
    priorities: Priorities = Priorities()

    @field_validator("blocked_words", "muted_users", "ignored_users")
    @classmethod
    def _no_blank(cls, value: list[str]) -> list[str]:
        if any(not v.strip() for v in value):
            raise ValueError("entries must not be empty")
        return [v.strip() for v in value]

    @field_validator("lexicon", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 666 as a number; in the lexicon it means the text.
        if not isinstance(value, Mapping):
            return value
        return {
            language: (
                {_number_text(k): _number_text(v) for k, v in entries.items()}
                if isinstance(entries, Mapping)
                else entries
            )
            for language, entries in value.items()
        }

    @field_validator("lexicon")
    @classmethod
    def _lexicon_over_defaults(
        cls, value: dict[Language, dict[str, str]]
    ) -> dict[Language, dict[str, str]]:
        merged = _default_lexicon()
        for language, entries in value.items():
            for key, spoken in entries.items():
                if not key.strip():
                    raise ValueError(f"{language}: keys must not be empty")
                merged[language][lexicon_key(key)] = spoken
        return merged

    @field_validator("min_paid")
    @classmethod
    def _non_negative(cls, value: dict[PaidKind, float]) -> dict[PaidKind, float]:
        for kind, amount in value.items():
            if amount < 0:
                raise ValueError(f"{kind.value}: must be >= 0, got {amount:g}")
        return value

    @field_validator("languages")
    @classmethod
    def _per_platform(cls, value: dict[str, Language]) -> dict[str, Language]:
        for platform in value:
            if platform not in DEFAULT_LANGUAGES:
                raise ValueError(
                    f"unknown platform {platform!r}; allowed: {', '.join(DEFAULT_LANGUAGES)}"
                )
        return {**DEFAULT_LANGUAGES, **value}

    @field_validator("currencies")
    @classmethod
    def _upper_codes(cls, value: dict[str, Currency]) -> dict[str, Currency]:
        return {code.upper(): cur for code, cur in value.items()}


class PacingConfig(_Section):
    """How a busy chat stays close to live (bot/chat/pacing.py)."""

    enabled: bool = True
    #: Seconds of speech waiting the bot aims to stay under: beyond it lines are read
    #: at the speed that would say all of it in this time, up to `max_speed`.
    target_delay_s: float = Field(10.0, gt=0, le=600)
    max_speed: float = Field(1.3, ge=1.0, le=2.0)
    #: Estimated seconds of speech waiting at which the busy measures start (they
    #: stop below half of it).
    busy_backlog_s: float = Field(12.0, gt=0, le=3600)
    #: Whether chat lines keep their "{user} says" announcement when busy.
    announce_when_busy: bool = False
    #: Free chat lines are cut to this many characters when busy.
    busy_max_chars: int = Field(100, gt=0, le=5000)
    #: A free chat line older than this is too old to read (0: off).
    stale_after_s: float = Field(15.0, ge=0)
    #: When busy, the newest free chat line of a priority level is read first.
    prefer_recent: bool = True
    #: The speaking rate to start from, in characters a second (a CJK character
    #: counts three); measured from the lines spoken after that.
    chars_per_s: float = Field(15.0, ge=1, le=100)


class QueueConfig(_Section):
    max_size: int = Field(50, gt=0, le=10_000)
    ttl_s: float = Field(120.0, gt=0)
    #: Seconds of waiting that raise an item by one priority level; 0 turns ageing off.
    aging_s: float = Field(60.0, ge=0)
    #: Messages one viewer may have waiting; past it their new ones are dropped (0: no cap).
    max_per_user: int = Field(3, ge=0)
    pacing: PacingConfig = PacingConfig()


#: `audio.output_device` for no device at all: the speech goes to browser pages only.
NO_DEVICE = "none"


class AudioConfig(_Section):
    #: Device name (or part of it) or index as `ishowtts devices` lists; null = system
    #: default; "none": no device (the OBS overlay's browser audio only).
    output_device: str | int | None = None
    volume: int = Field(80, ge=0, le=100)
    fade_in_ms: float = Field(5.0, ge=0, le=1000)
    fade_out_ms: float = Field(15.0, ge=0, le=1000)
    target_lufs: float = Field(-18.0, ge=-70, le=0)
    peak_ceiling_db: float = Field(-1.0, ge=-60, le=0)

    @field_validator("output_device")
    @classmethod
    def _no_device(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and value.strip().casefold() == NO_DEVICE:
            return NO_DEVICE
        return value


class WebConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    token: SecretStr = SecretStr("")
    #: Host names the panel answers to besides this machine's addresses and
    #: "localhost" (a name that could point anywhere is refused: DNS rebinding).
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", name):
                raise ValueError(f"must be host names like streampc.lan (no port), got {name!r}")
        return [name.lower().rstrip(".") for name in value]

    @property
    def on_loopback(self) -> bool:
        """Whether only this machine can reach the panel."""
        return is_loopback(self.host)

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        if self.enabled and not self.on_loopback and not self.token.get_secret_value():
            raise ValueError(
                f"token: binding to {self.host} (not loopback) needs a token "
                "(set web.token or ISHOWTTS_WEB_TOKEN)"
            )
        return self


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


RoleName = Literal["broadcaster", "moderator", "vip", "subscriber", "guard", "everyone"]


def _default_permissions() -> dict[str, list[RoleName]]:
    return {name: ["broadcaster", "moderator"] for name in COMMAND_NAMES}


class CommandsConfig(_Section):
    prefix: str = "!tts"
    #: Where !tts uservoice / nick / mute changes are kept across restarts; None is
    #: the per-user data folder (see `state_path`).
    state_file: UserPath | None = None
    permissions: dict[str, list[RoleName]] = Field(default_factory=_default_permissions)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"must be one word, got {value!r}")
        return value

    @field_validator("permissions")
    @classmethod
    def _known_commands(cls, value: dict[str, list[RoleName]]) -> dict[str, list[RoleName]]:
        for name in value:
            if name not in COMMAND_NAMES:
                raise ValueError(
                    f"unknown command {name!r}; allowed: {', '.join(COMMAND_NAMES)}"
                    + _did_you_mean(name, COMMAND_NAMES)
                )
        # Commands left out keep their default, so a file can override just one.
        return {**_default_permissions(), **value}

    def state_path(self) -> Path:
        """`state_file`, else the file an older version kept in the working folder,
        else `state.json` in the user's data folder (per OS, via platformdirs)."""
        if self.state_file is not None:
            return self.state_file
        if LEGACY_STATE_FILE.is_file():
            return LEGACY_STATE_FILE
        return platformdirs.user_data_path("ishowtts", appauthor=False) / "state.json"

    def allowed_roles(self, command: str) -> frozenset[Role] | None:
        """The roles that may run `command`, or None when anyone may."""
        names = self.permissions[command]
        if EVERYONE in names:
            return None
        return frozenset(Role(n) for n in names)


class Config(_Section):
    platforms: PlatformsConfig = PlatformsConfig()
    policy: PolicyConfig = PolicyConfig()
    queue: QueueConfig = QueueConfig()
    engine: EngineConfig = EngineConfig()
    audio: AudioConfig = AudioConfig()
    web: WebConfig = WebConfig()
    serve: ServeConfig = ServeConfig()
    logging: LoggingConfig = LoggingConfig()
    commands: CommandsConfig = CommandsConfig()


@dataclass(frozen=True)
class CommandLine:
    """What `ishowtts run --twitch/--bilibili` adds over the config file."""

    twitch: Sequence[str] = ()
    bilibili: int | None = None


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    command_line: CommandLine = CommandLine(),
) -> Config:
    """Read, merge secrets from the environment and the command line's platforms,
    validate; raise ConfigError. With no path, the defaults (the shipped file's)."""
    if path is None:
        return parse_config("", environ=environ, source="<defaults>", command_line=command_line)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"config error: {path}: file not found (copy config/ishowtts.yaml and edit it)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"config error: {path}: cannot read ({exc})"]) from None
    return parse_config(text, environ=environ, source=str(path), command_line=command_line)


def with_serve_address(config: Config, **address: Any) -> Config:
    """`config` with `ishowtts serve --host/--port` over serve.host and serve.port,
    checked as the file's values are (ConfigError)."""
    try:
        serve = ServeConfig.model_validate({**config.serve.model_dump(), **address})
    except ValidationError as exc:
        raise ConfigError(
            [format_error({**err, "loc": ("serve", *err["loc"])}) for err in exc.errors()]
        ) from None
    return config.model_copy(update={"serve": serve})


def parse_config(
    text: str,
    environ: Mapping[str, str] | None = None,
    source: str = "<config>",
    command_line: CommandLine = CommandLine(),
) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}, column {mark.column + 1}:"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"config error: {source}:{where} not valid YAML ({problem})"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"config error: {source}: must be a mapping of sections at top level"])
    _apply_env(raw, os.environ if environ is None else environ)
    _apply_command_line(raw, command_line)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([format_error(err) for err in exc.errors()]) from None


def _section(raw: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The nested mapping at `keys`, made where absent; None where something else
    is in the way (validation then reports that value as it stands)."""
    node = raw
    for key in keys:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            return None
        node = child
    return node


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for var, key_path in SECRET_ENV_VARS.items():
        value = environ.get(var, "")
        if not value:
            continue
        node = _section(raw, key_path[:-1])
        if node is not None:
            node[key_path[-1]] = value


def _apply_command_line(raw: dict[str, Any], command_line: CommandLine) -> None:
    twitch = _section(raw, ("platforms", "twitch")) if command_line.twitch else None
    if twitch is not None:
        channels = twitch.get("channels")
        listed = channels if isinstance(channels, list) else []
        twitch["channels"] = [*listed, *(c for c in command_line.twitch if c not in listed)]
        twitch["enabled"] = True
    bilibili = _section(raw, ("platforms", "bilibili")) if command_line.bilibili else None
    if bilibili is not None:
        bilibili["room_id"] = command_line.bilibili
        bilibili["enabled"] = True


def format_error(err: Mapping[str, Any]) -> str:
    """One pydantic error → `config error: a.b.c: what is allowed, got X`."""
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    shown = _hidden(err.get("input")) if _is_secret(loc) else _show(err.get("input"))
    got = f", got {shown}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        what = "unknown key"
        if allowed:
            what += f"; allowed: {', '.join(allowed)}" + _did_you_mean(str(loc[-1]), allowed)
    elif kind == "missing":
        what = "required key is missing"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op, bound_key = {
            "greater_than": (">", "gt"),
            "greater_than_equal": (">=", "ge"),
            "less_than": ("<", "lt"),
            "less_than_equal": ("<=", "le"),
        }[kind]
        what = f"must be {op} {_show(ctx[bound_key])}{got}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        what = f"must be a whole number{got}"
    elif kind in ("float_type", "float_parsing"):
        what = f"must be a number{got}"
    elif kind in ("bool_type", "bool_parsing"):
        what = f"must be true or false{got}"
    elif kind == "string_type":
        what = f"must be text{got}"
    elif kind in ("list_type", "tuple_type"):
        what = f"must be a list{got}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        what = f"must be a mapping of keys{got}"
    elif kind in ("literal_error", "enum"):
        what = f"must be one of {ctx.get('expected', '?')}{got}"
    elif kind == "value_error":
        what = str(ctx.get("error", err["msg"]))
        # A model-level check names its own key first ("channels: …").
        head, sep, rest = what.partition(": ")
        if sep and re.fullmatch(r"\w+", head):
            loc, what = (*loc, head), rest
    else:
        what = str(err["msg"])[:1].lower() + str(err["msg"])[1:] + got
    path = ".".join(str(p) for p in loc) or "(top level)"
    return f"config error: {path}: {what}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: Keys whose values are never echoed, whatever their type in the schema.
_SECRET_KEY_WORDS = ("token", "cookie", "password", "secret")


def _is_secret(loc: tuple[str | int, ...]) -> bool:
    """Whether the value at `loc` is, or may contain, a secret: a key named like
    one, a SecretStr field, or a section that holds one (its whole input would
    be echoed, secret included)."""
    if any(isinstance(p, str) and any(w in p.lower() for w in _SECRET_KEY_WORDS) for p in loc):
        return True
    node: Any = Config
    for part in loc:
        node = _step(node, part)
        if node is None:
            return False
    return bool(loc) and _holds_secret(node, set())


def _holds_secret(node: Any, seen: set[type]) -> bool:
    node = _unwrap_optional(node)
    if isinstance(node, type) and issubclass(node, SecretStr | SecretBytes):
        return True
    if isinstance(node, type) and issubclass(node, BaseModel) and node not in seen:
        seen.add(node)
        return any(_holds_secret(f.annotation, seen) for f in node.model_fields.values())
    return any(_holds_secret(arg, seen) for arg in typing.get_args(node))


def _hidden(value: Any) -> str:
    """What a secret's wrong value was, without the value."""
    kind = {
        bool: "true or false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
    return f"{kind} (value hidden: secret)"


def _did_you_mean(name: str, allowed: typing.Sequence[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the section at `loc`, walking the schema's annotations."""
    node: Any = Config
    for part in loc:
        node = _step(node, part)
        if node is None:
            return []
    node = _unwrap_optional(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _step(node: Any, part: str | int) -> Any:
    node = _unwrap_optional(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return None if field is None else field.annotation
    origin = typing.get_origin(node)
    args = typing.get_args(node)
    if origin is list and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _unwrap_optional(node: Any) -> Any:
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(node) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return node
