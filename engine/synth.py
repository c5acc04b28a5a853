"""The speech engine: text + voice → 24 kHz float32 chunks, one per sentence.

The pipeline, top to bottom: the voice's reference (mel and transcript,
cached), the text cut into chunks that fit the model's window, each chunk
sampled (`engine.sampler`, on the engine's `Kernels`) and decoded by Vocos,
the chunks cross-faded into a stream. Where it runs: one worker thread with a
watchdog (engine/worker.py), started, warmed up and stepped down on failure by
engine/startup.py. Requests batched together (`engine.batch`) go through the
same pipeline a step at a time: each step samples the next chunk of every
request in one `sampler.sample_batch` call.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import structlog
import torch

from engine import chunking, faults, sampler
from engine.audio import SAMPLE_RATE
from engine.checkpoints import HOP_LENGTH, ModelFiles
from engine.config import EngineConfig
from engine.kernels import EAGER, Kernels
from engine.startup import Startup, resolve_device
from engine.voices import TARGET_RMS, Voice, VoiceLibrary
from engine.worker import SynthesisError, SynthesisStalled, _Job

__all__ = ["Engine", "SynthesisError", "SynthesisStalled"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class _Reference:
    mel: torch.Tensor  # (1, frames, n_mels) on the device, model dtype
    text: str  # the transcript as the model reads it (trailing space after ASCII)
    frames: int


@dataclass(eq=False)
class _Line:
    """One request's way through the pipeline: its chunks, the next one, and the
    tail held back for the cross-fade into it."""

    job: _Job
    voice: Voice
    ref: _Reference
    pieces: list[str]
    steps: int
    speed: float
    fade: int  # cross-fade samples
    index: int = 0  # the next chunk
    tail: np.ndarray | None = field(default=None, repr=False)
    ended: bool = False  # its stream has its None or its error

    @property
    def piece(self) -> str:
        return self.pieces[self.index]

    @property
    def done(self) -> bool:
        return self.index >= len(self.pieces)

    def follow(self, wave: np.ndarray) -> np.ndarray:
        """The next chunk's audio as it is streamed: cross-faded from the previous
        one's tail, its own tail held back unless it is the last."""
        self.index += 1
        out, self.tail = cross_fade(self.tail, wave, self.fade, keep_tail=not self.done)
        return out


