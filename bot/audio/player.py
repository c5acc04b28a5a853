"""Audio output: a PortAudio callback stream fed from a bounded buffer.

The asyncio side hands over whole utterance chunks (already loudness-normalised,
limited and faded in); PortAudio's own thread pulls samples in its callback.
The callback never blocks and never invents sound: an underrun plays silence.
Skips, pauses and stops fade out over a few milliseconds; volume changes ramp.
A device that fails or disappears is reopened with backoff; what is buffered
waits meanwhile.

Every shaped chunk also goes to the browser pages listening (`broadcast`,
bot/audio/browser.py), with the pause, volume and skips they apply themselves.
With `audio.output_device: none` there is no device: a clock on the loop pulls
the buffer at the output rate instead, so what waits on playback (the speaker's
`wait_done`, `first_sample_time`) keeps the pace of the pages' audio.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from adapters.reconnect import Backoff, describe
from bot.audio import loudness
from bot.audio.alsa import route_alsa_errors
from bot.audio.browser import Broadcast
from bot.config import NO_DEVICE, AudioConfig
from engine.audio import SAMPLE_RATE, resample

log = structlog.get_logger()

#: OBS runs at 48 kHz; used when the device accepts it, else the device's default.
PREFERRED_RATE = 48_000
#: Most audio held ahead of the device (the speaker waits for room beyond this).
BUFFER_SECONDS = 20.0
VOLUME_RAMP_S = 0.05
#: A pause at least this long before a device check and reopen.
DEVICE_POLL_S = 0.1
DEVICE_BACKOFF = Backoff(base_s=0.5, cap_s=10.0, jitter_s=0.2, stable_s=5.0)
#: How often the clock pulls the buffer when there is no device.
CLOCK_TICK_S = 0.01
#: Most the clock catches up at once after the loop was held up.
CLOCK_MAX_CATCH_UP_S = 1.0


class AudioDeviceError(Exception):
    """The configured output device does not exist or cannot be used."""


def _sounddevice() -> Any:
    """PortAudio, with ALSA's chatter routed into the log before it starts (bot/audio/alsa.py)."""
    route_alsa_errors()
    import sounddevice

    return sounddevice


def find_output_device(spec: str | int | None) -> int | None:
    """Config's audio.output_device → a PortAudio index (None: system default)."""
    sd = _sounddevice()

    devices = sd.query_devices()
    outputs = [(i, d["name"]) for i, d in enumerate(devices) if d["max_output_channels"] > 0]
    if spec is None:
        return None
    if isinstance(spec, int):
        if any(i == spec for i, _ in outputs):
            return spec
    else:
        for index, name in outputs:
            if spec.casefold() in str(name).casefold():
                return index
    have = ", ".join(f"{i}: {n}" for i, n in outputs) or "none"
    raise AudioDeviceError(
        f"output device {spec!r} not found (have: {have}); see `ishowtts devices`"
    )


@dataclass
class _Block:
    utt: int
    samples: np.ndarray
    last: bool
    offset: int = 0

    @property
    def remaining(self) -> int:
        return len(self.samples) - self.offset


@dataclass
class _Utterance:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    first_sample: float | None = None
    gain: float | None = None  # loudness gain fixed by the first chunk
    started: bool = False


