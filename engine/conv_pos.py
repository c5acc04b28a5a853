"""The DiT's position convolutions as one Triton kernel per convolution.

f5-tts's `ConvPositionEmbedding` is two grouped 1-D convolutions (16 groups,
kernel 31), each followed by the padding mask and Mish. cuDNN runs a grouped
convolution as one small kernel per group plus layout copies on either side,
a third of a guided step's kernels. Here each convolution is one kernel that
reads the hidden state row-major (frames × channels, as the blocks keep it),
computes every group's taps as small matrix products, and applies the bias,
the mask and Mish (and the embedding's residual) before writing once.

Triton is there with torch.compile on Linux and often missing on Windows; where
it is missing, or its first kernel fails to build, the package's convolutions
run instead (`engine.conv_unavailable`, logged once) with the same result
within fp16 rounding.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import structlog
import torch

log = structlog.get_logger()

#: Frames per program and the launch settings: the fastest of those tried
#: (bench/FINDINGS.md).
BLOCK_FRAMES = 128
NUM_WARPS = 4
NUM_STAGES = 3

_failed: list[str] = []  # the first failure's message, once one has happened


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _usable(on_gpu: bool) -> bool:
    return on_gpu and not _failed and triton_available()


def path(device: str) -> str:
    """Which position convolutions run on `device`: "triton" or "package"
    (`engine.ready` reports it)."""
    return "triton" if _usable(device.startswith("cuda")) else "package"


def supported(conv_pos: Any, h: torch.Tensor) -> bool:
    """Whether the kernel takes this module at this input: a GPU tensor, Triton, and
    a group width that its matrix products take (a power of two, at least 16)."""
    if not _usable(h.is_cuda):
        return False
    conv = conv_pos.conv1d[0]
    width: int = conv.in_channels // conv.groups
    return width >= 16 and width & (width - 1) == 0


def position_embedding(conv_pos: Any, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`conv_pos(h, mask) + h` for h (batch, frames, dim), row-major."""
    if supported(conv_pos, h):
        try:
            return fused_position_embedding(conv_pos, h, mask)
        except Exception as exc:  # Triton present but unable to build the kernel
            _failed.append(str(exc))
            log.warning("engine.conv_unavailable", error=str(exc)[:300], fallback="cudnn")
    out: torch.Tensor = conv_pos(h, mask) + h
    return out.contiguous()


def fused_position_embedding(
    conv_pos: Any, h: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The Triton path of `position_embedding` (no fallback: tests call it directly)."""
    first, second = conv_pos.conv1d[0], conv_pos.conv1d[2]
    h = h.contiguous()
    if mask is None:
        mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    mask = mask.contiguous()  # the kernel reads it row by row
    inner = grouped_conv_mish(h, first, mask)
    return grouped_conv_mish(inner, second, mask, residual=h)


def _taps(conv: torch.nn.Conv1d) -> torch.Tensor:
    """The weight as (groups, taps, in, out), made once per convolution and kept on it."""
    cached: torch.Tensor | None = conv.__dict__.get("_ishowtts_taps")
    w = conv.weight
    if cached is None or cached.dtype != w.dtype or cached.device != w.device:
        groups, (c_out, c_in, taps) = conv.groups, w.shape
        with torch.inference_mode(False), torch.no_grad():
            cached = (
                w.detach()
                .reshape(groups, c_out // groups, c_in, taps)
                .permute(0, 3, 2, 1)
                .contiguous()
            )
        conv.__dict__["_ishowtts_taps"] = cached
    return cached


def grouped_conv_mish(
    x: torch.Tensor,
    conv: torch.nn.Conv1d,
    mask: torch.Tensor,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """mish(conv(x · mask) · mask) (+ residual), x (batch, frames, channels) row-major."""
    from engine import _conv_kernel

    batch, frames, channels = x.shape
    taps = _taps(conv)
    groups, n_taps, width, _ = taps.shape
    out = torch.empty_like(x)
    grid = (-(-frames // BLOCK_FRAMES), groups, batch)
    _conv_kernel.conv_mish[grid](
        x,
        taps,
        conv.bias,
        mask,
        residual if residual is not None else x,
        out,
        frames,
        channels,
        N_TAPS=n_taps,
        HAS_RESIDUAL=residual is not None,
        BLOCK_M=BLOCK_FRAMES,
        WIDTH=width,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    return out
