"""The Triton kernel behind `engine.conv_pos` (imported only where Triton is)."""

import triton
import triton.language as tl


@triton.jit
def conv_mish(
    x_ptr,
    w_ptr,
    bias_ptr,
    mask_ptr,
    res_ptr,
    out_ptr,
    frames,
    channels,
    N_TAPS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    WIDTH: tl.constexpr,
):
    """One group's output channels for BLOCK_M frames of one row: the taps' sum of
    (frames × WIDTH) @ (WIDTH × WIDTH) products, in float32, then bias, mask, Mish."""
    block, group, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    frame = block * BLOCK_M + tl.arange(0, BLOCK_M)
    chan = tl.arange(0, WIDTH)
    x_row = x_ptr + row * frames * channels + group * WIDTH
    mask_row = mask_ptr + row * frames
    acc = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32)
    for tap in range(N_TAPS):
        src = frame + tap - N_TAPS // 2
        inside = (src >= 0) & (src < frames)
        real = tl.load(mask_row + src, mask=inside, other=0) != 0
        xs = tl.load(x_row + src[:, None] * channels + chan[None, :], mask=real[:, None], other=0.0)
        w_tap = w_ptr + (group * N_TAPS + tap) * WIDTH * WIDTH
        w = tl.load(w_tap + chan[:, None] * WIDTH + chan[None, :])
        acc += tl.dot(xs, w, input_precision="ieee")
    acc += tl.load(bias_ptr + group * WIDTH + chan).to(tl.float32)[None, :]
    # Mish: x · tanh(softplus(x)), softplus taken as x past 20 as PyTorch does.
    soft = tl.where(acc > 20.0, acc, tl.log(1.0 + tl.exp(acc)))
    y = acc * (2.0 * tl.sigmoid(2.0 * soft) - 1.0)
    inside = frame < frames
    real = tl.load(mask_row + frame, mask=inside, other=0) != 0
    y = tl.where(real[:, None], y, 0.0)
    offsets = row * frames * channels + frame[:, None] * channels + group * WIDTH + chan[None, :]
    if HAS_RESIDUAL:
        y += tl.load(res_ptr + offsets, mask=inside[:, None], other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=inside[:, None])
