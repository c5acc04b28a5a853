"""Third-party emote sets: the services' replies parsed, and the fetcher against
loopback servers speaking their real shapes, and failing the ways they do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.events import ChatEvent, EmoteNames, Platform
from adapters.twitch import emotes
from adapters.twitch.emotes import (
    MAX_NAME_CHARS,
    MAX_NAMES,
    EmoteFetcher,
    EmoteReplyError,
    Scope,
    Service,
    decode,
    parse,
    url,
)
from tests.twitch.fake_emotes import DEFAULT_NAMES, FakeEmoteApis, Mode, reply

ROOM = "71092938"
ALL_KEYS = list(DEFAULT_NAMES)
#: The real addresses, read before conftest points them at a closed port.
REAL_APIS = dict(emotes.DEFAULT_APIS)


# The parsing half --------------------------------------------------------------


def test_addresses_of_each_set() -> None:
    assert url("7tv", "global", "https://7tv.io", ROOM) == "https://7tv.io/v3/emote-sets/global"
    assert (
        url("7tv", "channel", "https://7tv.io/", ROOM) == f"https://7tv.io/v3/users/twitch/{ROOM}"
    )
    assert url("bttv", "global", "https://api.betterttv.net", ROOM) == (
        "https://api.betterttv.net/3/cached/emotes/global"
    )
    assert url("bttv", "channel", "https://api.betterttv.net", ROOM) == (
        f"https://api.betterttv.net/3/cached/users/twitch/{ROOM}"
    )
    assert url("ffz", "global", "https://api.frankerfacez.com", ROOM) == (
        "https://api.frankerfacez.com/v1/set/global"
    )
    assert url("ffz", "channel", "https://api.frankerfacez.com", ROOM) == (
        f"https://api.frankerfacez.com/v1/room/id/{ROOM}"
    )
    with pytest.raises(ValueError, match="room id must be digits"):
        url("7tv", "channel", "https://7tv.io", "../admin")


@pytest.mark.parametrize(("service", "scope"), ALL_KEYS)
def test_each_service_s_real_reply_gives_its_names(service: Service, scope: Scope) -> None:
    names = DEFAULT_NAMES[service, scope]
    assert parse(service, scope, reply(service, scope, names, ROOM)) == frozenset(names)
    body = json.dumps(reply(service, scope, names, ROOM)).encode()
    assert decode(service, scope, body) == frozenset(names)


def test_ffz_global_is_only_the_default_sets() -> None:
    doc = reply("ffz", "global", ["CatBag"], ROOM)
    assert "NotForEveryone" in json.dumps(doc)
    assert parse("ffz", "global", doc) == {"CatBag"}
    doc["default_sets"] = [3, 4330, 999, None]
    assert parse("ffz", "global", doc) == {"CatBag", "NotForEveryone"}


def test_a_7tv_channel_without_an_active_set_has_none() -> None:
    doc = reply("7tv", "channel", ["x"], ROOM)
    doc["emote_set"] = None
    assert parse("7tv", "channel", doc) == frozenset()
    doc["emote_set"] = {"id": "01", "name": "empty"}
    assert parse("7tv", "channel", doc) == frozenset()


@pytest.mark.parametrize(
    ("service", "scope", "doc", "error"),
    [
        ("7tv", "global", None, "reply: expected dict, got NoneType"),
        ("7tv", "global", [], "reply: expected dict, got list"),
        ("7tv", "global", {"emotes": {"a": 1}}, "emotes: expected list, got dict"),
        ("7tv", "global", {"error": "x"}, "emotes: expected list, got NoneType"),
        ("7tv", "channel", {"emote_set": []}, "emote_set: expected dict, got list"),
        ("7tv", "channel", {"emote_set": {"emotes": "KEKW"}}, "emote_set.emotes: expected list"),
        ("bttv", "global", {"message": "rate limited"}, "reply: expected list, got dict"),
        ("bttv", "channel", [], "reply: expected dict, got list"),
        ("bttv", "channel", {"channelEmotes": "x"}, "channelEmotes: expected list, got str"),
        ("ffz", "global", {"default_sets": [3]}, "sets: expected dict, got NoneType"),
        ("ffz", "global", {"sets": {}}, "default_sets: expected list, got NoneType"),
        ("ffz", "global", {"default_sets": [3], "sets": {"3": []}}, "sets.3: expected dict"),
        ("ffz", "channel", {"sets": []}, "sets: expected dict, got list"),
        ("ffz", "channel", {"sets": {"1": {"emoticons": {}}}}, "sets.1.emoticons: expected list"),
        ("ffz", "channel", 12, "reply: expected dict, got int"),
    ],
)
def test_a_reply_of_the_wrong_shape_is_a_clear_error(
    service: Service, scope: Scope, doc: Any, error: str
) -> None:
    with pytest.raises(EmoteReplyError, match=error):
        parse(service, scope, doc)


def test_entries_that_are_not_emote_names_are_skipped() -> None:
    doc = [
        {"code": "Good"},
        {"code": "ÜberPog"},
        {"code": "x" * MAX_NAME_CHARS},
        {"code": "y" * (MAX_NAME_CHARS + 1)},
        {"code": "two words"},
        {"code": "tab\there"},
        {"code": "ideographic\u3000space"},
        {"code": ""},
        {"code": 42},
        {"code": None},
        {"id": "no code"},
        "KEKW",
        None,
        [{"code": "nested"}],
    ]
    assert parse("bttv", "global", doc) == {"Good", "ÜberPog", "x" * MAX_NAME_CHARS}


def test_a_huge_set_is_capped() -> None:
    doc = [{"code": f"e{n}"} for n in range(MAX_NAMES * 3)]
    names = parse("bttv", "global", doc)
    assert len(names) == MAX_NAMES


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b'{"emotes": [', "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_a_body_that_is_not_json_is_a_clear_error(body: bytes, error: str) -> None:
    with pytest.raises(EmoteReplyError, match=error):
        decode("bttv", "global", body)


# The fetcher -------------------------------------------------------------------


@pytest.fixture
async def apis() -> AsyncIterator[FakeEmoteApis]:
    async with FakeEmoteApis() as fake:
        yield fake


class Fetching:
    """A fetcher running in the test, and the events it has sent."""

    def __init__(self, fetcher: EmoteFetcher, events: asyncio.Queue[ChatEvent]) -> None:
        self.fetcher = fetcher
        self.events = events
        self.task = asyncio.create_task(fetcher.run())

    async def next(self, timeout: float = 5) -> EmoteNames:
        async with asyncio.timeout(timeout):
            event = await self.events.get()
        assert isinstance(event, EmoteNames)
        return event

    async def until(self, names: frozenset[str], timeout: float = 5) -> EmoteNames:
        """The event carrying exactly `names` (earlier, partial ones skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next()
                if event.names == names:
                    return event

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def fetch(tmp_path: Path) -> AsyncIterator[Any]:
    running: list[Fetching] = []

    def start(apis: dict[Service, str], **kwargs: Any) -> Fetching:
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        services = kwargs.pop("services", emotes.SERVICES)
        events: asyncio.Queue[ChatEvent] = asyncio.Queue()
        fetcher = EmoteFetcher("chan", ROOM, services, events, apis=apis, **kwargs)
        running.append(Fetching(fetcher, events))
        return running[-1]

    yield start
    for one in running:
        await one.stop()


async def cached_until(path: Path, names: list[str]) -> None:
    """The cache file holds `names` (soon: an event may come before the last write ends)."""
    async with asyncio.timeout(5):
        while True:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text(encoding="utf-8")) == {"names": sorted(names)}:
                    return
            await asyncio.sleep(0.01)