class Player:
    def __init__(self, config: AudioConfig) -> None:
        self.config = config
        self.rate = PREFERRED_RATE
        self.channels = 1
        self.device_name = ""
        self.underruns = 0
        self._lock = threading.Lock()
        self._blocks: deque[_Block] = deque()
        self._buffered = 0
        self._utts: dict[int, _Utterance] = {}
        self._ids = itertools.count(1)
        self._cut_requests: set[int] = set()
        self._fading: tuple[int, int] | None = None  # (utt, samples left in fade)
        self._pause_gain = 1.0
        self._pause_target = 1.0
        self._volume = config.volume / 100
        self._volume_target = self._volume
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._closing = False
        self.opened = asyncio.Event()
        self.broadcast = Broadcast(
            self._pending,
            rate=self.rate,
            volume=self._volume_target,
            fade_out_ms=config.fade_out_ms,
        )

    # asyncio side --------------------------------------------------------------
    async def run(self) -> None:
        """Keep the device open until `close`; reopen it when it fails."""
        self._loop = asyncio.get_running_loop()
        if self.config.output_device == NO_DEVICE:
            await self._run_clock()
            return
        attempt = 0
        while not self._closing:
            opened_at = None
            try:
                # Looked up on every try: a device that was unplugged may come back
                # under another index.
                self._open(find_output_device(self.config.output_device))
                opened_at = time.monotonic()
                self.opened.set()
                # PortAudio reports a dead stream only through `active`: poll it.
                while not self._closing and self._stream is not None and self._stream.active:  # noqa: ASYNC110
                    await asyncio.sleep(DEVICE_POLL_S)
                if self._closing:
                    return
                reason = "stream stopped"
            except Exception as exc:
                reason = describe(exc)
            self.opened.clear()
            self._close_stream()
            lasted = None if opened_at is None else time.monotonic() - opened_at
            attempt = DEVICE_BACKOFF.next_attempt(attempt, lasted)
            delay = DEVICE_BACKOFF.delay(attempt - 1, 0.5)
            log.warning(
                "audio.device_error",
                reason=reason,
                retry_in_s=round(delay, 2),
                buffered_s=round(self._buffered / self.rate, 2),
            )
            await asyncio.sleep(delay)

    def begin(self) -> int:
        """Start a new utterance; its chunks go to `write`."""
        utt = next(self._ids)
        self._utts[utt] = _Utterance()
        return utt

    async def write(self, utt: int, chunk: np.ndarray, last: bool = False) -> None:
        """Queue a chunk (24 kHz mono float32) of an utterance; waits while the buffer is full."""
        state = self._utts.get(utt)
        if state is None or state.done.is_set():
            return
        shaped = await asyncio.to_thread(self._shape, state, chunk)
        # The buffer drains on PortAudio's thread; wait for room without blocking the loop.
        while self._buffered > BUFFER_SECONDS * self.rate and not state.done.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        with self._lock:
            if utt in self._cut_requests or state.done.is_set():
                return
            self._blocks.append(_Block(utt, shaped, last))
            self._buffered += len(shaped)
        self.broadcast.audio(utt, shaped, self.rate)

    def finish(self, utt: int) -> None:
        """No more chunks for this utterance: it is done once what is queued has played."""
        self.broadcast.end(utt)
        with self._lock:
            for block in reversed(self._blocks):
                if block.utt == utt:
                    block.last = True
                    return
        self._mark_done(utt)

    def cut(self, utt: int) -> None:
        """Stop an utterance now, with a short fade if it is playing."""
        with self._lock:
            if utt in self._utts and not self._utts[utt].done.is_set():
                self._cut_requests.add(utt)
        self.broadcast.cut(utt)

    async def wait_done(self, utt: int) -> None:
        state = self._utts.get(utt)
        if state is not None:
            await state.done.wait()

    def first_sample_time(self, utt: int) -> float | None:
        state = self._utts.get(utt)
        return None if state is None else state.first_sample

    def forget(self, utt: int) -> None:
        self._utts.pop(utt, None)

    def set_paused(self, paused: bool) -> None:
        self._pause_target = 0.0 if paused else 1.0
        self.broadcast.pause(paused)

    def set_volume(self, volume: float) -> None:
        self._volume_target = min(1.0, max(0.0, volume))
        self.broadcast.set_volume(self._volume_target)

    async def close(self) -> None:
        """Fade out whatever plays, then close the device."""
        with self._lock:
            cut = {block.utt for block in self._blocks}
            self._cut_requests |= cut
        for utt in cut:
            self.broadcast.cut(utt)
        await asyncio.sleep(self.config.fade_out_ms / 1000 + 0.15)
        self._closing = True
        self._close_stream()
        log.info("audio.closed", device=self.device_name)

    def _pending(self, utt: int) -> np.ndarray:
        """What is still to play of `utt` (nothing once it is being cut)."""
        with self._lock:
            if utt in self._cut_requests:
                return np.zeros(0, dtype=np.float32)
            parts = [b.samples[b.offset :] for b in self._blocks if b.utt == utt]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    # no device: the clock -------------------------------------------------------------
    async def _run_clock(self) -> None:
        """Pull the buffer at the output rate, as a device's callback would, and
        drop the samples: the pages play them."""
        self.rate = self.broadcast.rate = PREFERRED_RATE
        self.channels, self.device_name = 1, NO_DEVICE
        log.info("audio.opened", device=NO_DEVICE, rate=self.rate, channels=1)
        self.opened.set()
        started = time.monotonic()
        pulled = 0
        while not self._closing:
            due = int((time.monotonic() - started) * self.rate) - pulled
            if due > CLOCK_MAX_CATCH_UP_S * self.rate:  # the loop was held up: skip ahead
                pulled += due - int(CLOCK_MAX_CATCH_UP_S * self.rate)
                due = int(CLOCK_MAX_CATCH_UP_S * self.rate)
            if due > 0:
                self._callback(np.empty((due, 1), dtype=np.float32), due, None, None)
                pulled += due
            await asyncio.sleep(CLOCK_TICK_S)

    # shaping (worker thread) --------------------------------------------------------
    def _shape(self, state: _Utterance, chunk: np.ndarray) -> np.ndarray:
        if state.gain is None:
            level = loudness.loudness_lufs(chunk, SAMPLE_RATE)
            state.gain = (
                loudness.db_to_gain(min(self.config.target_lufs - level, 24.0))
                if np.isfinite(level)
                else 1.0
            )
        out = chunk.astype(np.float32) * state.gain
        if self.rate != SAMPLE_RATE:
            out = resample(out, SAMPLE_RATE, self.rate)
        if not state.started:
            out = loudness.fade_in(out, int(self.config.fade_in_ms / 1000 * self.rate))
            state.started = True
        return loudness.limit(out, self.rate, self.config.peak_ceiling_db)

    # device -----------------------------------------------------------------------
    def _open(self, device: int | None) -> None:
        sd = _sounddevice()

        info = sd.query_devices(device, "output")
        try:
            sd.check_output_settings(device=device, samplerate=PREFERRED_RATE, dtype="float32")
            rate = PREFERRED_RATE
        except Exception:
            rate = int(info["default_samplerate"])
        self.rate = self.broadcast.rate = rate
        self.channels = min(2, int(info["max_output_channels"]))
        self.device_name = str(info["name"])
        stream = sd.OutputStream(
            device=device,
            samplerate=rate,
            channels=self.channels,
            dtype="float32",
            latency="low",
            callback=self._callback,
        )
        stream.start()
        self._stream = stream
        log.info("audio.opened", device=self.device_name, rate=rate, channels=self.channels)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.stop()
            stream.close()
        except Exception as exc:
            log.info("audio.close_error", reason=describe(exc))

    # PortAudio thread ----------------------------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        out = np.zeros(frames, dtype=np.float32)
        with self._lock:
            if self._pause_target == 0.0 and self._pause_gain == 0.0:
                outdata.fill(0.0)
                return
            filled = self._pull(out, frames)
        if filled < frames and self._pause_target > 0:
            self.underruns += 1
        out *= self._gains(frames)
        outdata[:] = out[:, None]

    def _pull(self, out: np.ndarray, frames: int) -> int:
        pos = 0
        while pos < frames and self._blocks:
            block = self._blocks[0]
            if block.utt in self._cut_requests:
                pos = self._fade_out_cut(out, pos, frames, block.utt)
                continue
            n = min(frames - pos, block.remaining)
            out[pos : pos + n] = block.samples[block.offset : block.offset + n]
            state = self._utts.get(block.utt)
            if state is not None and state.first_sample is None:
                state.first_sample = time.monotonic()
            block.offset += n
            self._buffered -= n
            pos += n
            if block.remaining == 0:
                self._blocks.popleft()
                if block.last:
                    self._mark_done(block.utt)
        # Cuts of utterances not yet playing: drop them whole.
        for utt in list(self._cut_requests):
            if not self._blocks or self._blocks[0].utt != utt:
                self._drop(utt)
        return pos

    def _fade_out_cut(self, out: np.ndarray, pos: int, frames: int, utt: int) -> int:
        fade_total = max(1, int(self.config.fade_out_ms / 1000 * self.rate))
        if self._fading is None or self._fading[0] != utt:
            self._fading = (utt, fade_total)
        left = self._fading[1]
        while left > 0 and pos < frames and self._blocks and self._blocks[0].utt == utt:
            block = self._blocks[0]
            n = min(frames - pos, block.remaining, left)
            done = fade_total - left
            ramp = 1.0 - (np.arange(done, done + n, dtype=np.float32) + 1) / fade_total
            out[pos : pos + n] = block.samples[block.offset : block.offset + n] * ramp
            block.offset += n
            self._buffered -= n
            pos += n
            left -= n
            if block.remaining == 0:
                self._blocks.popleft()
        self._fading = (utt, left)
        if left <= 0 or not self._blocks or self._blocks[0].utt != utt:
            self._drop(utt)
        return pos

    def _drop(self, utt: int) -> None:
        kept = deque(b for b in self._blocks if b.utt != utt)
        self._buffered = sum(b.remaining for b in kept)
        self._blocks = kept
        self._cut_requests.discard(utt)
        if self._fading is not None and self._fading[0] == utt:
            self._fading = None
        self._mark_done(utt)

    def _gains(self, frames: int) -> np.ndarray:
        pause_step = 1.0 / max(1, int(self.config.fade_out_ms / 1000 * self.rate))
        vol_step = 1.0 / max(1, int(VOLUME_RAMP_S * self.rate))
        pause = _ramp(self._pause_gain, self._pause_target, pause_step, frames)
        volume = _ramp(self._volume, self._volume_target, vol_step, frames)
        self._pause_gain = float(pause[-1])
        self._volume = float(volume[-1])
        gains: np.ndarray = pause * volume
        return gains

    def _mark_done(self, utt: int) -> None:
        state = self._utts.get(utt)
        if state is None or state.done.is_set():
            return
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(state.done.set)
        else:
            state.done.set()


def _ramp(start: float, target: float, step: float, frames: int) -> np.ndarray:
    """Per-sample values moving from start toward target by at most `step` each."""
    if start == target:
        return np.full(frames, start, dtype=np.float32)
    direction = 1.0 if target > start else -1.0
    values = start + direction * step * np.arange(1, frames + 1, dtype=np.float32)
    clipped: np.ndarray = np.clip(values, min(start, target), max(start, target))
    return clipped.astype(np.float32)
