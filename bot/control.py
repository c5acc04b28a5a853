"""The bot's mutable state and every change to it, one method per action.

Chat commands and (later) the web panel both call these methods, so an action
behaves the same whoever asks. Methods never raise on bad input: they return
a `Reply` saying what happened or why not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from adapters.events import Platform
from bot import outcomes
from bot.config import VOICE_NAME, Config, ReadMode
from bot.policy import PolicyState, SpeakableItem, user_handle
from bot.queue import SpeechQueue
from bot.state import SavedState, load_state, save_state

log = structlog.get_logger()

READ_MODES: tuple[ReadMode, ...] = ("all", "command", "paid")

#: Cuts items in flight (None: whatever is playing) ending them with the given
#: outcome; returns whether anything was cut. Registered by the speaker.
CutHandler = Callable[[Sequence[SpeakableItem] | None, str], bool]


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
        self._state_path = config.commands.state_path()
        saved = load_state(self._state_path)
        self.voice = config.engine.default_voice
        self.volume = config.audio.volume
        self.policy_state = PolicyState(
            read_mode=config.policy.read_mode,
            muted={user_handle(n) for n in (*config.policy.muted_users, *saved.muted)},
            nicknames={
                user_handle(k): v
                for k, v in (*config.policy.nicknames.items(), *saved.nicknames.items())
            },
            user_voices=dict(saved.user_voices),
        )
        self._configured_mutes = {user_handle(n) for n in config.policy.muted_users}
        self._configured_nicks = {user_handle(k): v for k, v in config.policy.nicknames.items()}
        self.connections: dict[Platform, bool] = {}
        self.disconnects: dict[Platform, int] = {}
        self.crashes: dict[Platform, int] = {}
        self._cut_handlers: list[CutHandler] = []
        self._listeners: list[Callable[[], None]] = []
        self._resumed = asyncio.Event()
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    def on_cut(self, handler: CutHandler) -> None:
        self._cut_handlers.append(handler)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Called after pause, resume and volume changes (the player follows them)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def _save(self) -> None:
        state = self.policy_state
        save_state(
            self._state_path,
            SavedState(
                user_voices=dict(state.user_voices),
                nicknames={
                    k: v for k, v in state.nicknames.items() if self._configured_nicks.get(k) != v
                },
                muted=sorted(state.muted - self._configured_mutes),
            ),
        )

    def cut(self, items: Sequence[SpeakableItem] | None, outcome: str) -> bool:
        """Ask the speaker to stop items in flight; False when none was playing."""
        return any([handler(items, outcome) for handler in self._cut_handlers])

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
        handle = user_handle(user)
        if not handle:
            return Reply(False, "usage: mute USER")
        self.policy_state.muted.add(handle)
        gone = self._queue.remove_where(
            lambda i: user_handle(i.message.user_name) == handle, outcomes.SKIPPED, "muted"
        )
        self._save()
        return Reply(True, f"muted {handle} ({len(gone)} pending removed)")

    def unmute(self, user: str) -> Reply:
        handle = user_handle(user)
        if handle not in self.policy_state.muted:
            return Reply(False, f"{handle} is not muted")
        self.policy_state.muted.discard(handle)
        self._save()
        return Reply(True, f"unmuted {handle}")

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
        handle = user_handle(user)
        nick = " ".join(nick.split())
        if not handle:
            return Reply(False, "usage: nick USER NAME")
        if not nick:
            self.policy_state.nicknames.pop(handle, None)
            self._save()
            return Reply(True, f"{handle} has no nickname now")
        self.policy_state.nicknames[handle] = nick
        self._save()
        return Reply(True, f"{handle} will be read as {nick}")

    def set_user_voice(self, user: str, voice: str | None) -> Reply:
        """A user's own voice (None: back to the current voice)."""
        handle = user_handle(user)
        if not handle:
            return Reply(False, "usage: uservoice USER NAME|off")
        if voice is None:
            self.policy_state.user_voices.pop(handle, None)
            self._save()
            return Reply(True, f"{handle} uses the current voice again")
        known = list(self._voice_names())
        if not VOICE_NAME.fullmatch(voice) or voice not in known:
            have = ", ".join(known) if known else "none installed"
            return Reply(False, f"unknown voice {voice!r} (have: {have})")
        self.policy_state.user_voices[handle] = voice
        self._save()
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
            f"muted {len(self.policy_state.muted)}",
        ]
        if links:
            parts.append(links)
        return Reply(True, " | ".join(parts))
