"""The DiT's padded attention: its processor, and the three ways to leave padded keys out.

A chat line's frames are padded up to its bucket, and the padded keys must be
left out of every real frame's attention. Which way is the engine's
`Kernels.attention`, handed to every call: "cudnn" (cuDNN's own padding mask,
`cudnn_attention`), "column" (`penalty_column_attention`, compiled) or "mask"
(`additive_mask_attention`, op by op and on the CPU).

cuDNN's padding mask: torch's SDPA can only leave keys out with a mask tensor,
which costs cuDNN its fast kernel, or with the penalty column (queries and
keys 16 columns wider, and the rotation writes the wider tensors). cuDNN
itself takes each row's count of real keys and skips the rest; torch 2.11
does not pass such counts, so this module builds the cuDNN graph itself
through cudnn-frontend's Python API (`nvidia-cudnn-frontend`, which loads the
cuDNN that torch ships). The counts are a device tensor, so one recorded CUDA
graph serves every line of its bucket, and padded query rows are skipped too
(their output is left unwritten: the attention's caller zeroes padded rows
after the output projection).

Against the penalty column the guided step is faster, the more so the longer
the line (bench/FINDINGS.md). The attention kernel itself is no faster than
the column's: the step gains in the rotation, which writes 64-wide queries
and keys with nothing concatenated.

Where the frontend cannot build or run the graph, the call that failed runs
SDPA with an additive mask instead and reports the failure (`engine.kernels`);
the engine then steps down to SDPA (`engine.attention_unavailable`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from engine import kernels
from engine.kernels import Attention

_graphs: dict[tuple[Any, ...], tuple[Any, dict[str, Any], int]] = {}


class Padding(NamedTuple):
    """Which frames of a padded batch are real: `mask` (batch, length), and `counts`
    (batch,) int32, each row's real frames (the padding is each row's tail).
    Made once per forward, as cuDNN's padding mask reads the counts."""

    mask: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def of(cls, mask: torch.Tensor) -> Padding:
        return cls(mask, lengths(mask))


class Rotary(NamedTuple):
    """The rotary embedding's tables, (1, length, 1, rotated dims) to rotate queries
    and keys laid out (batch, length, heads, dim), and its xpos scales for
    queries and keys (1.0 without xpos).

    Made by `rotary_tables`, outside the attention: compiled, the package's
    `apply_rotary_pos_emb` takes the cosine and sine inside the rotation's own
    kernel, for every element of every head's queries and keys, 64 times what
    the tables hold."""

    cos: torch.Tensor
    sin: torch.Tensor
    q_scale: torch.Tensor | float
    k_scale: torch.Tensor | float


def rotary(freqs: torch.Tensor, xpos_scale: torch.Tensor | float | None) -> Rotary:
    """`Rotary` from what x_transformers' `RotaryEmbedding` returns: angles (1, length,
    dims) and the xpos scale (None or 1.0 without xpos)."""
    cos, sin = freqs.cos()[:, :, None], freqs.sin()[:, :, None]
    if isinstance(xpos_scale, torch.Tensor):
        scale = xpos_scale[:, :, None]
        return Rotary(cos, sin, scale, scale**-1.0)
    return Rotary(cos, sin, 1.0, 1.0)


def rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scale: Any) -> torch.Tensor:
    """x_transformers' `apply_rotary_pos_emb` on (batch, length, heads, dim), from tables."""
    from x_transformers.x_transformers import rotate_half

    dims = cos.shape[-1]
    rotated, rest = t[..., :dims], t[..., dims:]
    rotated = rotated * cos * scale + rotate_half(rotated) * sin * scale
    return torch.cat((rotated, rest), dim=-1).type(t.dtype)


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """Real frames per row (batch,), int32, of a mask whose padding is each row's tail."""
    return mask.sum(dim=-1, dtype=torch.int32)


