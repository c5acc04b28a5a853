"""Candidate (not in the engine; measured by `bench.step_profile --variants
fused_rope_keys`): the attention's rotary embedding, head layout and padding
penalty in one Triton kernel.

cuDNN's attention at the step's shape takes about 42 µs per block with the
additive padding mask and about 28 µs unmasked with 80-wide queries and keys
whose extra column carries the mask (bit-identical on real frames; H200).
This kernel reads the QKV projection's output once and writes the rotated
80-wide queries and keys (penalty column included) in the layout SDPA takes.
Measured on an H200 (stop 17, `2026-11-30-h200-step-rope-keys-v2.log`) it
loses: 32.7 µs a call against 10.7 µs for inductor's own 64-wide rotation,
and the whole step 3.50 ms against 2.96 ms.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from engine.dit import PADDING_PENALTY, PENALTY_DIMS

BLOCK_FRAMES = 64


@triton.jit
def _rotate(src, dst, col, cos, sin, inside):
    """x_transformers' rotation of interleaved pairs, in float32, on a whole
    (frames, DIM) tile: each column's partner is the column beside it (col ^ 1),
    read again from cache, so loads and stores stay contiguous rows."""
    x = tl.load(src + col[None, :], mask=inside, other=0.0).to(tl.float32)
    partner = tl.load(src + (col ^ 1)[None, :], mask=inside, other=0.0).to(tl.float32)
    sign = tl.where(col % 2 == 0, -1.0, 1.0)[None, :]
    tl.store(dst + col[None, :], (x * cos + sign * partner * sin).to(dst.dtype.element_ty),
             mask=inside)  # fmt: skip


@triton.jit
def _rope_keys_kernel(
    qkv_ptr,
    freqs_ptr,
    mask_ptr,
    q_ptr,
    k_ptr,
    frames,
    heads,
    penalty,
    DIM: tl.constexpr,
    EXTRA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Queries and keys of one head for BLOCK frames of one row, rotated, then the
    extra columns: [1, 0, …] for queries, [penalty or 0, 0, …] for keys."""
    block, head, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    frame = block * BLOCK + tl.arange(0, BLOCK)
    col = tl.arange(0, DIM)
    inside = (frame < frames)[:, None]
    width = 3 * heads * DIM
    src = qkv_ptr + (row * frames + frame[:, None]) * width + head * DIM
    angle = tl.load(freqs_ptr + frame[:, None] * DIM + col[None, :], mask=inside, other=0.0)
    angle = angle.to(tl.float32)
    cos, sin = tl.cos(angle), tl.sin(angle)
    out_width = DIM + EXTRA
    dst = ((row * heads + head) * frames + frame[:, None]) * out_width
    _rotate(src, q_ptr + dst, col, cos, sin, inside)
    _rotate(src + heads * DIM, k_ptr + dst, col, cos, sin, inside)
    extra = tl.arange(0, EXTRA)
    first = (extra == 0)[None, :]
    real = tl.load(mask_ptr + row * frames + frame, mask=frame < frames, other=0) != 0
    zeros = tl.zeros((BLOCK, EXTRA), dtype=tl.float32)
    ones = tl.where(first, 1.0, 0.0) + zeros
    keys = tl.where(first & (real[:, None] == 0), penalty, 0.0) + zeros
    tail = dst + DIM + extra[None, :]
    tl.store(q_ptr + tail, ones.to(q_ptr.dtype.element_ty), mask=inside)
    tl.store(k_ptr + tail, keys.to(k_ptr.dtype.element_ty), mask=inside)


def launch(
    qkv: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel, launched directly (the interpreter test runs this)."""
    return _run(_rope_keys_kernel, qkv, freqs, mask, heads)


@triton_op("ishowtts::rope_keys", mutates_args=())
def rope_keys(
    qkv: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same, as an op torch.compile sees into (its kernel joins inductor's graph)."""
    return _run(wrap_triton(_rope_keys_kernel), qkv, freqs, mask, heads)


def _run(
    kernel: Any, qkv: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, frames, width = qkv.shape
    dim = width // (3 * heads)
    query = qkv.new_empty(batch, heads, frames, dim + PENALTY_DIMS)
    key = torch.empty_like(query)
    grid = (triton.cdiv(frames, BLOCK_FRAMES), heads, batch)
    kernel[grid](
        qkv, freqs.contiguous(), mask.contiguous(), query, key, frames, heads, PADDING_PENALTY,
        DIM=dim, EXTRA=PENALTY_DIMS, BLOCK=BLOCK_FRAMES,
    )  # fmt: skip
    return query, key


#: What the attention calls: the op (torch.compile sees into it). Triton's CPU
#: interpreter cannot run an op's kernel, so the interpreter test calls `launch`.
op: Any = torch.ops.ishowtts.rope_keys


def reference(
    qkv: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the kernel computes, from torch ops and f5-tts's own rotary function."""
    from f5_tts.model.modules import apply_rotary_pos_emb

    batch, frames, width = qkv.shape
    dim = width // (3 * heads)
    q, k, _ = (
        t.reshape(batch, frames, heads, dim).transpose(1, 2) for t in qkv.split(width // 3, -1)
    )
    q, k = apply_rotary_pos_emb(q, freqs), apply_rotary_pos_emb(k, freqs)
    column = torch.zeros(batch, heads, frames, PENALTY_DIMS, dtype=qkv.dtype, device=qkv.device)
    ones, penalty = column.clone(), column.clone()
    ones[..., 0] = 1.0
    penalty[..., 0] = torch.where(mask, 0.0, PADDING_PENALTY)[:, None, :].to(qkv.dtype)
    return torch.cat((q, ones), -1), torch.cat((k, penalty), -1)
