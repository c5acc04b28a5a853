"""The DiT's position convolutions as one Triton kernel per convolution.

f5-tts's `ConvPositionEmbedding` is two grouped 1-D convolutions (16 groups,
kernel 31), each followed by the padding mask and Mish. cuDNN runs a grouped
convolution as one small kernel per group plus layout copies on either side,
a third of a guided step's kernels. Here each convolution is one kernel that
reads the hidden state row-major (frames × channels, as the blocks keep it),
computes every group's taps as small matrix products, and applies the bias,
the mask and Mish (and the embedding's residual) before writing once.

Triton is there with torch.compile on Linux and often missing on Windows; where
it is missing the engine's `Kernels.conv` is "package" and the package's
convolutions run, with the same result within fp16 rounding. Where the kernel
fails to build, the call that failed runs the package's and reports it
(`engine.kernels`); the engine then steps down (`engine.conv_unavailable`).
"""

from __future__ import annotations

from typing import Any

import torch

from engine import kernels
from engine.kernels import Conv

#: Frames per program and the launch settings: the fastest of those tried
#: (bench/FINDINGS.md).
BLOCK_FRAMES = 128
NUM_WARPS = 4
NUM_STAGES = 3


class PositionConv(torch.nn.Module):
    """f5-tts's `ConvPositionEmbedding`, with the Triton kernel's taps of its two
    convolutions made on first use and kept here."""

    def __init__(self, package: Any) -> None:
        super().__init__()
        self.package = package
        #: (groups, taps, in, out) per convolution, by its index in `conv1d`.
        self.taps: dict[int, torch.Tensor] = {}

    def taps_of(self, index: int) -> torch.Tensor:
        """The weight of convolution `index` as (groups, taps, in, out)."""
        conv = self.package.conv1d[index]
        cached = self.taps.get(index)
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
            self.taps[index] = cached
        return cached


def position_embedding(
    conv_pos: PositionConv, h: torch.Tensor, mask: torch.Tensor | None, conv: Conv
) -> torch.Tensor:
    """`conv_pos(h, mask) + h` for h (batch, frames, dim), row-major, by the `conv` kernels."""
    if conv == "triton":
        try:
            return fused_position_embedding(conv_pos, h, mask)
        except Exception as exc:  # Triton present but unable to build the kernel
            kernels.report("conv", exc)
    out: torch.Tensor = conv_pos.package(h, mask) + h
    return out.contiguous()


def fused_position_embedding(
    conv_pos: PositionConv, h: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The Triton path of `position_embedding` (no fallback: tests call it directly)."""
    first, second = conv_pos.package.conv1d[0], conv_pos.package.conv1d[2]
    h = h.contiguous()
    if mask is None:
        mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    mask = mask.contiguous()  # the kernel reads it row by row
    inner = grouped_conv_mish(h, first, conv_pos.taps_of(0), mask)
    return grouped_conv_mish(inner, second, conv_pos.taps_of(2), mask, residual=h)


def grouped_conv_mish(
    x: torch.Tensor,
    conv: torch.nn.Conv1d,
    taps: torch.Tensor,
    mask: torch.Tensor,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """mish(conv(x · mask) · mask) (+ residual), x (batch, frames, channels) row-major;
    `taps` is the convolution's weight as `PositionConv.taps_of` lays it out."""
    from engine import _conv_kernel

    batch, frames, channels = x.shape
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