class PaddedAttention(torch.nn.Module):
    """f5-tts's `AttnProcessor` (torch backend) over its `Attention`, inference only,
    with three changes.

    The padding mask never goes to SDPA as a boolean mask expanded to (b, heads,
    n, n), which costs SDPA its fused kernel (see `masked_attention`). The
    rotation reads `Rotary` tables, on queries and keys left in the
    projection's (batch, length, heads, dim) order, with SDPA given transposed
    views: compiled, the kernel that rotates them and adds the penalty column
    then reads and writes along the same axes instead of transposing on the
    way. And Q, K and V come from one matmul: the three projections' weights
    are joined, once, into a parameter of this module (the package's
    `to_q`/`to_k`/`to_v` are left as they are, and not held here); one wide
    matmul fills the GPU better than three.
    """

    def __init__(self, attn: Any) -> None:
        super().__init__()
        projections = (attn.to_q, attn.to_k, attn.to_v)
        with torch.inference_mode(False), torch.no_grad():
            weight = torch.cat([p.weight for p in projections])
            bias = torch.cat([p.bias for p in projections])
            # An nn.Linear (not bare tensors): torch.compile(dynamic=True) keeps a
            # module parameter's shape static; a symbolic model width would make
            # the block's layer norms slower looped reductions.
            self.qkv = torch.nn.Linear(weight.shape[1], weight.shape[0], device="meta")
            self.qkv.weight = torch.nn.Parameter(weight, requires_grad=False)
            self.qkv.bias = torch.nn.Parameter(bias, requires_grad=False)
        self.split = [p.weight.shape[0] for p in projections]
        self.heads: int = attn.heads
        self.to_out = attn.to_out

    def forward(
        self,
        x: torch.Tensor,
        padding: Padding | None,
        rope: Rotary,
        kernel: Attention = "mask",
    ) -> torch.Tensor:
        """Attention over x (batch, length, dim), the padded keys left out `kernel`'s way."""
        batch, heads = x.shape[0], self.heads
        q, k, v = torch.split(self.qkv(x), self.split, dim=-1)
        # Kept in the projection's (batch, length, heads, dim) order: the rotation
        # (and, compiled, the penalty column) then reads and writes along the
        # same axes, and SDPA takes transposed views.
        query, key, value = (t.reshape(batch, -1, heads, t.shape[-1] // heads) for t in (q, k, v))
        cos, sin, q_scale, k_scale = rope
        query = rotate(query, cos, sin, q_scale)
        key = rotate(key, cos, sin, k_scale)
        if padding is None:
            out = attention(query, key, value)
        else:
            out = masked_attention(query, key, value, padding, kernel)
        out = out.reshape(batch, -1, heads * out.shape[-1])
        projected: torch.Tensor = self.to_out[1](self.to_out[0](out.to(query.dtype)))
        out = projected
        if padding is not None:  # padded rows hold whatever attention left there
            out = out.masked_fill(~padding.mask[..., None], 0.0)
        return out


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """SDPA on (batch, length, heads, dim), the projection's order, in and out."""
    out = F.scaled_dot_product_attention(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=bias,
        scale=scale,
    )
    return out.transpose(1, 2)


def masked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    padding: Padding,
    kernel: Attention,
) -> torch.Tensor:
    """`attention` with the padded keys left out (and, on cuDNN's path, the padded
    queries too: those rows are the caller's to zero), the `kernel` way."""
    if kernel == "cudnn":
        out: torch.Tensor = cudnn_attention(query, key, value, padding.mask, padding.counts)
        return out
    if kernel == "column":
        return penalty_column_attention(query, key, value, padding.mask)
    return additive_mask_attention(query, key, value, padding.mask)


def additive_mask_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The padded keys left out by an additive (batch, 1, 1, length) mask: SDPA keeps
    a fused kernel for it, where the package's expanded boolean mask does not."""
    bias = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
    bias = bias.masked_fill(~mask, float("-inf"))[:, None, None, :]
    return attention(query, key, value, bias)


#: Added to a padded key's score by `penalty_column_attention`: exp() of it is
#: exactly 0 beside any real score, and it is well inside float16's range.
PADDING_PENALTY = -30000.0
#: Width of the column block carrying it (cuDNN: head size 80 ran faster than 72;
#: bench/FINDINGS.md).
PENALTY_DIMS = 16


def penalty_column_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The padded keys left out with no attention mask at all: queries get an extra
    column of ones, keys the padding penalty in it (0 on real frames), which
    adds exactly the mask to every score. cuDNN's attention runs unmasked, on
    its fast kernel, and inductor writes the wider queries and keys in the
    rotation's own kernel."""
    scale = query.shape[-1] ** -0.5
    ones = F.pad(torch.ones_like(query[..., :1]), (0, PENALTY_DIMS - 1))
    penalty = torch.zeros(mask.shape, dtype=key.dtype, device=key.device)
    penalty = penalty.masked_fill(~mask, PADDING_PENALTY)[:, :, None, None]
    penalty = F.pad(penalty.expand(*key.shape[:-1], 1), (0, PENALTY_DIMS - 1))
    query = torch.cat((query, ones), dim=-1)
    key = torch.cat((key, penalty), dim=-1)
    return attention(query, key, value, scale=scale)


def _unwritten(query: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    """The op's output, allocated (also its shape for torch.compile's tracing)."""
    return torch.empty(query.shape, dtype=query.dtype, device=query.device)


@torch.library.custom_op("ishowtts::padded_attention", mutates_args=())
def cudnn_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """SDPA on (batch, length, heads, dim) with each row's keys past `counts` (batch,
    int32, from `lengths(mask)`) left out; padded query rows are not computed. A
    custom op: torch.compile leaves it whole. Where cuDNN cannot take it, this call
    runs SDPA with an additive mask and reports the failure (`engine.kernels`)."""
    try:
        return _run(query, key, value, counts)
    except Exception as exc:  # the frontend or this GPU's cuDNN cannot take it
        kernels.report("attention", exc)
    return additive_mask_attention(query, key, value, mask).contiguous()


cudnn_attention.register_fake(_unwritten)


def _run(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    cudnn = _frontend()
    out = _unwritten(query)
    views = (query, key, value, out)
    tensors = {name: t.transpose(1, 2) for name, t in zip("qkvo", views, strict=True)}
    graph, made, workspace_size = _graph(tensors)
    workspace = torch.empty(max(workspace_size, 1), dtype=torch.uint8, device=query.device)
    handle = _handle(query.device.index)
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(query.device).cuda_stream)
    counts = counts.contiguous()
    pack = {made[name]: t for name, t in tensors.items()}
    pack[made["seq_q"]] = pack[made["seq_kv"]] = counts
    graph.execute(pack, workspace, handle=handle)
    return out


@functools.cache
def _frontend() -> Any:
    import cudnn

    return cudnn


@functools.cache
def _handle(device_index: int | None) -> Any:
    return _frontend().create_handle()


def _graph(tensors: dict[str, torch.Tensor]) -> tuple[Any, dict[str, Any], int]:
    """The built cuDNN graph for these (batch, heads, length, dim) views, made once
    per shape and layout (a bucket's first line; warm-up records every bucket)."""
    query = tensors["q"]
    cache_key = (
        tuple((name, tuple(t.shape), t.stride()) for name, t in tensors.items()),
        query.dtype,
        query.device.index,
    )
    built = _graphs.get(cache_key)
    if built is not None:
        return built
    cudnn = _frontend()
    io = getattr(cudnn.data_type, "HALF" if query.dtype == torch.float16 else "BFLOAT16")
    graph = cudnn.pygraph(
        io_data_type=io,
        intermediate_data_type=cudnn.data_type.FLOAT,
        compute_data_type=cudnn.data_type.FLOAT,
        handle=_handle(query.device.index),
    )
    made = {
        name: graph.tensor(name=name, dim=list(t.shape), stride=list(t.stride()), data_type=io)
        for name, t in tensors.items()
        if name != "o"
    }
    batch = query.shape[0]
    for name in ("seq_q", "seq_kv"):  # both bound to the counts
        made[name] = graph.tensor(
            name=name, dim=[batch, 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.INT32
        )
    out, _ = graph.sdpa(
        name="padded_attention",
        q=made["q"],
        k=made["k"],
        v=made["v"],
        generate_stats=False,
        attn_scale=query.shape[-1] ** -0.5,
        use_padding_mask=True,
        seq_len_q=made["seq_q"],
        seq_len_kv=made["seq_kv"],
    )
    out.set_output(True).set_dim(list(tensors["o"].shape)).set_stride(list(tensors["o"].stride()))
    made["o"] = out
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    built = (graph, made, int(graph.get_workspace_size()))
    _graphs[cache_key] = built
    return built
