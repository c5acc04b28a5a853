"""Third-party emotes in Twitch chat: 7TV, BetterTTV and FrankerFaceZ.

Their emotes reach chat as plain words ("KEKW", "catJAM"), with no tag that
marks them the way Twitch marks its own; the bot strips them once it knows
which words they are. Two halves:

- sans-I/O: each service's addresses from a base URL (`url`), and its JSON
  reply → the emote names in it (`parse`), `EmoteReplyError` for a reply of
  the wrong shape;
- `EmoteFetcher`, the asyncio shell: one channel's global and channel sets from
  each enabled service, at start and every ten minutes, the last good set kept
  (on disk too, so a restart offline still has it), and an `EmoteNames` event
  each time their union changes. Nothing it meets stops it or the chat: a
  service down, slow or answering garbage costs one `emotes.fetch_failed`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeGuard, TypeVar

import aiohttp
import platformdirs
import structlog

from adapters.events import ChatEvent, EmoteNames, Platform
from adapters.http import read_capped
from adapters.reconnect import describe

log = structlog.get_logger()

T = TypeVar("T")

Service = Literal["7tv", "bttv", "ffz"]
Scope = Literal["global", "channel"]
SERVICES: tuple[Service, ...] = ("7tv", "bttv", "ffz")
SCOPES: tuple[Scope, ...] = ("global", "channel")

#: Each service's own API address; `platforms.twitch.emote_apis` overrides them.
DEFAULT_APIS: dict[Service, str] = {
    "7tv": "https://7tv.io",
    "bttv": "https://api.betterttv.net",
    "ffz": "https://api.frankerfacez.com",
}

_PATHS: dict[tuple[Service, Scope], str] = {
    ("7tv", "global"): "/v3/emote-sets/global",
    ("7tv", "channel"): "/v3/users/twitch/{room_id}",
    ("bttv", "global"): "/3/cached/emotes/global",
    ("bttv", "channel"): "/3/cached/users/twitch/{room_id}",
    ("ffz", "global"): "/v1/set/global",
    ("ffz", "channel"): "/v1/room/id/{room_id}",
}

#: Names kept from one reply (or cache file); real sets hold a few hundred,
#: a channel's at most about a thousand.
MAX_NAMES = 10_000
#: Longer names are not emote names (the services allow about 100).
MAX_NAME_CHARS = 100
#: A reply is read up to this size, and is garbage past it (real ones are under 1 MB).
MAX_REPLY_BYTES = 2 * 1024 * 1024
#: A cache file holds at most MAX_NAMES names of MAX_NAME_CHARS UTF-8 characters.
MAX_CACHE_BYTES = 8 * 1024 * 1024
HTTP_TIMEOUT_S = 5.0
REFRESH_S = 600.0
USER_AGENT = "ishowtts (chat reader; emote names)"


class EmoteReplyError(ValueError):
    """A reply that is not the service's emote set."""


def url(service: Service, scope: Scope, base: str, room_id: str) -> str:
    """The address of one set: `base` is the service's API root, `room_id` the
    channel's Twitch id (digits)."""
    if scope == "channel" and not (room_id.isascii() and room_id.isdigit()):
        raise ValueError(f"room id must be digits, got {room_id[:20]!r}")
    return base.rstrip("/") + _PATHS[service, scope].format(room_id=room_id)


def parse(service: Service, scope: Scope, doc: Any) -> frozenset[str]:
    """The emote names in one decoded JSON reply, at most MAX_NAMES of them;
    names that are empty, too long or hold whitespace (never a chat word) are
    skipped, and so are entries that are not emotes."""
    return _PARSERS[service, scope](doc)


