"""The bot's speech for browser pages: the OBS overlay with `?audio=1`.

The player hands each utterance's chunks here as it queues them for its own
output, already loudness-normalised, limited and faded in: a page gets exactly
what the device path plays. What the device applies in its callback (pause,
volume, a skip's fade-out) goes along as control messages, which each page
applies itself. Every page has its own bounded queue: one that does not keep up
is dropped (it reconnects and picks up the line in progress where the bot is),
never waited for, so a page can neither hold up the speaker nor the loop.

Wire format: one WebSocket per page (`/api/audio`), server to page only.

- Text frames are JSON objects with a `type`:
  - `hello` {version, rate, paused, volume, fade_out_ms}: first on every
    connection; the page drops whatever it still holds and starts afresh.
  - `begin` {utt, rate, joined}: an utterance starts; `joined` when the page came
    in part-way through it (the rest of it follows; the page fades it in).
  - `end` {utt}: no more audio for it (silence after this is not a gap).
  - `cut` {utt, fade_ms}: a skip: fade it out over `fade_ms` and drop the rest.
  - `pause` {paused}, `volume` {volume}: volume is a gain from 0 to 1.
- Binary frames carry the audio: an 8-byte header, the utterance id and the
  frame's sequence number within it for this page (both uint32, little-endian),
  then mono 16-bit little-endian PCM at the `rate` of the utterance's `begin`,
  at most `FRAME_SAMPLES` samples.

The rate is the player's own (48 kHz, what OBS mixes at, unless a device
insists on another): the limiter's output goes out sample for sample, with no
resampling after it that could push a peak over the ceiling.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from engine.audio import to_pcm16

log = structlog.get_logger()

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<II")
#: Samples per binary frame (50 ms at 48 kHz).
FRAME_SAMPLES = 2400
#: Pages listening at once; one more is refused.
MAX_LISTENERS = 8
#: Audio a page may have waiting to be sent before it is dropped. The player
#: queues up to 20 s ahead of what plays, so a page that keeps up never gets near it.
MAX_QUEUED_S = 30.0

Message = bytes | str
#: The audio of an utterance the player still holds (not yet played), by utterance id.
Pending = Callable[[int], np.ndarray]


def encode_audio(utt: int, seq: int, pcm: bytes) -> bytes:
    """One binary frame: the header, then 16-bit PCM bytes."""
    return HEADER.pack(utt & 0xFFFFFFFF, seq & 0xFFFFFFFF) + pcm


def decode_audio(frame: bytes) -> tuple[int, int, np.ndarray]:
    """A binary frame → (utterance id, sequence number, float32 samples)."""
    if len(frame) < HEADER.size or (len(frame) - HEADER.size) % 2:
        raise ValueError(f"not an audio frame ({len(frame)} bytes)")
    utt, seq = HEADER.unpack_from(frame)
    pcm = np.frombuffer(frame, dtype="<i2", offset=HEADER.size)
    return utt, seq, pcm.astype(np.float32) / 32768.0


def control(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


class Listener:
    """One page's queue of frames, bounded by the audio it holds."""

    def __init__(self, limit_bytes: int, owner: str = "") -> None:
        self.limit_bytes = limit_bytes
        #: The page's address.
        self.owner = owner
        self.dropped = False
        #: Why it was dropped: "too_slow", or "stopping" (the server is).
        self.reason = ""
        self._items: deque[Message] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._seq = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, item: Message) -> bool:
        """Queue a frame; False (and the listener dropped) when it would go over its bound."""
        if self.dropped:
            return False
        size = len(item)
        if self._bytes + size > self.limit_bytes:
            self.drop()
            return False
        self._items.append(item)
        self._bytes += size
        self._ready.set()
        return True

    def put_audio(self, utt: int, pcm: bytes) -> bool:
        for start in range(0, len(pcm), FRAME_SAMPLES * 2):
            if not self.put(encode_audio(utt, self._seq, pcm[start : start + FRAME_SAMPLES * 2])):
                return False
            self._seq += 1
        return True

    def begin(self, utt: int, rate: int, joined: bool) -> bool:
        self._seq = 0
        return self.put(control("begin", utt=utt, rate=rate, joined=joined))

    def drop(self, reason: str = "too_slow") -> None:
        """No more frames: the page is told to go (it reconnects and starts afresh)."""
        if not self.dropped:
            self.reason = reason
        self.dropped = True
        self._items.clear()
        self._bytes = 0
        self._ready.set()

    async def get(self) -> Message | None:
        """The next frame, waiting for one; None once the listener is dropped."""
        while not self._items:
            if self.dropped:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        self._bytes -= len(item)
        return item


