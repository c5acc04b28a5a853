"""The speaker loop: queue → engine → player, one item of look-ahead.

While one message plays, the next is already being synthesised, so the gap
between messages is the playback gap, not the synthesis time. Every item it
takes from the queue ends here in exactly one of `tts.spoken`,
`tts.skipped` or `tts.retracted`; `tts.spoken` carries the `text` exactly as
the engine was given it, and its `speed` when the queue's pace was not 1.

Each line is prepared at the pace the queue gives when it is taken
(bot/chat/pacing.py): faster, without its announcement or shorter when chat is
busy. The speaking rate the pacer estimates from is measured here, from every
line said in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog

from adapters.events import ChatMessage, EventKind, Platform
from bot.audio.player import Player
from bot.chat import outcomes
from bot.chat.pacing import line_for
from bot.chat.policy import SpeakableItem
from bot.chat.queue import SpeechQueue
from bot.control import Control
from bot.remote_engine import EngineUnavailable
from engine.audio import SAMPLE_RATE
from engine.worker import SynthesisStalled

log = structlog.get_logger()

_END = object()


class VoiceNames(Protocol):
    def names(self) -> list[str]: ...


class SpeechEngine(Protocol):
    """What the speaker asks of an engine: the local one (engine/synth.py) or an
    engine server's client (bot/remote_engine.py)."""

    @property
    def voices(self) -> VoiceNames: ...

    @property
    def state(self) -> str: ...

    async def wait_available(self) -> None: ...

    def stream(
        self,
        text: str,
        voice: str,
        seed: int | None = None,
        *,
        preview: bool = False,
        speed: float = 1.0,
    ) -> AsyncGenerator[np.ndarray, None]: ...


@dataclass
class _Prepared:
    item: SpeakableItem
    voice: str
    #: The line as the engine is given it, and the pace it is said at.
    text: str = ""
    speed: float = 1.0
    chunks: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    synth_started: float = 0.0
    synth_s: float | None = None
    playing_since: float | None = None
    audio_s: float = 0.0
    #: Set when cut: (terminal event, reason).
    ended: tuple[str, str] | None = None
    utt: int | None = None


def line_kind(message: ChatMessage) -> str:
    """What kind of line it is, for the overlay's style: the paid kind (bits,
    superchat, gift, guard, sub), else the event (sub, raid, gift, guard), else
    "reward" for a channel-point redemption, else "chat"."""
    if message.paid is not None:
        return message.paid.kind.value
    if message.event is not EventKind.CHAT:
        return message.event.value
    return "reward" if message.reward_id else "chat"


class PreviewBusy(Exception):
    """A preview is being made already: one at a time."""