def decode(service: Service, scope: Scope, body: bytes) -> frozenset[str]:
    """`parse` on a raw reply body; EmoteReplyError when it is not JSON."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EmoteReplyError(f"not JSON ({str(exc)[:100]})") from None
    return parse(service, scope, doc)


def is_emote_name(name: object) -> TypeGuard[str]:
    """A word chat could hold whole: a string, not empty, no whitespace, not too long."""
    return isinstance(name, str) and len(name) <= MAX_NAME_CHARS and name.split() == [name]


def _expect(value: object, kind: type[T], where: str) -> T:
    if not isinstance(value, kind):
        raise EmoteReplyError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _names(lists: Iterable[list[Any]], key: str) -> frozenset[str]:
    found: set[str] = set()
    for entries in lists:
        for entry in entries:
            if isinstance(entry, dict) and is_emote_name(name := entry.get(key)):
                found.add(name)
                if len(found) >= MAX_NAMES:
                    return frozenset(found)
    return frozenset(found)


def _seventv_global(doc: Any) -> frozenset[str]:
    # {"id", "name": "Global Emotes", "emotes": [{"id", "name", "flags", "data"}]}
    emotes = _expect(_expect(doc, dict, "reply").get("emotes"), list, "emotes")
    return _names([emotes], "name")


def _seventv_channel(doc: Any) -> frozenset[str]:
    # {"id", "platform": "TWITCH", "username", "emote_set": {"id", "emotes": [...]}, "user"};
    # emote_set is null when the channel has none active, and an empty set may
    # leave out its emotes.
    emote_set = _expect(doc, dict, "reply").get("emote_set")
    if emote_set is None:
        return frozenset()
    emotes = _expect(emote_set, dict, "emote_set").get("emotes")
    if emotes is None:
        return frozenset()
    return _names([_expect(emotes, list, "emote_set.emotes")], "name")


def _bttv_global(doc: Any) -> frozenset[str]:
    # [{"id", "code", "imageType", "animated", "userId"}]
    return _names([_expect(doc, list, "reply")], "code")


def _bttv_channel(doc: Any) -> frozenset[str]:
    # {"id", "bots", "avatar", "channelEmotes": [{"id", "code"}], "sharedEmotes": [...]}
    _expect(doc, dict, "reply")
    lists = [_expect(doc.get(key, []), list, key) for key in ("channelEmotes", "sharedEmotes")]
    return _names(lists, "code")


def _ffz_sets(doc: dict[str, Any]) -> dict[str, Any]:
    return _expect(doc.get("sets"), dict, "sets")


def _ffz_emoticons(emote_set: Any, where: str) -> list[Any]:
    emoticons = _expect(emote_set, dict, where).get("emoticons", [])
    return _expect(emoticons, list, f"{where}.emoticons")


def _ffz_global(doc: Any) -> frozenset[str]:
    # {"default_sets": [3], "sets": {"3": {"id": 3, "emoticons": [{"id", "name"}]}}, "users"};
    # only the default sets are everyone's (the others belong to some users).
    sets = _ffz_sets(_expect(doc, dict, "reply"))
    defaults = _expect(doc.get("default_sets"), list, "default_sets")
    lists = [
        _ffz_emoticons(sets[key], f"sets.{key}")
        for key in (str(d) for d in defaults[:100] if isinstance(d, int | str))
        if key in sets
    ]
    return _names(lists, "name")


def _ffz_channel(doc: Any) -> frozenset[str]:
    # {"room": {"_id", "twitch_id", "id": login, "set": 12345}, "sets": {"12345": {...}}}
    sets = _ffz_sets(_expect(doc, dict, "reply"))
    lists = [_ffz_emoticons(value, f"sets.{key}") for key, value in list(sets.items())[:100]]
    return _names(lists, "name")


_PARSERS: dict[tuple[Service, Scope], Callable[[Any], frozenset[str]]] = {
    ("7tv", "global"): _seventv_global,
    ("7tv", "channel"): _seventv_channel,
    ("bttv", "global"): _bttv_global,
    ("bttv", "channel"): _bttv_channel,
    ("ffz", "global"): _ffz_global,
    ("ffz", "channel"): _ffz_channel,
}


def cache_name(service: Service, scope: Scope, room_id: str) -> str:
    """The cache file of one set: the global ones are the same for every channel."""
    return f"{service}-global.json" if scope == "global" else f"{service}-{room_id}.json"


def cache_document(names: frozenset[str]) -> bytes:
    return json.dumps({"names": sorted(names)}, ensure_ascii=False).encode("utf-8")


def read_cache_document(body: bytes) -> frozenset[str]:
    """A cache file's names; EmoteReplyError when it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EmoteReplyError(f"not JSON ({str(exc)[:100]})") from None
    names = _expect(_expect(doc, dict, "cache").get("names"), list, "names")
    return frozenset(n for n in names[:MAX_NAMES] if is_emote_name(n))


def default_cache_dir() -> Path:
    return platformdirs.user_cache_path("ishowtts", appauthor=False) / "emotes"


