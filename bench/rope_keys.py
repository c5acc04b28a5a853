"""Candidate (not in the engine; `bench.step_profile --variants rope_kernel`): the
compiled attention's rotation and penalty column as one Triton kernel.

Compiled, inductor writes the rotated 80-wide queries and keys (`dit.rotate`,
then `dit.penalty_column_attention`'s extra columns) in one pointwise kernel:
13.5 µs a block on an H200, 298 µs of a 2.64 ms guided step. This kernel
reads whole rows of the QKV projection's output (every head of a frame, each
column's rotation partner from the same cache lines) and the `Rotary` tables,
and writes each frame's queries and keys (batch, length, heads, dim +
PENALTY_DIMS) in contiguous runs. Measured interleaved on an H200
(`bench/results/2026-11-30-h200-step-rope-columns.log`): the step 2.665
against 2.681 ms at 1,024 frames, 4.111 against 4.140 at 1,536 (-0.6 %),
bit-identical; too little for a custom op in the compiled graph, whose
failure to build would cost the whole compiled path. An earlier version (one
program per head, sine and cosine taken per element) lost outright, 32.7
against 10.7 µs a call.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from engine.dit import PADDING_PENALTY, PENALTY_DIMS

#: Frames (of the flattened batch) per program, and warps per program: 8 rows
#: ran 2.586 ms a step, 4 rows 2.593, 4 rows on 8 warps 2.591 (H200).
BLOCK_ROWS = 8
NUM_WARPS = 4


@triton.jit
def _rope_columns_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    mask_ptr,
    q_ptr,
    k_ptr,
    rows,
    frames,
    penalty,
    HEADS: tl.constexpr,
    DIM: tl.constexpr,
    EXTRA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """BLOCK frames (rows of the flattened batch), every head: queries and keys
    rotated in float32 (x_transformers' interleaved pairs: a column's partner is
    col ^ 1), then the extra columns, [1, 0, …] for queries and [penalty or 0,
    0, …] for keys."""
    row = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = (row < rows)[:, None]
    frame = row % frames
    col = tl.arange(0, HEADS * DIM)
    d = col % DIM
    head = col // DIM
    width = 3 * HEADS * DIM
    table = frame[:, None] * DIM + d[None, :]
    cos = tl.load(cos_ptr + table, mask=inside, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + table, mask=inside, other=0.0).to(tl.float32)
    sign = tl.where(d % 2 == 0, -1.0, 1.0)[None, :]
    src = qkv_ptr + row[:, None] * width
    out_width = HEADS * (DIM + EXTRA)
    dst = row[:, None] * out_width + (head * (DIM + EXTRA) + d)[None, :]
    for part in tl.static_range(2):  # queries, then keys
        base = src + part * HEADS * DIM
        x = tl.load(base + col[None, :], mask=inside, other=0.0).to(tl.float32)
        partner = tl.load(base + (col ^ 1)[None, :], mask=inside, other=0.0).to(tl.float32)
        out = (x * cos + sign * partner * sin).to(q_ptr.dtype.element_ty)
        if part == 0:
            tl.store(q_ptr + dst, out, mask=inside)
        else:
            tl.store(k_ptr + dst, out, mask=inside)
    extra = tl.arange(0, HEADS * EXTRA)
    e = extra % EXTRA
    tail = row[:, None] * out_width + ((extra // EXTRA) * (DIM + EXTRA) + DIM + e)[None, :]
    real = tl.load(mask_ptr + row, mask=row < rows, other=0) != 0
    zeros = tl.zeros((BLOCK, HEADS * EXTRA), dtype=tl.float32)
    first = (e == 0)[None, :]
    ones = tl.where(first, 1.0, 0.0) + zeros
    keys = tl.where(first & (real[:, None] == 0), penalty, 0.0) + zeros
    tl.store(q_ptr + tail, ones.to(q_ptr.dtype.element_ty), mask=inside)
    tl.store(k_ptr + tail, keys.to(k_ptr.dtype.element_ty), mask=inside)


def _run(
    kernel: Any,
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, frames, width = qkv.shape
    dim = width // (3 * heads)
    query = qkv.new_empty(batch, frames, heads, dim + PENALTY_DIMS)
    key = torch.empty_like(query)
    rows = batch * frames
    grid = (triton.cdiv(rows, BLOCK_ROWS),)
    kernel[grid](
        qkv, cos, sin, mask, query, key, rows, frames, PADDING_PENALTY,
        HEADS=heads, DIM=dim, EXTRA=PENALTY_DIMS, BLOCK=BLOCK_ROWS, num_warps=NUM_WARPS,
    )  # fmt: skip
    return query, key


def launch(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel, launched directly (the interpreter test runs this). qkv (batch,
    frames, 3 * heads * dim) contiguous; cos and sin the `Rotary` tables
    (1, frames, 1, dim); mask (batch, frames), False on padding."""
    return _run(_rope_columns_kernel, qkv, cos, sin, mask, heads)


@triton_op("ishowtts::rope_columns", mutates_args=())
def rope_columns(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same, as an op torch.compile sees into (its kernel joins inductor's graph)."""
    return _run(wrap_triton(_rope_columns_kernel), qkv, cos, sin, mask, heads)


#: What the candidate's attention calls: the op. Triton's CPU interpreter cannot
#: run an op's kernel, so the interpreter test calls `launch`.
op: Any = torch.ops.ishowtts.rope_columns


def usable(qkv: torch.Tensor, rope: Any, heads: int) -> bool:
    """Whether the kernel takes this: a GPU tensor and what `fits`."""
    return bool(qkv.is_cuda) and fits(rope, heads, qkv.shape[-1] // (3 * heads))


def fits(rope: Any, heads: int, dim: int) -> bool:
    """`Rotary` tables without xpos over whole heads, and power-of-two widths
    (Triton's blocks)."""
    from engine.dit import Rotary

    widths = (heads * dim, heads * PENALTY_DIMS)
    return (
        isinstance(rope, Rotary)
        and isinstance(rope.q_scale, float)
        and rope.q_scale == 1.0
        and isinstance(rope.k_scale, float)
        and rope.k_scale == 1.0
        and rope.cos.shape[-1] == dim
        and all(w & (w - 1) == 0 for w in widths)
    )


def reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the kernel computes, the engine's way (`dit.rotate` and the penalty
    columns): the interpreter test's reference."""
    from engine import dit

    batch, frames, width = qkv.shape
    dim = width // (3 * heads)
    q, k, _ = (t.reshape(batch, frames, heads, dim) for t in torch.split(qkv, width // 3, -1))
    q, k = dit.rotate(q, cos, sin, 1.0), dit.rotate(k, cos, sin, 1.0)
    column = torch.zeros(batch, frames, heads, PENALTY_DIMS, dtype=qkv.dtype, device=qkv.device)
    ones, penalty = column.clone(), column.clone()
    ones[..., 0] = 1.0
    penalty[..., 0] = torch.where(mask, 0.0, PADDING_PENALTY)[:, :, None].to(qkv.dtype)
    return torch.cat((q, ones), -1), torch.cat((k, penalty), -1)