class Broadcast:
    """Shaped audio and its controls, to every listening page.

    Called by the player on the event loop only: `begin`/`audio`/`end`/`cut` per
    utterance, `pause` and `volume` when they change. `pending` gives what the
    player still holds of an utterance, for a page that joins part-way through.
    """

    def __init__(
        self,
        pending: Pending,
        *,
        rate: int,
        volume: float,
        fade_out_ms: float,
        max_listeners: int = MAX_LISTENERS,
        max_queued_s: float = MAX_QUEUED_S,
    ) -> None:
        self._pending = pending
        self.rate = rate
        self.volume = volume
        self.paused = False
        self.fade_out_ms = fade_out_ms
        self.max_listeners = max_listeners
        self.max_queued_s = max_queued_s
        self.listeners: list[Listener] = []
        #: The utterance pages were last told about, whether it has ended, whether cut.
        self._utt: int | None = None
        self._ended = False
        self._cut = False

    # pages ----------------------------------------------------------------------
    def listen(self, owner: str = "") -> Listener | None:
        """A new page's listener, primed with the state and the line in progress;
        None when `max_listeners` pages listen already."""
        if len(self.listeners) >= self.max_listeners:
            return None
        # 16-bit samples, frame headers and a little room for the control messages.
        listener = Listener(int(self.max_queued_s * self.rate * 2 * 1.01) + 4096, owner)
        listener.put(
            control(
                "hello",
                version=PROTOCOL_VERSION,
                rate=self.rate,
                paused=self.paused,
                volume=round(self.volume, 4),
                fade_out_ms=self.fade_out_ms,
            )
        )
        if self._utt is not None and not self._cut:
            rest = self._pending(self._utt)
            if len(rest):
                listener.begin(self._utt, self.rate, joined=True)
                listener.put_audio(self._utt, to_pcm16(rest))
                if self._ended:
                    listener.put(control("end", utt=self._utt))
        self.listeners.append(listener)
        return listener

    def leave(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def close(self) -> None:
        """Every page is told to go (the server is stopping)."""
        for listener in self.listeners:
            listener.drop("stopping")
        self.listeners.clear()

    # the player's side ----------------------------------------------------------------
    def audio(self, utt: int, samples: np.ndarray, rate: int) -> None:
        """A shaped chunk of `utt` at `rate`; the first one begins the utterance."""
        if utt != self._utt:
            self._utt, self._ended, self._cut = utt, False, False
            self.rate = rate
            self._each(lambda listener: listener.begin(utt, rate, joined=False))
        if not self.listeners:
            return
        pcm = to_pcm16(samples)
        self._each(lambda listener: listener.put_audio(utt, pcm))

    def end(self, utt: int) -> None:
        if utt == self._utt and not self._ended:
            self._ended = True
            self._send(control("end", utt=utt))

    def cut(self, utt: int) -> None:
        if utt == self._utt and not self._cut:
            self._ended = self._cut = True
            self._send(control("cut", utt=utt, fade_ms=self.fade_out_ms))

    def pause(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self._send(control("pause", paused=paused))

    def set_volume(self, volume: float) -> None:
        if volume != self.volume:
            self.volume = volume
            self._send(control("volume", volume=round(volume, 4)))

    def _send(self, message: str) -> None:
        self._each(lambda listener: listener.put(message))

    def _each(self, put: Callable[[Listener], bool]) -> None:
        for listener in list(self.listeners):
            if not put(listener):
                self.listeners.remove(listener)
                log.warning(
                    "audio.listener_dropped",
                    reason="too_slow",
                    limit_s=self.max_queued_s,
                    listeners=len(self.listeners),
                )