def failures(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (e["service"], e["scope"], e["reason"]) for e in logs if e["event"] == "emotes.fetch_failed"
    ]


async def test_every_service_s_global_and_channel_set_reach_the_bot(
    apis: FakeEmoteApis, fetch: Any, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        run = fetch(apis.apis)
        event = await run.until(apis.union())
    assert event == EmoteNames(Platform.TWITCH, "chan", apis.union())
    assert sorted(apis.requests) == sorted(
        [(s, c, ROOM if c == "channel" else "") for s, c in ALL_KEYS]
    )
    loaded = [e for e in logs if e["event"] == "emotes.loaded"]
    assert sorted((e["service"], e["scope"], e["count"], e["source"]) for e in loaded) == sorted(
        (s, c, len(DEFAULT_NAMES[s, c]), "network") for s, c in ALL_KEYS
    )
    assert all(e["channel"] == "chan" and e["log_level"] == "info" for e in loaded)
    assert not failures(logs)
    expected = {f"{s}-global.json" for s in emotes.SERVICES} | {
        f"{s}-{ROOM}.json" for s in emotes.SERVICES
    }
    async with asyncio.timeout(5):  # the last writes may still be under way
        while {p.name for p in (tmp_path / "cache").iterdir()} != expected:
            await asyncio.sleep(0.01)
    for name in expected:
        key = name.removesuffix(".json").split("-")
        cached = json.loads((tmp_path / "cache" / name).read_text(encoding="utf-8"))
        scope = "global" if key[1] == "global" else "channel"
        assert cached == {"names": sorted(DEFAULT_NAMES[key[0], scope])}


async def test_only_the_enabled_services_are_asked(apis: FakeEmoteApis, fetch: Any) -> None:
    run = fetch(apis.apis, services=["bttv"])
    await run.until(apis.union(("bttv", "global"), ("bttv", "channel")))
    assert {service for service, _, _ in apis.requests} == {"bttv"}


async def test_a_channel_unknown_to_a_service_is_no_set_not_a_failure(
    apis: FakeEmoteApis, fetch: Any
) -> None:
    for service in emotes.SERVICES:
        apis.modes[service, "channel"] = "404"
    with capture_logs() as logs:
        run = fetch(apis.apis)
        globals_only = apis.union(*[(s, "global") for s in emotes.SERVICES])
        await run.until(globals_only)
        await asyncio.sleep(0.1)
    assert not failures(logs)
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]
    loaded = {(e["service"], e["scope"]): e["count"] for e in logs if e["event"] == "emotes.loaded"}
    assert loaded == {
        key: 0 if key[1] == "channel" else len(DEFAULT_NAMES[key]) for key in ALL_KEYS
    }


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("500", "EmoteReplyError: HTTP 500"),
        ("404", "EmoteReplyError: HTTP 404"),  # a global set: no such thing as "none"
        ("html", "EmoteReplyError: not JSON"),
        ("shape", "EmoteReplyError: emotes: expected list, got int"),
        ("truncated", "EmoteReplyError: not JSON"),
        ("huge", "ReplyTooLarge: reply of 3145728 bytes (over 2097152)"),
        ("huge_chunked", "ReplyTooLarge: reply over 2097152 bytes"),
    ],
)
async def test_a_failing_set_is_logged_and_the_others_still_load(
    apis: FakeEmoteApis, fetch: Any, mode: Mode, reason: str
) -> None:
    apis.modes["7tv", "global"] = mode
    with capture_logs() as logs:
        run = fetch(apis.apis)
        others = apis.union(*[key for key in ALL_KEYS if key != ("7tv", "global")])
        await run.until(others)
        async with asyncio.timeout(5):
            while not failures(logs):
                await asyncio.sleep(0.01)
    ((service, scope, logged),) = failures(logs)
    assert (service, scope) == ("7tv", "global")
    assert logged.startswith(reason)
    (failed,) = [e for e in logs if e["event"] == "emotes.fetch_failed"]
    assert failed["channel"] == "chan" and failed["log_level"] == "warning"
    assert not run.task.done()


