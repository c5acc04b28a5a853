"""The bot's mutable state and every change to it, one method per action.

Chat commands and the web panel both call these methods, so an action behaves
the same whoever asks. Methods never raise on bad input: they return a `Reply`
saying what happened or why not. Users are named as typed and resolved to an
account seen in chat (`bot.chat.users`); mutes, nicknames and voices follow the
account, not the name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from adapters.events import Platform
from bot.chat import outcomes
from bot.chat.mod_changes import ByName, SavedState, StateWriter, cap_entries, load_state
from bot.chat.policy import PolicyState, SpeakableItem
from bot.chat.queue import SpeechQueue
from bot.chat.users import Resolved, UserKey, resolve_known, split_platform, user_handle
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
    ) -> None:
        self._queue = queue
        self._voice_names = voice_names
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

    def set_voice(self, name: str) -> Reply:
        known = list(self._voice_names())
        if not VOICE_NAME.fullmatch(name) or name not in known:
            have = ", ".join(known) if known else "none installed"
            return Reply(False, f"unknown voice {name!r} (have: {have})")
        self.voice = name
        return Reply(True, f"voice is now {name}")

    def list_voices(self) -> Reply:
        known = list(self._voice_names())
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
        known = list(self._voice_names())
        if not VOICE_NAME.fullmatch(voice) or voice not in known:
            have = ", ".join(known) if known else "none installed"
            return Reply(False, f"unknown voice {voice!r} (have: {have})")
        found = self._resolve(user)
        if isinstance(found, Reply):
            return found
        self._remember(found, state.user_voices, voice, "user_voices")
        return Reply(True, f"{handle} now speaks as {voice}")

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
