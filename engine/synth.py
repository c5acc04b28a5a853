"""The speech engine: text + voice → 24 kHz float32 chunks, one per sentence.

All torch work happens on one dedicated thread. The asyncio side calls
`engine.stream(text, voice)` and iterates; leaving the iteration early (a
skip) stops the work at the next sampling step. A failed request logs
`engine.error` and raises `SynthesisError` to its caller; the engine stays up.

Speech for the air comes first: a preview (`stream(..., preview=True)`, the
panel's preview button) waits behind every on-air request, and on-air requests
that arrive while a preview runs are served between its sentences.

A watchdog thread guards against a synthesis that never returns (a wedged
driver, a pathological input): after `engine.stall_timeout_s` without a
sampling step it logs `engine.stalled`, fails that request with
`SynthesisStalled`, and hands the job queue to a fresh inference thread. The
stuck thread is left to finish on its own (Python cannot kill a thread); its
output is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from engine import chunking, conv_pos, cudnn_attention, dit, faults, graphs, sampler, vocoder
from engine.audio import SAMPLE_RATE
from engine.checkpoints import (
    HOP_LENGTH,
    CheckpointError,
    ModelFiles,
    load_f5,
    load_vocos,
    read_vocab,
)
from engine.config import EngineConfig
from engine.voices import TARGET_RMS, Voice, VoiceLibrary, VoiceSettings

log = structlog.get_logger()

#: Two warm-up passes of different lengths: after the second, torch.compile has
#: built its dynamic-shape graph, so a new message length never recompiles on air.
#: The first must not pad to 1,024 frames: a first length equal to the model's width
#: gets specialised (duck sizing), costing a recompile and a second graph.
WARMUP = (
    (2.0, "Hello there, this is a warm up."),
    (5.0, "A second, longer warm up sentence, so that every later length reuses the graph."),
)


#: Ranks in the job queue: on-air speech, then previews (FIFO within each), then
#: the stop marker.
ON_AIR, PREVIEW, _STOP = 0, 1, 2

#: Stuck inference threads tolerated before requests fail at once instead of
#: each waiting out its own stall (the engine needs a restart by then).
MAX_STUCK_THREADS = 3


class SynthesisError(Exception):
    """One request failed (bad voice, bad text, out of memory…); the engine is fine."""


class SynthesisStalled(SynthesisError):
    """The request made no progress within `engine.stall_timeout_s` and was abandoned."""


@dataclass(frozen=True, slots=True)
class _Reference:
    mel: torch.Tensor  # (1, frames, n_mels) on the device, model dtype
    text: str  # the transcript as the model reads it (trailing space after ASCII)
    frames: int


@dataclass
class _Job:
    text: str
    voice: str
    loop: asyncio.AbstractEventLoop | None  # None: an internal job nobody awaits
    out: asyncio.Queue[np.ndarray | BaseException | None] | None
    cancel: threading.Event = field(default_factory=threading.Event)
    seed: int | None = None
    #: Monotonic time of the last sampling step; None until a thread takes the job.
    progress_at: float | None = None
    #: Set by the watchdog: whatever the stuck thread still produces is dropped.
    abandoned: bool = False
    chunks: int = 0  # audio chunks handed over so far
    preview: bool = False  # nobody hears it on air: it yields to those who will


#: Reinstalls our pinned torch and torchaudio (pyproject.toml) as PyTorch's CUDA
#: build, for `engine.cpu_torch`. CUDA 12.8 of the builds PyTorch offers for 2.11
#: (12.6, 12.8, 13.0): it has kernels for every card from the GTX 16 and RTX 20
#: series (Turing) to the RTX 50 series (Blackwell, which 12.6 lacks), and runs
#: on older drivers than 13.0, which needs a 580-series one. Only GTX 10-series
#: cards and older need 12.6 (`.../whl/cu126`).
CUDA_TORCH_INSTALL = (
    "pip install --force-reinstall torch==2.11.0 torchaudio==2.11.0"
    " --index-url https://download.pytorch.org/whl/cu128"
)

#: One-time warnings already given in this process (`engine.cpu_torch`).
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    """Where the engine runs, in which dtype, and why there."""

    device: str  # "cuda", "cuda:N", "mps" or "cpu"
    dtype: torch.dtype
    reason: str  # why this device (`engine.ready` reports it as device_reason)


def resolve_device(config: EngineConfig) -> DeviceChoice:
    """The device and dtype for `engine.device`/`engine.dtype`. "auto" takes the
    fastest there is: an NVIDIA GPU, else Apple's GPU (MPS), else the CPU; both
    GPUs run in fp16, the CPU in fp32 (fp16 on a CPU is slower, not faster)."""
    device = config.device
    if device == "auto":
        if torch.cuda.is_available():
            device, reason = "cuda", "cuda available"
        elif torch.backends.mps.is_available():
            device, reason = "mps", "mps available"
        else:
            device, reason = "cpu", "no cuda or mps"
    else:
        reason = "configured"
    if config.device != "cpu":  # asked for the CPU: nothing to tell
        warn_if_cpu_torch()
    names = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if config.dtype == "auto":
        gpu = device.startswith(("cuda", "mps"))
        dtype = torch.float16 if gpu else torch.float32
    else:
        dtype = names[config.dtype]
    return DeviceChoice(device, dtype, reason)


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver, looked up in files only (no
    import, no process): the driver's own files, else nvidia-smi on the PATH."""
    if sys.platform.startswith("linux"):
        # The kernel module's version file; under WSL2 the driver is the Windows
        # one, mapped into the distribution's lib/wsl folder.
        if Path("/proc/driver/nvidia/version").exists():
            return True
        if Path("/usr/lib/wsl/lib/nvidia-smi").exists():
            return True
    elif sys.platform == "win32":
        # Where the drivers of recent years (DCH) install them; older ones kept
        # nvidia-smi in a folder of its own, found below when on the PATH.
        root = os.environ.get("SYSTEMROOT")  # Windows matches names in any case
        if root:
            system32 = Path(root) / "System32"
            if (system32 / "nvidia-smi.exe").exists() or (system32 / "nvml.dll").exists():
                return True
    return shutil.which("nvidia-smi") is not None