async def test_a_slow_service_times_out_without_holding_up_the_others(
    apis: FakeEmoteApis, fetch: Any
) -> None:
    apis.modes["bttv", "global"] = "slow"
    began = time.monotonic()
    with capture_logs() as logs:
        run = fetch(apis.apis, timeout_s=1.0)
        others = apis.union(*[key for key in ALL_KEYS if key != ("bttv", "global")])
        await run.until(others)
        assert time.monotonic() - began < 1.0  # the rest did not wait for it
        async with asyncio.timeout(5):
            while not failures(logs):
                await asyncio.sleep(0.01)
    assert failures(logs) == [("bttv", "global", "no reply within 1 s")]
    assert 1.0 <= time.monotonic() - began < 3.0


async def test_an_unreachable_service_is_a_failure_too(apis: FakeEmoteApis, fetch: Any) -> None:
    dead = {**apis.apis, "ffz": "http://127.0.0.1:9"}
    with capture_logs() as logs:
        run = fetch(dead)
        await run.until(apis.union(*[key for key in ALL_KEYS if key[0] != "ffz"]))
        async with asyncio.timeout(5):
            while len(failures(logs)) < 2:
                await asyncio.sleep(0.01)
    assert sorted((s, c) for s, c, _ in failures(logs)) == [("ffz", "channel"), ("ffz", "global")]
    assert all(reason.startswith("Client") for _, _, reason in failures(logs))