class Engine(Startup):
    def __init__(
        self,
        config: EngineConfig,
        voices: VoiceLibrary,
        files: ModelFiles,
        progress: Callable[[str], None] | None = None,
        *,
        kernels: Kernels | None = None,
    ) -> None:
        """`progress` gets one readable line per start-up phase (from the engine's
        thread), for a person watching a start that can take a minute. `kernels`
        overrides the kernels the engine would choose (benchmarks, tests)."""
        super().__init__()
        self.config = config
        self.voices = voices
        self.files = files
        self._progress = progress or (lambda _: None)
        choice = resolve_device(config)
        self.device, self.dtype = choice.device, choice.dtype
        self.device_reason = choice.reason
        self.kernels = EAGER  # until start-up chooses
        self._requested = kernels
        self._references: dict[str, _Reference] = {}
        self._model = None
        self._runner: sampler.Steps = sampler.EagerSteps()
        self._vocoder = None
        #: Decodes mels: the vocoder itself, or a GraphVocoder around it.
        self._decoder = None
        self._vocab: dict[str, int] = {}
        #: Batched steps run, by how many requests each had (a metric; `engine.batch`).
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.batch_busy_s = 0.0  # seconds spent in batched steps (a metric)

    def _run(self, job: _Job) -> None:
        try:
            faults.apply_fault(self.config.fault_file)
            voice = self.voices.get(job.voice)
            try:
                self._speak(job, voice)
            except sampler.Cancelled:
                raise
            except Exception as exc:
                if job.abandoned or not self._leave_mps(exc, during="request"):
                    raise
                self._load()
                if job.chunks:  # part of the line has played: skipped beats repeated
                    raise
                self._speak(job, voice)  # the same line again, on the CPU
            self._emit(job, None)
        except sampler.Cancelled:
            log.info("engine.cancelled", voice=job.voice)
            self._emit(job, None)
        except Exception as exc:
            self._fail(job, exc)

    def _fail(self, job: _Job, exc: Exception) -> None:
        if job.abandoned:  # already failed and counted by the watchdog
            return
        self.errors += 1
        log.error("engine.error", voice=job.voice, text_len=len(job.text), error=str(exc))
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        self._emit(job, exc)

    def _speak(self, job: _Job, voice: Voice) -> None:
        for chunk in self._synthesize(job.text, voice, job):
            self._emit(job, chunk)
            job.chunks += 1
            if job.preview:
                self._serve_on_air_first(job)

    def _line(self, job: _Job, voice: Voice, text: str) -> _Line:
        speed = voice.settings.speed * job.speed
        return _Line(
            job,
            voice,
            self._reference(voice),
            chunking.split_text(text, chunking.max_chunk_bytes(voice.text, voice.seconds, speed)),
            steps=job.steps or voice.settings.nfe_steps or self.config.nfe_steps,
            speed=speed,
            fade=int(self.config.cross_fade_ms / 1000 * SAMPLE_RATE),
        )

    def _synthesize(self, text: str, voice: Voice, job: _Job) -> Iterator[np.ndarray]:
        line = self._line(job, voice, text)
        while not line.done:
            if job.cancel.is_set():
                raise sampler.Cancelled
            wave = line.follow(self._chunk(line))
            if len(wave):
                yield wave

    def _chunk(self, line: _Line) -> np.ndarray:
        job = line.job

        def stop() -> bool:
            self.steps_run += 1
            job.progress_at = time.monotonic()
            return job.cancel.is_set()

        (mel,) = self._sample([line], stop)
        return self._decode(line, mel)

    def _sample(self, lines: list[_Line], stop: Callable[[], bool]) -> list[torch.Tensor]:
        """Each line's next chunk sampled, in one batch: mels with the reference kept."""
        device = torch.device(self.device)
        batch = [
            sampler.Line(
                ln.ref.mel,
                sampler.text_ids(ln.ref.text + ln.piece, self._vocab, device),
                chunking.duration_frames(ln.ref.frames, ln.ref.text, ln.piece, ln.speed),
                ln.job.seed,
            )
            for ln in lines
        ]
        mels = sampler.sample_batch(
            self._model,
            batch,
            steps=lines[0].steps,
            cfg_strength=self.config.cfg_strength,
            sway=self.config.sway_sampling,
            should_stop=stop,
            runner=self._runner,
            kernels=self.kernels,
        )
        self._step_down_failed()
        return mels

    def _decode(self, line: _Line, mel: torch.Tensor) -> np.ndarray:
        generated = mel[:, line.ref.frames :, :].float().permute(0, 2, 1)
        gain = line.voice.settings.volume
        if line.voice.rms < TARGET_RMS:
            gain *= line.voice.rms / TARGET_RMS
        with torch.inference_mode():
            audio = self._decoder.decode(generated)[0]  # a tensor of its own
            # Scaled where it is, on the device: on the host the scaling and its copy
            # delayed each chunk's first audio (bench/FINDINGS.md).
            wave: np.ndarray = audio.mul_(gain).float().cpu().numpy()
        return wave

    # batches (engine.batch) ---------------------------------------------------
    def _run_batch(self, jobs: list[_Job]) -> None:
        """Continuous batching: each step samples the next chunk of every running
        request with the same number of sampling steps, in one batch; requests
        waiting are taken in between, up to `engine.batch.max_size`. A request's
        first chunk comes from the first step it is in."""
        lines: list[_Line] = []
        try:
            lines = self._open(jobs)
            while lines:
                if not self._serving():  # the watchdog gave up on this thread
                    return
                room = self.config.batch.max_size - len(lines)
                if room > 0:
                    lines += self._open(self._take_on_air(room))
                # Requests of another step count wait a step, then go first.
                group = [ln for ln in lines if ln.steps == lines[0].steps]
                self._batch_step(group, lines)
                lines = [ln for ln in lines if ln not in group] + group
                lines = [ln for ln in lines if not ln.ended]
        except Exception as exc:  # a fault of ours: its requests fail, not the thread
            for line in lines:
                if not line.ended:
                    line.ended = True
                    self._end(line.job, exc)

    def _open(self, jobs: list[_Job]) -> list[_Line]:
        """The jobs admitted to the batch, ready to run (a bad voice fails its own job)."""
        lines = []
        for job in jobs:
            if not self._admit(job):
                continue
            try:
                line = self._line(job, self.voices.get(job.voice), job.text)
            except Exception as exc:
                self._end(job, exc)
                continue
            if line.done:  # nothing to say
                self._end(job, None)
            else:
                lines.append(line)
        return lines

    def _end(self, job: _Job, error: Exception | None) -> None:
        if error is None:
            self._emit(job, None)
        else:
            self._fail(job, error)
        self._release(job)

    def _batch_step(self, group: list[_Line], running: list[_Line]) -> None:
        """The next chunk of each line in `group`, sampled as one batch and streamed
        line by line. A cancelled line leaves before the step, or drops the chunk
        it was in; the step stops early only when all of them are cancelled."""
        live = []
        for line in group:
            if line.job.cancel.is_set():
                self._cancelled(line)
            else:
                live.append(line)
        if not live:
            return

        def stop() -> bool:
            self.steps_run += 1
            now = time.monotonic()
            for line in running:  # the thread makes progress for all it serves
                line.job.progress_at = now
            return all(line.job.cancel.is_set() for line in live)

        started = time.perf_counter()
        try:
            faults.apply_fault(self.config.fault_file)
            mels = self._sample(live, stop)
        except sampler.Cancelled:
            for line in live:
                self._cancelled(line)
            return
        except Exception as exc:
            self._batch_failed(live, exc)
            return
        self.batch_sizes[len(live)] += 1
        log.debug(
            "engine.batched",
            size=len(live),
            rows=self._runner.rows(len(live)),
            steps=live[0].steps,
            starting=sum(line.index == 0 for line in live),
        )
        for line, mel in zip(live, mels, strict=True):
            if line.job.cancel.is_set():
                self._cancelled(line)
                continue
            try:
                wave = line.follow(self._decode(line, mel))
            except Exception as exc:
                line.ended = True
                self._end(line.job, exc)
                continue
            if len(wave):
                self._emit(line.job, wave)
                line.job.chunks += 1
            if line.done:
                line.ended = True
                self._end(line.job, None)
        self.batch_busy_s += time.perf_counter() - started

    def _cancelled(self, line: _Line) -> None:
        log.info("engine.cancelled", voice=line.job.voice)
        line.ended = True
        self._end(line.job, None)

    def _batch_failed(self, lines: list[_Line], exc: Exception) -> None:
        """A step failed: every line in it fails, except after a failure on Apple's
        GPU, where the lines not yet heard are tried again on the CPU."""
        retry: list[_Line] = []
        if not any(line.job.abandoned for line in lines) and self._leave_mps(exc, "request"):
            self._load()
            retry = [line for line in lines if not line.job.chunks]
            for line in retry:
                line.ref = self._reference(line.voice)
        for line in lines:
            if line not in retry:
                line.ended = True
                self._end(line.job, exc)

    def _reference(self, voice: Voice) -> _Reference:
        cached = self._references.get(voice.digest)
        if cached is not None:
            return cached
        audio = torch.from_numpy(voice.audio)[None].to(self.device)
        with torch.inference_mode():
            mel = self._model.mel_spec(audio).permute(0, 2, 1).to(self.dtype)
        text = voice.text + " " if len(voice.text[-1].encode("utf-8")) == 1 else voice.text
        # As f5-tts does: all the clip's mel frames condition the model, while
        # durations and the cut of the output count whole hops.
        ref = _Reference(mel=mel, text=text, frames=audio.shape[-1] // HOP_LENGTH)
        self._references[voice.digest] = ref
        return ref


def cross_fade(
    tail: np.ndarray | None, wave: np.ndarray, fade: int, keep_tail: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Blend the held-back tail of the previous chunk into this one's start; hold
    back this one's tail unless it is the last."""
    if tail is not None and len(tail):
        n = min(len(tail), len(wave))
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        head = tail[:n] * (1 - ramp) + wave[:n] * ramp
        wave = np.concatenate([head, wave[n:]])
    if not keep_tail or fade <= 0:
        return wave, None
    n = min(fade, len(wave) // 2)
    return wave[: len(wave) - n], wave[len(wave) - n :]
