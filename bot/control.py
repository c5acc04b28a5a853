"""The bot's mutable state and every change to it, one method per action.

Chat commands and the web panel both call these methods, so an action behaves
the same whoever asks. Methods never raise on bad input: they return a `Reply`
saying what happened or why not. Users are named as typed and resolved to an
account seen in chat (`bot.chat.users`); mutes, nicknames and voices follow the
account, not the name.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from adapters.events import Platform
from bot.chat import outcomes
from bot.chat.mod_changes import ByName, SavedState, StateWriter, cap_entries, load_state
from bot.chat.policy import PolicyState, SpeakableItem, blocked_form, blocked_word_problem
from bot.chat.queue import SpeechQueue
from bot.chat.users import (
    Resolved,
    UserKey,
    key_text,
    parse_key,
    resolve_known,
    split_platform,
    user_handle,
)
from bot.config import Config, ReadMode
from engine.config import VOICE_NAME

log = structlog.get_logger()

READ_MODES: tuple[ReadMode, ...] = ("all", "command", "paid", "reward")


#: Cuts items in flight (None: whatever is playing) ending them with the given
#: outcome; returns whether anything was cut. Registered by the speaker.
class SpeakerSide(Protocol):
    """What control asks of the speaker, which is made later (once the engine is
    warm) and attached then."""

    def cut(self, items: Sequence[SpeakableItem] | None, outcome: str) -> bool:
        """Stop these items (None: whatever plays) if in flight; False if none was."""
        ...

    def follow_controls(self) -> None:
        """Take up the current pause and volume."""
        ...


#: How a refusal for a name never seen in chat starts (commands say it without the name).
NOT_SEEN = "unknown user"
#: How a refusal of a voice whose files are broken starts.
UNUSABLE_VOICE = "unusable voice"

#: Entry keys besides accounts ("twitch:123"): kept by name until that name chats,
#: and set in the config file (which only the file changes).
NAME_PREFIX = "name:"
CONFIG_PREFIX = "config:"
#: Words the panel may add to the blocked words (the config file's are not counted).
MAX_BLOCKED_WORDS = 500


@dataclass(frozen=True, slots=True)
class Entry:
    """One per-user setting as the panel lists it."""

    #: Whom it is for: an account ("twitch:123"), a name waiting to be seen in
    #: chat (`NAME_PREFIX`), or a name in the config file (`CONFIG_PREFIX`).
    key: str
    name: str
    #: The nickname or voice; "" for a mute.
    value: str = ""

    @property
    def editable(self) -> bool:
        return not self.key.startswith(CONFIG_PREFIX)


@dataclass(frozen=True, slots=True)
class Listing:
    """The first entries of a per-user list, and how many there are in all."""

    entries: list[Entry]
    total: int


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    text: str
    #: Said in chat; False for refusals to viewers, so trolls cannot make the bot spam.
    public: bool = True


class Control:
    def __init__(
        self,
        config: Config,
        queue: SpeechQueue,
        voice_names: Callable[[], Sequence[str]],
        voice_problem: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self._queue = queue
        self._voice_names = voice_names
        #: Why a voice cannot be used (broken files), None when it can.
        self._voice_problem = voice_problem
        self._writer = StateWriter(config.commands.state_path(), self._snapshot)
        saved = load_state(self._writer.path)
        self.voice = config.engine.default_voice
        self.volume = config.audio.volume
        self.policy_state = PolicyState(
            read_mode=config.policy.read_mode,
            muted=saved.muted,
            nicknames=saved.nicknames,
            user_voices=saved.user_voices,
            names=saved.names,
            muted_names=frozenset(user_handle(n) for n in config.policy.muted_users),
            name_nicknames={user_handle(k): v for k, v in config.policy.nicknames.items()},
            by_name=saved.by_name,
        )
        self.policy_state.on_change = self._save
        self.connections: dict[Platform, bool] = {}
        self.disconnects: dict[Platform, int] = {}
        self.crashes: dict[Platform, int] = {}
        self._speaker: SpeakerSide | None = None
        #: Blocked words as the policy uses them now: the config file's, then the
        #: panel's live changes (kept until the bot stops; the file is not written).
        self.blocked_words: list[str] = list(config.policy.blocked_words)
        self._follow_blocked: Callable[[Sequence[str]], None] | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        if saved.rewrite:
            self._save()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    def attach(self, speaker: SpeakerSide) -> None:
        """The speaker, once there is one: cuts and pause/volume changes reach it."""
        self._speaker = speaker
        speaker.follow_controls()

    def _changed(self) -> None:
        if self._speaker is not None:
            self._speaker.follow_controls()

    def _save(self) -> None:
        self._writer.save()

    def _snapshot(self) -> SavedState:
        state = self.policy_state
        keys = state.muted.keys() | state.nicknames.keys() | state.user_voices.keys()
        return SavedState(
            muted=dict(state.muted),
            nicknames=dict(state.nicknames),
            user_voices=dict(state.user_voices),
            names={k: v for k, v in state.names.items() if k in keys},
            by_name=ByName(
                muted=dict(state.by_name.muted),
                nicknames=dict(state.by_name.nicknames),
                user_voices=dict(state.by_name.user_voices),
            ),
        )

    def flush(self) -> None:
        """Write pending state changes now, blocking (writes are otherwise coalesced)."""
        self._writer.flush()

    async def close(self) -> None:
        """Write pending state changes; the app calls this at shutdown."""
        await self._writer.close()

    def _resolve(self, user: str) -> Resolved | Reply:
        """The account a typed name means: the one most recently seen in chat with it
        (`twitch:NAME` / `bilibili:NAME` pick the platform), else one the saved state names."""
        _, handle = split_platform(user)
        if not handle:
            return Reply(False, "usage: USER")
        state = self.policy_state
        found = state.seen.resolve(user) or resolve_known(user, state.names)
        if found is None:
            return Reply(False, f"{NOT_SEEN} {handle!r}: not seen in chat since the bot started")
        return found

    def _remember(
        self, found: Resolved, entries: dict[UserKey, str], value: str, what: str
    ) -> None:
        """Set one entry as the newest (the cap drops the oldest) and save."""
        entries.pop(found.key, None)
        entries[found.key] = value
        self.policy_state.names[found.key] = found.name
        cap_entries(entries, what)
        self._save()

    def _existing(self, user: str, entries: dict[UserKey, str]) -> Resolved | Reply:
        """The account an entry is kept for, by its saved name first (it may be
        offline or renamed since), else as `_resolve` finds it."""
        names = {k: self.policy_state.names.get(k, "") for k in entries}
        return resolve_known(user, names) or self._resolve(user)

    def cut(self, items: Sequence[SpeakableItem] | None, outcome: str) -> bool:
        """Ask the speaker to stop items in flight; False when none was playing."""
        return self._speaker is not None and self._speaker.cut(items, outcome)

    def _refuse_voice(self, name: str) -> Reply | None:
        """Why `name` cannot be chosen (unknown, or its files are broken); None if it can."""
        known = list(self._voice_names())
        if not VOICE_NAME.fullmatch(name) or name not in known:
            have = ", ".join(known) if known else "none installed"
            return Reply(False, f"unknown voice {name!r} (have: {have})")
        problem = self._voice_problem(name)
        if problem is not None:
            return Reply(False, f"{UNUSABLE_VOICE} {name!r}: {problem}")
        return None

    def set_voice(self, name: str) -> Reply:
        refused = self._refuse_voice(name)
        if refused is not None:
            return refused
        self.voice = name
        return Reply(True, f"voice is now {name}")

    def list_voices(self) -> Reply:
        known = [n for n in self._voice_names() if self._voice_problem(n) is None]
        if not known:
            return Reply(True, "no voices installed (add them to voices/)")
        return Reply(True, "voices: " + ", ".join(known) + f" (current: {self.voice})")

    def skip(self) -> Reply:
        if self.cut(None, outcomes.SKIPPED):
            return Reply(True, "skipped")
        return Reply(False, "nothing is playing")

    def clear(self) -> Reply:
        gone = self._queue.remove_where(lambda _: True, outcomes.SKIPPED, "cleared")
        return Reply(True, f"cleared {len(gone)} pending message(s)")

    def remove_pending(self, key: str) -> Reply:
        """Drop one waiting message, by its "platform:id" key (the panel's ✕)."""
        gone = self._queue.remove_where(
            lambda i: f"{i.message.platform.value}:{i.message.message_id}" == key,
            outcomes.SKIPPED,
            "removed",
        )
        if not gone:
            return Reply(False, f"no pending message {key!r}")
        return Reply(True, f"removed {key}")

    def pause(self) -> Reply:
        if self.paused:
            return Reply(False, "already paused")
        self._resumed.clear()
        self._changed()
        return Reply(True, "paused")

    def resume(self) -> Reply:
        if not self.paused:
            return Reply(False, "not paused")
        self._resumed.set()
        self._changed()
        return Reply(True, "resumed")

    def mute(self, user: str) -> Reply:
        handle = split_platform(user)[1]
        if not handle:
            return Reply(False, "usage: mute USER")
        found = self._resolve(user)
        if isinstance(found, Reply):
            return found
        self._remember(found, self.policy_state.muted, found.name, "muted")
        gone = self._queue.remove_where(
            lambda i: i.message.user_key == found.key, outcomes.SKIPPED, "muted"
        )
        return Reply(True, f"muted {handle} ({len(gone)} pending removed)")

    def unmute(self, user: str) -> Reply:
        state = self.policy_state
        handle = split_platform(user)[1]
        if handle in state.by_name.muted:
            del state.by_name.muted[handle]
            self._save()
            return Reply(True, f"unmuted {handle}")
        found = resolve_known(user, state.muted)
        if found is None:
            if handle in state.muted_names:
                return Reply(False, f"{handle} is muted in the config file (policy.muted_users)")
            return Reply(False, f"{handle} is not muted")
        del state.muted[found.key]
        self._save()
        return Reply(True, f"unmuted {handle}")

    def muted_list(self) -> list[str]:
        """Who is muted, as names for people: account mutes, then config and waiting names."""
        state = self.policy_state
        accounts = [f"{name} ({key[0].value})" for key, name in state.muted.items()]
        return sorted(accounts) + sorted(state.muted_names) + sorted(state.by_name.muted)

    def set_volume(self, volume: int) -> Reply:
        if not 0 <= volume <= 100:
            return Reply(False, f"volume must be 0-100, got {volume}")
        self.volume = volume
        self._changed()
        return Reply(True, f"volume {volume}")

    def set_mode(self, mode: str) -> Reply:
        for allowed in READ_MODES:
            if mode == allowed:
                self.policy_state.read_mode = allowed
                return Reply(True, f"read mode is now {allowed}")
        return Reply(False, f"mode must be one of {', '.join(READ_MODES)}, got {mode!r}")

    def set_nick(self, user: str, nick: str) -> Reply:
        handle = split_platform(user)[1]
        nick = " ".join(nick.split())
        if not handle:
            return Reply(False, "usage: nick USER NAME")
        state = self.policy_state
        if not nick:
            if state.by_name.nicknames.pop(handle, None) is not None:
                self._save()
                return Reply(True, f"{handle} has no nickname now")
            found = self._existing(user, state.nicknames)
            if isinstance(found, Reply):
                return found
            if state.nicknames.pop(found.key, None) is not None:
                self._save()
            return Reply(True, f"{handle} has no nickname now")
        found = self._resolve(user)
        if isinstance(found, Reply):
            return found
        self._remember(found, state.nicknames, nick, "nicknames")
        return Reply(True, f"{handle} will be read as {nick}")

    def set_user_voice(self, user: str, voice: str | None) -> Reply:
        """A user's own voice (None: back to the current voice)."""
        handle = split_platform(user)[1]
        if not handle:
            return Reply(False, "usage: uservoice USER NAME|off")
        state = self.policy_state
        if voice is None:
            if state.by_name.user_voices.pop(handle, None) is not None:
                self._save()
                return Reply(True, f"{handle} uses the current voice again")
            found = self._existing(user, state.user_voices)
            if isinstance(found, Reply):
                return found
            if state.user_voices.pop(found.key, None) is not None:
                self._save()
            return Reply(True, f"{handle} uses the current voice again")
        refused = self._refuse_voice(voice)
        if refused is not None:
            return refused
        found = self._resolve(user)
        if isinstance(found, Reply):
            return found
        self._remember(found, state.user_voices, voice, "user_voices")
        return Reply(True, f"{handle} now speaks as {voice}")

    # The panel's own ways in: per-user settings by the key of the entry shown,
    # blocked words, and the queue's order.
    def _entry_target(self, key: str) -> UserKey | str | Reply:
        """An entry key as the account it names, or the handle of a by-name entry."""
        if key.startswith(CONFIG_PREFIX):
            return Reply(False, f"{key.removeprefix(CONFIG_PREFIX)} is set in the config file")
        if key.startswith(NAME_PREFIX):
            handle = user_handle(key.removeprefix(NAME_PREFIX))
            return handle or Reply(False, f"no user in {key!r}")
        account = parse_key(key)
        if account is None:
            return Reply(False, f"{key!r} names no account (expected PLATFORM:ID)")
        return account

    def _name_of(self, key: UserKey) -> str:
        return self.policy_state.names.get(key) or key[1]

    def unmute_key(self, key: str) -> Reply:
        """Unmute one entry of `muted_entries` by its key (the panel's Unmute)."""
        state = self.policy_state
        target = self._entry_target(key)
        if isinstance(target, Reply):
            return target
        if isinstance(target, str):
            if target not in state.by_name.muted:
                return Reply(False, f"{target} is not muted")
            del state.by_name.muted[target]
        else:
            if target not in state.muted:
                return Reply(False, f"{key} is not muted")
            del state.muted[target]
        self._save()
        whom = target if isinstance(target, str) else self._name_of(target)
        return Reply(True, f"unmuted {whom}")

    def _set_by_key(
        self,
        key: str,
        value: str | None,
        entries: dict[UserKey, str],
        waiting: dict[str, str],
        what: str,
    ) -> tuple[str, Reply | None]:
        """Set (or, with None, remove) one entry by key; (whom, a refusal or None)."""
        target = self._entry_target(key)
        if isinstance(target, Reply):
            return "", target
        if isinstance(target, str):
            # Only a name already waiting (a row the panel listed) is changed by key;
            # a new name comes through `set_nick`/`set_user_voice`, with their checks.
            if target not in waiting:
                return "", Reply(False, f"{key} is not in the list (set it by name)")
            if value is None:
                del waiting[target]
            else:
                waiting[target] = value
            self._save()
            return target, None
        name = self._name_of(target)
        if value is None:
            if entries.pop(target, None) is not None:
                self._save()
            return name, None
        if target not in self.policy_state.names:
            return "", Reply(False, f"{key} is not an account the bot knows (set it by name)")
        self._remember(Resolved(target, name), entries, value, what)
        return name, None

    def set_nick_key(self, key: str, nick: str) -> Reply:
        """A nickname for an entry's account ("" removes it)."""
        nick = " ".join(nick.split())
        state = self.policy_state
        whom, refused = self._set_by_key(
            key, nick or None, state.nicknames, state.by_name.nicknames, "nicknames"
        )
        if refused is not None:
            return refused
        if not nick:
            return Reply(True, f"{whom} has no nickname now")
        return Reply(True, f"{whom} will be read as {nick}")

    def set_user_voice_key(self, key: str, voice: str | None) -> Reply:
        """A voice for an entry's account (None: back to the current voice)."""
        if voice is not None and (refused := self._refuse_voice(voice)) is not None:
            return refused
        state = self.policy_state
        whom, refused = self._set_by_key(
            key, voice, state.user_voices, state.by_name.user_voices, "user_voices"
        )
        if refused is not None:
            return refused
        if voice is None:
            return Reply(True, f"{whom} uses the current voice again")
        return Reply(True, f"{whom} now speaks as {voice}")

    def muted_entries(self, limit: int) -> Listing:
        """Who is muted, newest first: accounts, names waiting to be seen, the config
        file's; at most `limit` of them (the panel shows them 4 times a second)."""
        state = self.policy_state
        entries = itertools.chain(
            (Entry(key_text(k), name) for k, name in reversed(state.muted.items())),
            (Entry(NAME_PREFIX + h, h) for h in reversed(state.by_name.muted)),
            (Entry(CONFIG_PREFIX + h, h) for h in sorted(state.muted_names)),
        )
        total = len(state.muted) + len(state.by_name.muted) + len(state.muted_names)
        return Listing(list(itertools.islice(entries, limit)), total)

    def nickname_entries(self, limit: int) -> Listing:
        state = self.policy_state
        entries = itertools.chain(
            (Entry(key_text(k), self._name_of(k), v) for k, v in reversed(state.nicknames.items())),
            (Entry(NAME_PREFIX + h, h, v) for h, v in reversed(state.by_name.nicknames.items())),
            (Entry(CONFIG_PREFIX + h, h, v) for h, v in sorted(state.name_nicknames.items())),
        )
        total = len(state.nicknames) + len(state.by_name.nicknames) + len(state.name_nicknames)
        return Listing(list(itertools.islice(entries, limit)), total)

    def user_voice_entries(self, limit: int) -> Listing:
        state = self.policy_state
        by_name = state.by_name.user_voices
        entries = itertools.chain(
            (
                Entry(key_text(k), self._name_of(k), v)
                for k, v in reversed(state.user_voices.items())
            ),
            (Entry(NAME_PREFIX + h, h, v) for h, v in reversed(by_name.items())),
        )
        total = len(state.user_voices) + len(by_name)
        return Listing(list(itertools.islice(entries, limit)), total)

    def follow_blocked_words(self, apply: Callable[[Sequence[str]], None]) -> None:
        """Who uses the blocked words (the policy): given them on every change."""
        self._follow_blocked = apply

    def block_word(self, word: str) -> Reply:
        """Block a word from now on, until the bot stops (the config file is not written)."""
        word = " ".join(word.split())
        problem = blocked_word_problem(word)
        if problem is not None:
            return Reply(False, problem)
        form = blocked_form(word)
        if any(blocked_form(w) == form for w in self.blocked_words):
            return Reply(False, f"{word!r} is blocked already")
        if len(self.blocked_words) >= MAX_BLOCKED_WORDS:
            return Reply(False, f"at most {MAX_BLOCKED_WORDS} blocked words")
        self.blocked_words = [*self.blocked_words, word]  # a new list: users see a change
        self._blocked_changed()
        return Reply(True, f"blocked {word!r} until the bot stops")

    def unblock_word(self, word: str) -> Reply:
        form = blocked_form(" ".join(word.split()))
        kept = [w for w in self.blocked_words if blocked_form(w) != form]
        if len(kept) == len(self.blocked_words):
            return Reply(False, f"{word!r} is not blocked")
        self.blocked_words = kept
        self._blocked_changed()
        return Reply(True, f"unblocked {word!r} until the bot stops")

    def _blocked_changed(self) -> None:
        log.info("policy.blocked_words", count=len(self.blocked_words))
        if self._follow_blocked is not None:
            self._follow_blocked(self.blocked_words)

    def play_next(self, key: str) -> Reply:
        """Move one waiting message to the front of the queue (the panel's "next")."""
        target = parse_key(key)
        if target is None or not self._queue.move_to_front(target):
            return Reply(False, f"no pending message {key!r}")
        return Reply(True, "moved to the front: it plays next")

    def set_connection(self, platform: Platform, connected: bool) -> None:
        if not connected and self.connections.get(platform):
            self.disconnects[platform] = self.disconnects.get(platform, 0) + 1
        self.connections[platform] = connected

    def adapter_crashed(self, platform: Platform) -> None:
        """A platform's adapter task crashed (it is restarted): counted for /metrics."""
        self.crashes[platform] = self.crashes.get(platform, 0) + 1

    def status(self) -> Reply:
        links = ", ".join(
            f"{p.value} {'connected' if up else 'disconnected'}"
            for p, up in sorted(self.connections.items())
        )
        parts = [
            "paused" if self.paused else "playing",
            f"voice {self.voice}",
            f"volume {self.volume}",
            f"mode {self.policy_state.read_mode}",
            f"queue {len(self._queue)}",
            f"muted {len(self.muted_list())}",
        ]
        if links:
            parts.append(links)
        return Reply(True, " | ".join(parts))