async def test_the_cache_serves_a_restart_while_the_network_is_down(
    apis: FakeEmoteApis, fetch: Any, tmp_path: Path
) -> None:
    first = fetch(apis.apis)
    await first.until(apis.union())
    for service, scope in ALL_KEYS:
        name = emotes.cache_name(service, scope, ROOM)
        await cached_until(tmp_path / "cache" / name, apis.names[service, scope])
    await first.stop()

    apis.set_all("500")
    with capture_logs() as logs:
        again = fetch(apis.apis)
        event = await again.next()
        assert event.names == apis.union()
        async with asyncio.timeout(5):
            while len(failures(logs)) < 6:
                await asyncio.sleep(0.01)
    loaded = [e for e in logs if e["event"] == "emotes.loaded"]
    assert {e["source"] for e in loaded} == {"cache"} and len(loaded) == 6
    assert again.events.empty()  # the failures changed nothing
    assert again.fetcher.sets == first.fetcher.sets


async def test_the_last_good_set_is_kept_when_a_refresh_fails_and_refreshes_follow(
    apis: FakeEmoteApis, fetch: Any, tmp_path: Path
) -> None:
    run = fetch(apis.apis, refresh_s=0.2)
    await run.until(apis.union())
    apis.set_all("500")
    with capture_logs() as logs:
        async with asyncio.timeout(5):
            while apis.rounds() < 3:
                await asyncio.sleep(0.01)
    assert len(failures(logs)) >= 6
    assert run.events.empty()  # nothing taken back
    assert frozenset().union(*run.fetcher.sets.values()) == apis.union()
    # The cache still has the good set, for a restart.
    cached = json.loads((tmp_path / "cache" / f"7tv-{ROOM}.json").read_text())
    assert set(cached["names"]) == set(DEFAULT_NAMES["7tv", "channel"])

    # The service is back with a new emote: the next refresh brings it.
    apis.modes = {}
    apis.names["7tv", "channel"].append("peepoHappy")
    assert "peepoHappy" in (await run.until(apis.union())).names
    await cached_until(tmp_path / "cache" / f"7tv-{ROOM}.json", apis.names["7tv", "channel"])


async def test_refreshes_come_at_the_interval(apis: FakeEmoteApis, fetch: Any) -> None:
    run = fetch(apis.apis, refresh_s=0.5)
    await run.until(apis.union())
    began = time.monotonic()
    async with asyncio.timeout(5):
        while apis.rounds() < 3:
            await asyncio.sleep(0.01)
    took = time.monotonic() - began
    assert 0.9 <= took < 2.0, took  # rounds 2 and 3, half a second apart
    assert run.events.empty()  # the same sets: nothing new to tell