def warn_if_cpu_torch() -> None:
    """Warn once where the machine has an NVIDIA GPU but torch cannot use it: a
    CPU-only build (what pip installs on Windows from PyPI) runs every line on
    the CPU, several times slower, and says nothing about it."""
    if "engine.cpu_torch" in _warned or torch.version.cuda is not None:
        return
    if not nvidia_driver_present():
        return
    _warned.add("engine.cpu_torch")
    log.warning(
        "engine.cpu_torch",
        torch=torch.__version__,
        reason="an NVIDIA driver is installed but this torch is a CPU-only build",
        command=CUDA_TORCH_INSTALL,
    )


def bind_device(device: str) -> None:
    """Make `device` (cuda:N) the calling thread's current GPU. CUDA's current device
    is per thread, and what does not name a device follows it: graph capture
    streams, the compile's kernels, our Triton launches. Without this, an engine
    on cuda:1 would record its graphs on GPU 0's streams."""
    index = torch.device(device).index  # None for "cpu" and a bare "cuda"
    if index is not None:
        torch.cuda.set_device(index)


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        voices: VoiceLibrary,
        files: ModelFiles,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """`progress` gets one readable line per start-up phase (from the engine's
        thread), for a person watching a start that can take a minute."""
        self.config = config
        self.voices = voices
        self.files = files
        self._progress = progress or (lambda _: None)
        choice = resolve_device(config)
        self.device, self.dtype = choice.device, choice.dtype
        self.device_reason = choice.reason
        self.ready: Future[None] = Future()
        self.steps_run = 0  # sampling steps since start (tests watch cancellation with it)
        self.errors = 0  # failed requests since start (a metric)
        self.stalls = 0  # requests abandoned by the watchdog (a metric)
        self._jobs: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO among jobs of one rank
        self._thread = threading.Thread(target=self._main, name="ishowtts-engine", daemon=True)
        #: The thread serving jobs now; the watchdog replaces it when it sticks.
        self._worker = self._thread
        self._job: _Job | None = None  # the current worker's job
        self._stuck: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._references: dict[str, _Reference] = {}
        self._model: Any = None
        self._compiled = False
        self._runner: sampler.Steps = sampler.EagerSteps()
        self._vocoder: Any = None
        #: Decodes mels: the vocoder itself, or a GraphVocoder around it.
        self._decoder: Any = None
        self._vocab: dict[str, int] = {}

    # asyncio side ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    async def wait_ready(self) -> None:
        """Until the model is loaded (and warmed up); raises if loading failed."""
        await asyncio.wrap_future(self.ready)

    async def stream(
        self, text: str, voice: str, seed: int | None = None, *, preview: bool = False
    ) -> AsyncGenerator[np.ndarray, None]:
        """Audio for `text` in `voice`, one chunk per sentence as each is ready.
        A `preview` never delays speech on air: it waits behind it."""
        out: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue()
        job = _Job(text, voice, asyncio.get_running_loop(), out, seed=seed, preview=preview)
        self._put(job)
        try:
            while True:
                item = await out.get()
                if item is None:
                    return
                if isinstance(item, SynthesisError):
                    raise item
                if isinstance(item, BaseException):
                    raise SynthesisError(str(item)) from item
                yield item
        finally:
            job.cancel.set()

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the current sampling step; waits at most `timeout` seconds for
        it (the thread is a daemon: a step that takes longer ends with the process)."""
        self._closing.set()
        self._put(None)
        worker = self._worker
        if worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout=timeout)

    def _put(self, job: _Job | None) -> None:
        rank = _STOP if job is None else PREVIEW if job.preview else ON_AIR
        self._jobs.put((rank, next(self._order), job))

    # inference thread ---------------------------------------------------------
    def _main(self) -> None:
        try:
            try:
                timings = self._start()
            except Exception as exc:
                if not self._leave_mps(exc, during="start"):
                    raise
                timings = self._start()
            log.info(
                "engine.ready",
                device=self.device,
                device_reason=self.device_reason,
                dtype=str(self.dtype).removeprefix("torch."),
                path=self.path,
                conv=conv_pos.path(self.device),
                attention=cudnn_attention.path(self.device, self.dtype),
                **timings,
            )
            self.ready.set_result(None)
        except BaseException as exc:
            self.ready.set_exception(exc)
            return
        threading.Thread(target=self._watch, name="ishowtts-engine-watchdog", daemon=True).start()
        self._serve()

    def _start(self) -> dict[str, float]:
        """Load, choose the runner and warm up on `self.device`; returns the seconds
        each part took, as `engine.ready` reports them."""
        bind_device(self.device)
        started = time.perf_counter()
        self._progress(f"loading the voice model on {self.device}…")
        self._load()
        loaded = time.perf_counter()
        self._runner = self._choose_runner()
        if isinstance(self._runner, graphs.GraphSteps):
            self._decoder = vocoder.GraphVocoder(self._vocoder)
        set_up = time.perf_counter()
        doing = "compiling (the first start can take a minute)" if self._compiled else "warming up"
        self._progress(f"loaded in {loaded - started:.1f} s; {doing}…")
        phases = self._warm_up()
        return {
            "load_s": round(loaded - started, 2),
            # Mostly importing torch.compile's machinery, where compiling is on.
            "setup_s": round(set_up - loaded, 2),
            "warmup_s": round(time.perf_counter() - loaded, 2),
            **phases,
        }

    def _load(self) -> None:
        """The model and the vocoder onto `self.device`, run eagerly."""
        self._references.clear()  # their mels are on the previous device
        self._vocab = read_vocab(self.files.vocab)
        model = load_f5(self.files, self.config.arch, self.device, self.dtype)
        self._vocoder = load_vocos(self.files, self.device)
        dit.prepare(model.transformer)
        self._model = model
        self._runner = sampler.EagerSteps()
        self._decoder = self._vocoder

    def _leave_mps(self, exc: Exception, during: str) -> bool:
        """After a failure on Apple's GPU (an op MPS lacks, its memory running out,
        anything): the CPU in float32 from now on, logged once. The caller loads
        the model again. False where the engine is not on MPS, or the failure is
        a bad checkpoint, which the CPU would not fix."""
        if not self.device.startswith("mps") or isinstance(exc, CheckpointError):
            return False
        log.warning("engine.mps_failed", error=str(exc)[:500], during=during, fallback="cpu")
        self.device, self.dtype = "cpu", torch.float32
        self.device_reason = "mps failed"
        return True

    def _serve(self) -> None:
        """Take jobs until closed, or until the watchdog hands the queue to another thread."""
        bind_device(self.device)
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._worker is not me:
                    return
            _, _, job = self._jobs.get()
            if job is None:
                return
            self._serve_one(job)

    def _serve_one(self, job: _Job) -> None:
        with self._lock:
            job.progress_at = time.monotonic()
            self._job = job
            stuck = sum(t.is_alive() for t in self._stuck)
        if stuck >= MAX_STUCK_THREADS:
            self.errors += 1
            log.error("engine.error", voice=job.voice, text_len=len(job.text), error="stuck")
            self._emit(job, SynthesisError(f"the engine is stuck ({stuck} syntheses hung)"))
        else:
            self._run(job)
        with self._lock:
            if self._job is job:
                self._job = None

    def _serve_on_air_first(self, preview: _Job) -> None:
        """Between a preview's sentences: serve the on-air requests waiting behind it,
        so a long preview delays speech on air by one sentence at most."""
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._worker is not me or preview.abandoned:
                    return
            try:
                entry = self._jobs.get_nowait()
            except queue.Empty:
                return
            rank, _, job = entry
            if rank != ON_AIR or job is None:
                self._jobs.put(entry)  # same rank and number: it keeps its place
                return
            self._serve_one(job)
            with self._lock:
                if self._worker is not me:
                    # That request stuck and a fresh thread took the queue: the
                    # preview ends here, its caller told why.
                    preview.abandoned = True
                    preview.cancel.set()
                    _deliver(preview, SynthesisStalled("the engine stalled during a preview"))
                    return
                preview.progress_at = time.monotonic()
                self._job = preview

    def _watch(self) -> None:
        limit = self.config.stall_timeout_s
        while not self._closing.wait(min(1.0, limit / 4)):
            with self._lock:
                job = self._job
                if job is None or job.progress_at is None:
                    continue
                idle = time.monotonic() - job.progress_at
                if idle >= limit:
                    self._abandon(job, idle)

    def _abandon(self, job: _Job, idle: float) -> None:
        """Fail the stuck request and start a fresh thread on the queue (lock held)."""
        job.abandoned = True
        job.cancel.set()
        self.errors += 1
        self.stalls += 1
        self._stuck = [t for t in self._stuck if t.is_alive()]
        self._stuck.append(self._worker)
        log.error(
            "engine.stalled",
            voice=job.voice,
            text_len=len(job.text),
            stalled_s=round(idle, 1),
            stuck_threads=len(self._stuck),
        )
        _deliver(job, SynthesisStalled(f"no progress for {idle:.0f} s; request abandoned"))
        self._job = None
        self._worker = threading.Thread(
            target=self._serve, name=f"ishowtts-engine-{self.stalls}", daemon=True
        )
        self._worker.start()

    def _emit(self, job: _Job, item: np.ndarray | BaseException | None) -> None:
        with self._lock:
            if job.abandoned:
                return
            job.progress_at = time.monotonic()
            _deliver(job, item)

    @property
    def path(self) -> str:
        """How sampling steps run: eager, compiled, graphs or compiled+graphs."""
        if isinstance(self._runner, graphs.GraphSteps):
            return "compiled+graphs" if self._compiled else "graphs"
        return "compiled" if self._compiled else "eager"

    def _choose_runner(self) -> sampler.Steps:
        """The fastest path this machine has; a missing one costs a warning, never the start."""
        if not self.device.startswith("cuda"):
            return sampler.EagerSteps()
        if self.config.compile:
            if importlib.util.find_spec("triton") is None:
                log.warning(
                    "engine.compile_unavailable",
                    reason="Triton is not installed",
                    fallback="cuda graphs" if self.config.cuda_graphs else "eager",
                )
            else:
                _persist_compile_cache()
                dit.compile_regions(self._model.transformer)
                self._compiled = True
        if self.config.cuda_graphs:
            return graphs.GraphSteps()
        return sampler.EagerSteps()

    def _warm_up(self) -> dict[str, float]:
        """Syntheses before going live, so no first-request cost lands on air; returns
        the seconds each part took (`engine.ready` reports them). A path that fails
        here costs a warning and the next path down, never the start."""
        while True:
            try:
                return self._warm_up_once()
            except Exception as exc:
                if self._closing.is_set() or not self._fall_back(exc):
                    raise

    def _fall_back(self, exc: Exception) -> bool:
        """One step down after a failed warm-up: a compiler that cannot build (Triton
        without a C compiler, say) → the same path uncompiled; graphs that cannot
        be recorded → eager. False when there is nothing left to drop."""
        if self._compiled and _is_compile_error(exc):
            graphed = isinstance(self._runner, graphs.GraphSteps)
            log.warning(
                "engine.compile_failed",
                error=str(exc)[:500],
                fallback="cuda graphs" if graphed else "eager",
            )
            dit.uncompile_regions(self._model.transformer)
            self._compiled = False
            # Graphs recorded so far ran compiled code: start over without them.
            self._runner = graphs.GraphSteps() if graphed else sampler.EagerSteps()
            return True
        if isinstance(self._runner, graphs.GraphSteps):
            log.warning("engine.graphs_unavailable", error=str(exc), fallback="no graphs")
            self._runner = sampler.EagerSteps()
            self._decoder = self._vocoder
            return True
        return False

    def _warm_up_once(self) -> dict[str, float]:
        rng = np.random.default_rng(0)
        phases: dict[str, float] = {}
        started = time.perf_counter()
        for (seconds, text), phase in zip(WARMUP, ("first_line_s", "second_line_s"), strict=True):
            audio = (rng.standard_normal(int(SAMPLE_RATE * seconds)) * 0.05).astype(np.float32)
            voice = Voice("warmup", audio, "This is a test.", 0.05, VoiceSettings(), "warmup")
            # Cancelled by close(): a stop during warm-up is not held up by it.
            job = _Job(text, "warmup", None, None, cancel=self._closing, seed=0)
            for _ in self._synthesize(text, voice, job):
                pass
            self._references.pop("warmup", None)
            phases[phase] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
        if isinstance(self._runner, graphs.GraphSteps):
            self._capture_graphs(self._runner)
            phases["graphs_s"] = round(time.perf_counter() - started, 2)
        return phases

    def _capture_graphs(self, runner: graphs.GraphSteps) -> None:
        """One graph per length a chat line can take, so none is recorded on air."""
        longest = int(chunking.MAX_TOTAL_SECONDS * SAMPLE_RATE / HOP_LENGTH)
        cond = torch.zeros(1, 1, self._model.num_channels, device=self.device, dtype=self.dtype)
        text = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        for frames in range(runner.bucket, runner.length(longest) + 1, runner.bucket):
            if isinstance(self._decoder, vocoder.GraphVocoder):
                self._decoder.capture(frames, self.device)
            sampler.sample(
                self._model,
                cond,
                text,
                frames,
                steps=1,
                cfg_strength=self.config.cfg_strength,
                sway=self.config.sway_sampling,
                runner=runner,
            )

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

    def _synthesize(self, text: str, voice: Voice, job: _Job) -> Any:
        ref = self._reference(voice)
        speed = voice.settings.speed
        steps = voice.settings.nfe_steps or self.config.nfe_steps
        pieces = chunking.split_text(
            text, chunking.max_chunk_bytes(voice.text, voice.seconds, speed)
        )
        fade = int(self.config.cross_fade_ms / 1000 * SAMPLE_RATE)
        tail: np.ndarray | None = None
        for index, piece in enumerate(pieces):
            if job.cancel.is_set():
                raise sampler.Cancelled
            wave = self._chunk(ref, piece, voice, steps, job)
            last = index == len(pieces) - 1
            wave, tail = _cross_fade(tail, wave, fade, keep_tail=not last)
            if len(wave):
                yield wave

    def _chunk(
        self,
        ref: _Reference,
        piece: str,
        voice: Voice,
        steps: int,
        job: _Job,
    ) -> np.ndarray:
        ids = sampler.text_ids(ref.text + piece, self._vocab, torch.device(self.device))
        frames = chunking.duration_frames(ref.frames, ref.text, piece, voice.settings.speed)

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
        )
        generated = mel[:, ref.frames :, :].float().permute(0, 2, 1)
        gain = voice.settings.volume
        if voice.rms < TARGET_RMS:
            gain *= voice.rms / TARGET_RMS
        with torch.inference_mode():
            audio = self._decoder.decode(generated)[0]  # a tensor of its own
            # Scaled where it is: on the host, the scaling and its copy took 0.12 ms
            # of each chunk's first audio on the H200 machine.
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


def _is_compile_error(exc: Exception) -> bool:
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException)


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs (the user's cache folder)."""
    import platformdirs

    return platformdirs.user_cache_path("ishowtts", appauthor=False) / "torch-compile"


def _persist_compile_cache() -> None:
    """torch.compile's default cache is a temp folder; in the user's cache folder it
    survives reboots, so a restart on air skips most of the compile."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir())


def _deliver(job: _Job, item: np.ndarray | BaseException | None) -> None:
    """Hand an item to the request's event loop (gone if the bot is shutting down)."""
    if job.loop is None or job.out is None:
        return
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(job.out.put_nowait, item)


def _cross_fade(
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
