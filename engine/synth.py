"""The speech engine: text + voice → 24 kHz float32 chunks, one per sentence.

The pipeline, top to bottom: the voice's reference (mel and transcript,
cached), the text cut into chunks that fit the model's window, each chunk
sampled (`engine.sampler`, on the engine's `Kernels`) and decoded by Vocos,
the chunks cross-faded into a stream. Where it runs: one worker thread with a
watchdog (engine/worker.py), started, warmed up and stepped down on failure by
engine/startup.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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

    def _synthesize(self, text: str, voice: Voice, job: _Job) -> Iterator[np.ndarray]:
        ref = self._reference(voice)
        speed = voice.settings.speed * job.speed
        steps = job.steps or voice.settings.nfe_steps or self.config.nfe_steps
        pieces = chunking.split_text(
            text, chunking.max_chunk_bytes(voice.text, voice.seconds, speed)
        )
        fade = int(self.config.cross_fade_ms / 1000 * SAMPLE_RATE)
        tail: np.ndarray | None = None
        for index, piece in enumerate(pieces):
            if job.cancel.is_set():
                raise sampler.Cancelled
            wave = self._chunk(ref, piece, voice, steps, speed, job)
            last = index == len(pieces) - 1
            wave, tail = cross_fade(tail, wave, fade, keep_tail=not last)
            if len(wave):
                yield wave

    def _chunk(
        self,
        ref: _Reference,
        piece: str,
        voice: Voice,
        steps: int,
        speed: float,
        job: _Job,
    ) -> np.ndarray:
        ids = sampler.text_ids(ref.text + piece, self._vocab, torch.device(self.device))
        frames = chunking.duration_frames(ref.frames, ref.text, piece, speed)

        def stop() -> bool:
            self.steps_run += 1
            job.progress_at = time.monotonic()
            return job.cancel.is_set()

        mel = sampler.sample(
            self._model,
            ref.mel,
            ids,
            frames,
            seed=job.seed,
            steps=steps,
            cfg_strength=self.config.cfg_strength,
            sway=self.config.sway_sampling,
            should_stop=stop,
            runner=self._runner,
            kernels=self.kernels,
        )
        self._step_down_failed()
        generated = mel[:, ref.frames :, :].float().permute(0, 2, 1)
        gain = voice.settings.volume
        if voice.rms < TARGET_RMS:
            gain *= voice.rms / TARGET_RMS
        with torch.inference_mode():
            audio = self._decoder.decode(generated)[0]  # a tensor of its own
            # Scaled where it is, on the device: on the host the scaling and its copy
            # delayed each chunk's first audio (bench/FINDINGS.md).
            wave: np.ndarray = audio.mul_(gain).float().cpu().numpy()
        return wave

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
