"""Which kernels the engine runs: one frozen `Kernels` value, chosen once, stepped down on failure.

The engine's path is four choices: torch.compile over the DiT's blocks or not,
each sampling step replayed as a CUDA graph or not, the position convolutions
as our Triton kernel or the package's, and the padded attention as cuDNN's
padding mask, SDPA with a penalty column (compiled) or SDPA with an additive
mask (op by op). `choose` makes them from the config, the device and dtype
and what is installed; `step_down` drops one when it fails. The DiT's code
dispatches on the value it is handed and never decides for itself, so a
compiled or captured forward sees a constant.

A convolution or attention kernel that fails inside a call still gives that
call a correct result (the next path down, in the same call); it reports the
failure here, and the engine steps its value down after the call (`failures`).
"""

from __future__ import annotations

import functools
import importlib.util
import queue
from dataclasses import dataclass, replace
from typing import Literal

import structlog
import torch

from engine.config import EngineConfig

log = structlog.get_logger()

Conv = Literal["triton", "package"]
Attention = Literal["cudnn", "column", "mask"]
Piece = Literal["compile", "graphs", "conv", "attention"]


@dataclass(frozen=True, slots=True)
class Kernels:
    """How the DiT runs: compiled blocks, CUDA graphs, which convolutions, which attention."""

    compiled: bool
    graphs: bool
    conv: Conv
    attention: Attention

    @property
    def path(self) -> str:
        """How sampling steps run: eager, compiled, graphs or compiled+graphs."""
        if self.graphs:
            return "compiled+graphs" if self.compiled else "graphs"
        return "compiled" if self.compiled else "eager"

    def __str__(self) -> str:
        return f"{self.path}/{self.conv}/{self.attention}"


#: Op by op with the package's convolutions: what runs anywhere (the CPU, MPS).
EAGER = Kernels(compiled=False, graphs=False, conv="package", attention="mask")

#: The position convolutions' groups (f5-tts's `ConvPositionEmbedding` default, which
#: our loader keeps) and the DiT's head size (its `dim_head` default, likewise).
CONV_GROUPS = 16
HEAD_DIM = 64

#: The dtypes cuDNN's fused attention takes.
CUDNN_TYPES = (torch.float16, torch.bfloat16)


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def cudnn_frontend_installed() -> bool:
    """nvidia-cudnn-frontend, found without importing it (the import happens on the
    first call, outside any compiled code)."""
    return importlib.util.find_spec("cudnn") is not None


def conv_fits(dim: int) -> bool:
    """Whether the Triton convolution takes a model of width `dim`: a group width its
    matrix products take (a power of two, at least 16)."""
    width = dim // CONV_GROUPS
    return width >= 16 and width & (width - 1) == 0


def unmasked_attention(compiled: bool) -> Attention:
    """SDPA's way to leave padded keys out: the penalty column where compiled (it was
    measured compiled only), an additive mask op by op (fewer launches there)."""
    return "column" if compiled else "mask"


def choose(config: EngineConfig, device: str, dtype: torch.dtype) -> Kernels:
    """The fastest kernels this machine has; a missing piece costs a warning, never the start."""
    if not device.startswith("cuda"):
        return EAGER
    compiled = False
    if config.compile:
        if triton_installed():
            compiled = True
        else:
            log.warning(
                "engine.compile_unavailable",
                reason="Triton is not installed",
                fallback="cuda graphs" if config.cuda_graphs else "eager",
            )
    conv: Conv = "triton" if triton_installed() and conv_fits(config.arch.dim) else "package"
    cudnn = cudnn_frontend_installed() and dtype in CUDNN_TYPES and HEAD_DIM % 8 == 0
    attention: Attention = "cudnn" if cudnn else unmasked_attention(compiled)
    return Kernels(compiled, config.cuda_graphs, conv, attention)


def step_down(kernels: Kernels, piece: Piece, error: str) -> Kernels | None:
    """`kernels` without the `piece` that failed (logged), or None where it is
    already not in use. A compiler that cannot build → the same path uncompiled;
    graphs that cannot be recorded → no graphs; the Triton convolutions → the
    package's; cuDNN's attention → SDPA."""
    if piece == "compile" and kernels.compiled:
        attention = kernels.attention if kernels.attention == "cudnn" else unmasked_attention(False)
        log.warning(
            "engine.compile_failed",
            error=error[:500],
            fallback="cuda graphs" if kernels.graphs else "eager",
        )
        return replace(kernels, compiled=False, attention=attention)
    if piece == "graphs" and kernels.graphs:
        log.warning("engine.graphs_unavailable", error=error, fallback="no graphs")
        return replace(kernels, graphs=False)
    if piece == "conv" and kernels.conv == "triton":
        log.warning("engine.conv_unavailable", error=error[:300], fallback="cudnn")
        return replace(kernels, conv="package")
    if piece == "attention" and kernels.attention == "cudnn":
        log.warning("engine.attention_unavailable", error=error[:300], fallback="sdpa")
        return replace(kernels, attention=unmasked_attention(kernels.compiled))
    return None


#: Failures inside a kernel's call, for the engine to step down on: the kernels
#: run inside compiled code and custom ops, which cannot be handed the engine.
#: Nothing reads this to choose a path; the engine's `Kernels` value does that.
_failures: queue.SimpleQueue[tuple[Piece, str]] = queue.SimpleQueue()


def report(piece: Piece, exc: BaseException) -> None:
    """A kernel failed inside a call (and that call fell back on its own)."""
    _failures.put((piece, str(exc)))


def failures() -> list[tuple[Piece, str]]:
    """The failures reported since the last call, oldest first (and forgets them)."""
    out = []
    while True:
        try:
            out.append(_failures.get_nowait())
        except queue.Empty:
            return out
