"""The engine's start-up: the device, the kernels, loading, warm-up and graph capture.

`Startup` is the engine's base (engine/synth.py is the engine): it loads the
model on the chosen device, chooses the `Kernels` once (engine/kernels.py),
warms up and records the CUDA graphs before the bot goes live, and steps the
kernels down one rung where a piece fails, at warm-up or on air. A failure on
Apple's GPU moves the engine to the CPU.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from engine import chunking, dit, graphs, kernels, model, sampler, vocoder
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
from engine.kernels import Kernels
from engine.voices import Voice, VoiceLibrary, VoiceSettings
from engine.worker import Worker, _Job

log = structlog.get_logger()

#: Two warm-up passes of different lengths: after the second, torch.compile has
#: built its dynamic-shape graph, so a new message length never recompiles on air.
#: The first must not pad to 1,024 frames: a first length equal to the model's width
#: gets specialised (duck sizing), costing a recompile and a second graph.
WARMUP = (
    (2.0, "Hello there, this is a warm up."),
    (5.0, "A second, longer warm up sentence, so that every later length reuses the graph."),
)

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


class Startup(Worker):
    """Start-up and the kernels' fallbacks; the engine (engine/synth.py) adds the pipeline."""

    voices: VoiceLibrary
    files: ModelFiles
    device: str
    dtype: torch.dtype
    device_reason: str
    kernels: Kernels
    _requested: Kernels | None
    _progress: Any
    _references: dict[str, Any]
    _model: Any
    _runner: sampler.Steps
    _vocoder: Any
    _decoder: Any
    _vocab: dict[str, int]

    def _synthesize(self, text: str, voice: Voice, job: _Job) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _bind(self) -> None:
        bind_device(self.device)

    def _start_up(self) -> dict[str, Any]:
        try:
            timings = self._start()
        except Exception as exc:
            if not self._leave_mps(exc, during="start"):
                raise
            timings = self._start()
        return {
            "device": self.device,
            "device_reason": self.device_reason,
            "dtype": str(self.dtype).removeprefix("torch."),
            "path": self.path,
            "conv": self.kernels.conv,
            "attention": "cudnn" if self.kernels.attention == "cudnn" else "sdpa",
            "kernels": str(self.kernels),
            **timings,
        }

    def _start(self) -> dict[str, float]:
        """Load, choose the kernels and warm up on `self.device`; returns the seconds
        each part took, as `engine.ready` reports them."""
        bind_device(self.device)
        kernels.failures()  # a failure reported before this start is not this engine's
        started = time.perf_counter()
        self._progress(f"loading the voice model on {self.device}…")
        self._load()
        loaded = time.perf_counter()
        chosen = self._requested or kernels.choose(self.config, self.device, self.dtype)
        if chosen.compiled:
            _persist_compile_cache()
            dit.compile_regions(self._model.transformer)
        self._use(chosen)
        set_up = time.perf_counter()
        doing = "compiling (the first start can take a minute)" if chosen.compiled else "warming up"
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
        # Only our modules are kept: the package's separate Q, K and V
        # projections, which they do not hold, are freed with its CFM.
        self._model = model.Model(load_f5(self.files, self.config.arch, self.device, self.dtype))
        self._vocoder = load_vocos(self.files, self.device)
        self.kernels = kernels.EAGER
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
        self._requested = None  # the CPU's kernels, whatever was asked for the GPU
        return True

    @property
    def path(self) -> str:
        """How sampling steps run: eager, compiled, graphs or compiled+graphs."""
        return self.kernels.path

    def _use(self, chosen: Kernels) -> None:
        """Run with `chosen` from the next request on: a fresh graph runner when it
        records graphs (those recorded so far may have run other kernels)."""
        if chosen.graphs:
            self._runner = graphs.GraphSteps(max_rows=self.config.batch.max_size)
            if not isinstance(self._decoder, vocoder.GraphVocoder):
                self._decoder = vocoder.GraphVocoder(self._vocoder)
        else:
            self._runner = sampler.EagerSteps()
            self._decoder = self._vocoder
        self.kernels = chosen

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
        if self.kernels.compiled and _is_compile_error(exc):
            lower = kernels.step_down(self.kernels, "compile", str(exc))
            dit.uncompile_regions(self._model.transformer)
        elif self.kernels.graphs:
            lower = kernels.step_down(self.kernels, "graphs", str(exc))
        else:
            return False
        assert lower is not None
        self._use(lower)
        return True

    def _step_down_failed(self) -> None:
        """Step down past the kernels that failed inside a call since the last look
        (each such call already fell back on its own)."""
        for piece, error in kernels.failures():
            lower = kernels.step_down(self.kernels, piece, error)
            if lower is not None:
                self.kernels = lower

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
            self._step_down_failed()
            phases["graphs_s"] = round(time.perf_counter() - started, 2)
        return phases

    def _capture_graphs(self, runner: graphs.GraphSteps) -> None:
        """One graph per length a chat line can take, and per batch size where
        requests are batched (`engine.batch`), so none is recorded on air."""
        longest = int(chunking.MAX_TOTAL_SECONDS * SAMPLE_RATE / HOP_LENGTH)
        cond = torch.zeros(1, 1, self._model.num_channels, device=self.device, dtype=self.dtype)
        text = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        for frames in range(runner.bucket, runner.length(longest) + 1, runner.bucket):
            if isinstance(self._decoder, vocoder.GraphVocoder):
                self._decoder.capture(frames, self.device)
            for rows in runner.batch_sizes:
                sampler.sample_batch(
                    self._model,
                    [sampler.Line(cond, text, frames)] * rows,
                    steps=1,
                    cfg_strength=self.config.cfg_strength,
                    sway=self.config.sway_sampling,
                    runner=runner,
                    kernels=self.kernels,
                )


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
