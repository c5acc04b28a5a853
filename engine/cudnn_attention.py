"""The padded attention on a GPU as cuDNN's own padding mask.

A chat line's frames are padded up to its bucket, and the padded keys must be
left out of every real frame's attention. torch's SDPA can only say so with a
mask tensor, which costs cuDNN its fast kernel, or with the penalty column
(`dit.penalty_column_attention`: queries and keys 16 columns wider, and the
rotation writes the wider tensors). cuDNN itself takes each row's count of
real keys and skips the rest; torch 2.11 does not pass such counts, so this
module builds the cuDNN graph itself through cudnn-frontend's Python API
(`nvidia-cudnn-frontend`, which loads the cuDNN that torch ships). The counts
are a device tensor, so one recorded CUDA graph serves every line of its
bucket, and padded query rows are skipped too (their output is left
unwritten: the attention's caller zeroes padded rows after the output
projection).

Against the penalty column the guided step is faster, the more so the longer
the line (bench/FINDINGS.md). The attention kernel itself is no faster than
the column's: the step gains in the rotation, which writes 64-wide queries
and keys with nothing concatenated.

Where the frontend is missing (macOS, or a CPU) the engine keeps its other
paths; where it is there but cannot build or run the graph, the first failure
is logged once (`engine.attention_unavailable`) and SDPA with an additive mask
runs in its place, inside the same call.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import structlog
import torch

log = structlog.get_logger()

#: Whether the frontend is installed (found without importing it: the import
#: happens on the first call, outside any compiled code).
INSTALLED = importlib.util.find_spec("cudnn") is not None

_failed: list[str] = []  # the first failure's message, once one has happened
_graphs: dict[tuple[Any, ...], tuple[Any, dict[str, Any], int]] = {}

_IO_TYPES = (torch.float16, torch.bfloat16)


def _ready(on_gpu: bool, dtype: torch.dtype) -> bool:
    return INSTALLED and not _failed and on_gpu and dtype in _IO_TYPES


def usable(query: torch.Tensor) -> bool:
    """Whether this path takes `query` (batch, length, heads, dim): a GPU tensor in
    fp16 or bf16, the frontend installed and not yet failed, and a head size
    that cuDNN's fused attention takes."""
    dim = query.shape[-1]
    return _ready(query.is_cuda, query.dtype) and dim % 8 == 0 and dim <= 128


def path(device: str, dtype: torch.dtype) -> str:
    """How padded attention runs on `device` (`engine.ready` reports it): "cudnn"
    here, otherwise "sdpa" (the penalty column compiled, an additive mask not)."""
    return "cudnn" if _ready(device.startswith("cuda"), dtype) else "sdpa"


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """Real frames per row (batch,), int32, of a mask whose padding is each row's tail."""
    return mask.sum(dim=-1, dtype=torch.int32)


def _unwritten(query: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    """The op's output, allocated (also its shape for torch.compile's tracing)."""
    return torch.empty(query.shape, dtype=query.dtype, device=query.device)


@torch.library.custom_op("ishowtts::padded_attention", mutates_args=())
def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """SDPA on (batch, length, heads, dim) with each row's keys past `counts` (batch,
    int32, from `lengths(mask)`) left out; padded query rows are not computed. A
    custom op: torch.compile leaves it whole."""
    if not _failed:
        try:
            return _run(query, key, value, counts)
        except Exception as exc:  # the frontend or this GPU's cuDNN cannot take it
            _failed.append(str(exc))
            log.warning("engine.attention_unavailable", error=str(exc)[:300], fallback="sdpa")
    from engine import dit

    return dit.additive_mask_attention(query, key, value, mask).contiguous()


attention.register_fake(_unwritten)


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