class EmoteFetcher:
    """One channel's third-party emote names, kept fresh; `run` until cancelled."""

    def __init__(
        self,
        channel: str,
        room_id: str,
        services: Sequence[Service],
        events: asyncio.Queue[ChatEvent],
        *,
        apis: Mapping[Service, str] | None = None,
        cache_dir: Path | None = None,
        refresh_s: float = REFRESH_S,
        timeout_s: float = HTTP_TIMEOUT_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.channel = channel
        self.room_id = room_id
        self.services = tuple(dict.fromkeys(services))
        self.apis = {**DEFAULT_APIS, **(apis or {})}
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._events = events
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._max_reply_bytes = max_reply_bytes
        #: The last good set of each (service, scope), and what its cache file holds.
        self.sets: dict[tuple[Service, Scope], frozenset[str]] = {}
        self._cached: dict[tuple[Service, Scope], frozenset[str]] = {}
        self._fetched: set[tuple[Service, Scope]] = set()
        self._published: frozenset[str] = frozenset()

    async def run(self) -> None:
        keys = [(service, scope) for service in self.services for scope in SCOPES]
        for key in keys:
            names = await self._load_cache(key)
            if names is not None:
                self.sets[key] = self._cached[key] = names
                self._loaded(key, "cache")
        await self._publish()
        async with aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            trust_env=False,
        ) as http:
            while True:
                await asyncio.gather(*(self._refresh(http, key) for key in keys))
                await asyncio.sleep(self._refresh_s)

    def _loaded(self, key: tuple[Service, Scope], source: str) -> None:
        service, scope = key
        log.info(
            "emotes.loaded",
            service=service,
            scope=scope,
            channel=self.channel,
            count=len(self.sets[key]),
            source=source,
        )

    async def _refresh(self, http: aiohttp.ClientSession, key: tuple[Service, Scope]) -> None:
        names = await self._fetch(http, key)
        if names is None:
            return  # the last good set stays
        changed = names != self.sets.get(key)
        self.sets[key] = names
        if changed or key not in self._fetched:
            self._loaded(key, "network")
        self._fetched.add(key)
        if names != self._cached.get(key):
            await self._write_cache(key, names)
        await self._publish()

    async def _fetch(
        self, http: aiohttp.ClientSession, key: tuple[Service, Scope]
    ) -> frozenset[str] | None:
        """One set from the network; None (and a warning) when it cannot be had."""
        service, scope = key
        try:
            address = url(service, scope, self.apis[service], self.room_id)
            async with asyncio.timeout(self._timeout_s), http.get(address) as resp:
                if resp.status == 404 and scope == "channel":
                    # The channel has no account there: no channel set, nothing wrong.
                    log.debug("emotes.no_channel_set", service=service, channel=self.channel)
                    return frozenset()
                if resp.status != 200:
                    raise EmoteReplyError(f"HTTP {resp.status}")
                body = await read_capped(resp, self._max_reply_bytes)
            return await asyncio.to_thread(decode, service, scope, body)
        except Exception as exc:
            # The boundary: nothing a service answers (or fails to) reaches the chat.
            reason = f"no reply within {self._timeout_s:g} s" if _timed_out(exc) else describe(exc)
            log.warning(
                "emotes.fetch_failed",
                service=service,
                scope=scope,
                channel=self.channel,
                reason=reason,
            )
            return None

    async def _publish(self) -> None:
        union = frozenset[str]().union(*self.sets.values())
        if union == self._published:
            return
        self._published = union
        await self._events.put(EmoteNames(Platform.TWITCH, self.channel, union))

    def _cache_path(self, key: tuple[Service, Scope]) -> Path:
        return self.cache_dir / cache_name(key[0], key[1], self.room_id)

    async def _load_cache(self, key: tuple[Service, Scope]) -> frozenset[str] | None:
        path = self._cache_path(key)
        try:
            return await asyncio.to_thread(_read_cache_file, path)
        except FileNotFoundError:
            return None
        except (OSError, EmoteReplyError) as exc:
            log.warning("emotes.cache_ignored", path=str(path), reason=describe(exc))
            return None

    async def _write_cache(self, key: tuple[Service, Scope], names: frozenset[str]) -> None:
        path = self._cache_path(key)
        try:
            await asyncio.to_thread(_write_cache_file, path, cache_document(names))
        except OSError as exc:
            log.warning("emotes.cache_write_failed", path=str(path), reason=describe(exc))
            return
        self._cached[key] = names


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError)


def _read_cache_file(path: Path) -> frozenset[str]:
    with path.open("rb") as file:
        body = file.read(MAX_CACHE_BYTES + 1)
    if len(body) > MAX_CACHE_BYTES:
        raise EmoteReplyError(f"cache file over {MAX_CACHE_BYTES} bytes")
    return read_cache_document(body)


def _write_cache_file(path: Path, body: bytes) -> None:
    """Written whole or not at all (a temporary file renamed over it): a reader,
    or a crash meanwhile, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        temporary.write_bytes(body)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