class Speaker:
    def __init__(
        self, queue: SpeechQueue, engine: SpeechEngine, player: Player, control: Control
    ) -> None:
        self._queue = queue
        self._engine = engine
        self._player = player
        self._control = control
        self._current: _Prepared | None = None
        self._next: _Prepared | None = None
        self._previous_user: tuple[Platform, str] | None = None
        #: Cuts for items taken from the queue but not yet prepared (the look-ahead
        #: pop is a task: a retraction can land between its pop and its preparation).
        self._early_cuts: dict[tuple[Platform, str], tuple[str, str]] = {}
        self._previewing = asyncio.Lock()
        control.attach(self)

    async def preview(self, text: str, voice: str) -> np.ndarray:
        """The streamer's try-out of a voice, never on air: the engine makes it after
        speech on air (its preview jobs), one at a time (else PreviewBusy). A caller
        that leaves early (the page went away) stops it at the next sampling step."""
        if self._previewing.locked():
            raise PreviewBusy
        async with self._previewing:
            chunks = [c async for c in self._engine.stream(text, voice, preview=True)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    async def run(self) -> None:
        try:
            while True:
                await self._control.wait_resumed()
                prepared = self._next
                self._next = None
                if prepared is None:
                    await self._queue.wait_ready()
                    # An engine server out of reach: what waits stays queued (its TTL
                    # still counts) until the engine is back.
                    await self._engine.wait_available()
                    # Paused meanwhile: what waits is chosen at resume, by priority
                    # then, not by which line came first during the pause.
                    item = None if self._control.paused else self._queue.pop_nowait()
                    if item is None:
                        continue
                    prepared = self._prepare(item)
                await self._play(prepared)
        finally:
            if self._next is not None:
                self._end(self._next, outcomes.SKIPPED, "shutdown")
                self._next = None

    @property
    def now_playing(self) -> dict[str, object] | None:
        """What is on air now, for the panel and the overlay."""
        p = self._current
        if p is None or p.ended is not None or p.playing_since is None:
            return None
        message = p.item.message
        return {
            "id": f"{message.platform.value}:{message.message_id}",
            "platform": message.platform.value,
            "user": p.item.user,
            "text": p.item.text,
            "kind": line_kind(message),
            "spoken": p.item.spoken,
            "voice": p.voice,
            "elapsed_s": round(time.monotonic() - p.playing_since, 2),
            "audio_s": round(p.audio_s, 2),
        }

    def follow_controls(self) -> None:
        self._player.set_paused(self._control.paused)
        self._player.set_volume(self._control.volume / 100)

    def _prepare(self, item: SpeakableItem) -> _Prepared:
        voice = item.voice if item.voice in self._engine.voices.names() else self._control.voice
        prepared = _Prepared(item, voice)
        early = self._early_cuts.pop(item.key, None)
        if early is not None:
            prepared.ended = early
            prepared.chunks.put_nowait(_END)
            return prepared
        before = (
            self._previous_user if self._current is None else self._current.item.message.user_key
        )
        pace = self._queue.pace()
        prepared.text = line_for(item, before, pace)
        prepared.speed = pace.speed
        prepared.task = asyncio.create_task(self._synthesise(prepared))
        return prepared

    async def _synthesise(self, prepared: _Prepared) -> None:
        stream = self._engine.stream(prepared.text, prepared.voice, speed=prepared.speed)
        prepared.synth_started = time.monotonic()
        try:
            async for chunk in stream:
                prepared.chunks.put_nowait(chunk)
            prepared.synth_s = time.monotonic() - prepared.synth_started
        except Exception as exc:
            prepared.chunks.put_nowait(exc)
        finally:
            await stream.aclose()
            prepared.chunks.put_nowait(_END)

    async def _play(self, prepared: _Prepared) -> None:
        self._current = prepared
        item = prepared.item
        utt = prepared.utt = self._player.begin()
        samples = 0
        lookahead: asyncio.Task[SpeakableItem] | None = None
        try:
            while prepared.ended is None:
                chunk = await prepared.chunks.get()
                if chunk is _END:
                    break
                if isinstance(chunk, Exception):
                    prepared.ended = (outcomes.SKIPPED, _skip_reason(chunk))
                    break
                assert isinstance(chunk, np.ndarray)
                await self._player.write(utt, chunk)
                if not samples:
                    prepared.playing_since = time.monotonic()
                    log.info("tts.playing", msg_id=item.message.message_id, voice=prepared.voice)
                samples += len(chunk)
                prepared.audio_s = samples / SAMPLE_RATE
            self._player.finish(utt)
            done = asyncio.create_task(self._player.wait_done(utt))
            # Synthesis of this item is over: prepare the next while this one plays.
            if self._next is None and prepared.ended is None and not self._control.paused:
                lookahead = asyncio.create_task(self._take_when_available())
                await asyncio.wait({done, lookahead}, return_when=asyncio.FIRST_COMPLETED)
                if lookahead.done():
                    self._next = self._prepare(lookahead.result())
            await done
        except asyncio.CancelledError:
            if prepared.ended is None:
                prepared.ended = (outcomes.SKIPPED, "shutdown")
                self._player.cut(utt)
            popped = lookahead is not None and lookahead.done() and not lookahead.cancelled()
            if popped and lookahead is not None and self._next is None:
                # Taken from the queue but never prepared: it ends here too.
                outcomes.log_outcome(
                    outcomes.SKIPPED, lookahead.result().message, reason="shutdown"
                )
                self._queue.done(lookahead.result())
            self._end(prepared, *prepared.ended)
            raise
        finally:
            if lookahead is not None and not lookahead.done():
                lookahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lookahead
            self._current = None
        if prepared.ended is not None:
            self._end(prepared, *prepared.ended)
        else:
            first = self._player.first_sample_time(utt)
            ttfa = (first - item.message.received) * 1000 if first is not None else None
            audio_s = samples / SAMPLE_RATE
            paced = {"speed": prepared.speed} if prepared.speed != 1.0 else {}
            outcomes.log_outcome(
                outcomes.SPOKEN,
                item.message,
                voice=prepared.voice,
                text=prepared.text,
                audio_s=round(audio_s, 3),
                ttfa_ms=round(ttfa, 1) if ttfa is not None else None,
                synth_s=round(prepared.synth_s, 3) if prepared.synth_s is not None else None,
                **paced,
            )
            self._queue.pacer.observe(prepared.text, audio_s, prepared.speed)
            self._queue.done(item)
            self._previous_user = item.message.user_key
        self._player.forget(utt)

    async def _take_when_available(self) -> SpeakableItem:
        """The next item, taken only while the engine can make it."""
        while True:
            await self._engine.wait_available()
            await self._queue.wait_ready()
            if self._engine.state != "unavailable":
                return await self._queue.get()

    @property
    def engine_state(self) -> str:
        """ "local", or an engine server's "up" / "unavailable" (the panel shows it)."""
        return self._engine.state

    def _end(self, prepared: _Prepared, event: str, reason: str) -> None:
        if prepared.task is not None:
            prepared.task.cancel()
        outcomes.log_outcome(event, prepared.item.message, voice=prepared.voice, reason=reason)
        self._queue.done(prepared.item)

    def cut(self, items: Sequence[SpeakableItem] | None, event: str) -> bool:
        """Control's cut: None is a skip of what plays; else these items, wherever they are."""
        reason = (
            "skip" if items is None else ("retracted" if event == outcomes.RETRACTED else "cut")
        )
        targets = [self._current] if items is None else [self._current, self._next]
        keys = None if items is None else {i.key for i in items}
        cut = False
        held = {p.item.key for p in targets if p is not None}
        for key in (keys or set()) - held:
            self._early_cuts[key] = (event, reason)
            cut = True
        for p in targets:
            if p is None or p.ended is not None:
                continue
            if keys is not None and p.item.key not in keys:
                continue
            p.ended = (event, reason)
            if p.task is not None:
                p.task.cancel()
            if p is self._current:
                if p.utt is not None:
                    self._player.cut(p.utt)
                p.chunks.put_nowait(_END)
            else:
                self._next = None
                self._end(p, event, reason)
            cut = True
        return cut


def _skip_reason(error: Exception) -> str:
    """Why a line the engine could not make was skipped (`tts.skipped`'s reason)."""
    if isinstance(error, EngineUnavailable):
        return "engine_unavailable"
    if isinstance(error, SynthesisStalled):
        return "engine_stalled"
    return "engine_error"