async def test_a_removed_emote_is_no_longer_stripped(apis: FakeEmoteApis, fetch: Any) -> None:
    run = fetch(apis.apis, refresh_s=0.2)
    await run.until(apis.union())
    apis.names["7tv", "channel"].remove("KEKW")
    event = await run.until(apis.union())
    assert "KEKW" not in event.names


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"names": "KEKW"}',
        b"[1, 2, 3]",
        b"\x00\x01\x02",
        b'{"names": ["ok", 5, "two words"]}',
    ],
)
async def test_a_corrupt_cache_file_is_ignored_with_a_log_line(
    apis: FakeEmoteApis, fetch: Any, tmp_path: Path, content: bytes
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"7tv-{ROOM}.json").write_bytes(content)
    apis.set_all("500")
    with capture_logs() as logs:
        run = fetch(apis.apis)
        async with asyncio.timeout(5):
            while len(failures(logs)) < 6:
                await asyncio.sleep(0.01)
    ignored = [e for e in logs if e["event"] == "emotes.cache_ignored"]
    if content.startswith(b'{"names": ["ok"'):
        # Well formed with odd entries: the names are kept, the rest skipped.
        assert not ignored
        assert (await run.next()).names == {"ok"}
    else:
        (line,) = ignored
        assert line["log_level"] == "warning" and line["path"].endswith(f"7tv-{ROOM}.json")
        assert run.events.empty()
    # With the service back, the good set replaces the file.
    apis.modes = {}
    await run.stop()
    run = fetch(apis.apis)
    await run.until(apis.union())
    await cached_until(cache / f"7tv-{ROOM}.json", DEFAULT_NAMES["7tv", "channel"])


async def test_a_cache_that_cannot_be_written_costs_a_warning_only(
    apis: FakeEmoteApis, fetch: Any, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    with capture_logs() as logs:
        run = fetch(apis.apis, cache_dir=blocked / "emotes")
        await run.until(apis.union())
        async with asyncio.timeout(5):
            while len([e for e in logs if e["event"] == "emotes.cache_write_failed"]) < 6:
                await asyncio.sleep(0.01)
    assert not run.task.done()


def test_the_default_cache_is_in_the_user_cache_folder(tmp_path: Path) -> None:
    # conftest points XDG_CACHE_HOME at tmp_path / "xdg-cache".
    fetcher = EmoteFetcher("chan", ROOM, ["7tv"], asyncio.Queue())
    assert fetcher.cache_dir == tmp_path / "xdg-cache" / "ishowtts" / "emotes"


def test_the_services_own_addresses_are_the_defaults() -> None:
    assert REAL_APIS == {
        "7tv": "https://7tv.io",
        "bttv": "https://api.betterttv.net",
        "ffz": "https://api.frankerfacez.com",
    }
    fetcher = EmoteFetcher("chan", ROOM, ["7tv"], asyncio.Queue(), apis={"ffz": "http://mirror"})
    assert fetcher.apis == {**emotes.DEFAULT_APIS, "ffz": "http://mirror"}


async def test_an_oversized_cache_file_is_ignored_unread(
    apis: FakeEmoteApis, fetch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emotes, "MAX_CACHE_BYTES", 100)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"7tv-{ROOM}.json").write_bytes(emotes.cache_document(frozenset({"x" * 99, "y"})))
    (cache / "7tv-global.json").write_bytes(emotes.cache_document(frozenset({"EZ"})))
    apis.set_all("500")
    with capture_logs() as logs:
        run = fetch(apis.apis)
        assert (await run.next()).names == {"EZ"}
    (ignored,) = [e for e in logs if e["event"] == "emotes.cache_ignored"]
    assert ignored["reason"] == "EmoteReplyError: cache file over 100 bytes"
