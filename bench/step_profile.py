"""Where one guided sampling step's time goes on the GPU, and what candidate
changes do to it. Each variant is timed as the engine runs it: regional
compile, padded to its bucket, replayed as a CUDA graph, at the issue's
reference length (940 frames, padded to 1,024, batch 1 with guidance).

Prints JSON lines: kernel time per step by category and the top kernels,
the attention each way (graphed) and GEMM rates at the step's shapes, the step time of each
variant, the vocoder's parts, and the per-request set-up.

Run on the GPU:  python -m bench.step_profile [--variants baseline ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine import conv_pos, cudnn_attention, dit, graphs, sampler
from engine.checkpoints import ModelFiles, load_f5, load_vocos
from engine.config import ArchConfig
from engine.graphs import GraphSteps
from tests.engine.tiny import PUBLISHED_VOCOS_CONFIG, write_f5, write_vocos

FRAMES = 940
TEXT_LEN = 130


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def cuda_ms(fn: Callable[[], object], reps: int = 50, warm: int = 5) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()  # type: ignore[no-untyped-call]
    for _ in range(reps):
        fn()
    end.record()  # type: ignore[no-untyped-call]
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / reps  # type: ignore[no-untyped-call]


def wall_ms(fn: Callable[[], object], reps: int = 20, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / reps * 1000


def inputs(model: Any, length: int) -> sampler.StepInputs:
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, length, 100, device="cuda", dtype=dtype)
    text = torch.randint(0, 100, (1, TEXT_LEN), device="cuda")
    mask = (torch.arange(length, device="cuda") < FRAMES)[None]
    mods = dit.modulations(model.transformer, torch.full((1,), 0.5, device="cuda", dtype=dtype))
    dts = torch.zeros(1, device="cuda", dtype=dtype)  # timed steps leave x as it is
    ids = dit.pad_ids([text], length)
    return sampler.StepInputs(model.transformer, x, x.clone(), ids, mask, 2.0, mods, dts)


# variants ---------------------------------------------------------------------------
def unfold_conv(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A grouped conv1d as one batched matmul over the groups (im2col)."""
    w, g = conv.weight, conv.groups
    c_out, c_in_g, k = w.shape
    b, _, n = x.shape
    cols = F.pad(x, (k // 2, k // 2)).unfold(2, k, 1)  # (b, c, n, k)
    cols = cols.reshape(b, g, c_in_g, n, k).permute(1, 0, 3, 2, 4).reshape(g, b * n, c_in_g * k)
    wg = w.reshape(g, c_out // g, c_in_g * k).transpose(1, 2)
    out = torch.bmm(cols, wg).reshape(g, b, n, c_out // g).permute(1, 0, 3, 2)
    return out.reshape(b, c_out, n) + conv.bias[None, :, None]


def patch_unfold(model: Any) -> None:
    pos = model.transformer.input_embed.conv_pos_embed

    def forward(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        m = mask.unsqueeze(1) if mask is not None else None
        x = x.permute(0, 2, 1)
        if m is not None:
            x = x.masked_fill(~m, 0.0)
        for layer in pos.conv1d:
            x = unfold_conv(layer, x) if isinstance(layer, torch.nn.Conv1d) else layer(x)
            if m is not None and isinstance(layer, torch.nn.Conv1d):
                x = x.masked_fill(~m, 0.0)
        return x.permute(0, 2, 1)

    pos.forward = forward


#: Candidate changes over the engine's own path (measured; see the README for which stayed).
VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {},
    "cudnn_benchmark": {"benchmark": True},
    "compile_input": {"compile_input": True},
    "unfold_conv": {"unfold": True, "compile_input": True},
    "max_autotune": {"autotune": True},
    "static": {"static": True},
    "fp8_row": {"fp8_row": True},
    "fp8_tensor": {"fp8_tensor": True},
    "warmup1": {"warmup1": True},
    "ff_separate": {"ff_separate": True},
    "additive_mask": {"additive_mask": True},
    "cudnn_conv": {"cudnn_conv": True},
    "zero_pad_lse": {"zero_pad_lse": True},
    "rope_per_block": {"rope_per_block": True},
    "rope_kernel": {"rope_kernel": True},
    "penalty_column": {"no_cudnn_padding": True},
}

FP8_MAX = 448.0  # largest float8_e4m3fn


class Fp8Linear(torch.nn.Module):
    """A Linear as an FP8 (e4m3) matmul on Hopper, fp32 accumulation: weights
    scaled once (per output row, or per tensor), activations at run time the
    same way. A candidate only: its error is measured by `quality`."""

    def __init__(self, linear: torch.nn.Linear, rowwise: bool) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        amax = w.abs().amax(dim=1, keepdim=True) if rowwise else w.abs().amax().reshape(1, 1)
        scale = amax.clamp(min=1e-12) / FP8_MAX
        self.rowwise = rowwise
        self.register_buffer("weight", (w / scale).to(torch.float8_e4m3fn))
        self.register_buffer("scale", scale.t().contiguous() if rowwise else scale.reshape(()))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        a = x.reshape(-1, shape[-1])
        dims = (1,) if self.rowwise else (0, 1)
        amax = a.abs().amax(dim=dims, keepdim=self.rowwise).float()
        s = amax.clamp(min=1e-12) / FP8_MAX
        a8 = (a.float() / s).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(a8, self.weight.t(), scale_a=s, scale_b=self.scale,
                               out_dtype=torch.bfloat16)  # fmt: skip
        out = out.to(x.dtype) + self.bias
        return out.reshape(*shape[:-1], out.shape[-1])


def to_fp8(transformer: Any, rowwise: bool) -> None:
    """The blocks' four matmuls (QKV, attention out, feed-forward in and out) in FP8."""
    for block in transformer.transformer_blocks:
        processor = block.attn.processor
        processor.qkv = Fp8Linear(processor.qkv, rowwise)
        block.attn.to_out[0] = Fp8Linear(block.attn.to_out[0], rowwise)
        block.ff.ff[0][0] = Fp8Linear(block.ff.ff[0][0], rowwise)
        block.ff.ff[2] = Fp8Linear(block.ff.ff[2], rowwise)


_FEED_FORWARD = dit.feed_forward
_SUPPORTED = conv_pos.supported


def _no_triton_conv(conv: Any, h: torch.Tensor) -> bool:
    """The position convolutions as cuDNN runs them (the package's modules)."""
    return False


_MASKED = dit.masked_attention


def _additive(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, padding: dit.Padding
) -> torch.Tensor:
    """The padded keys left out by an additive mask, compiled too."""
    return dit.additive_mask_attention(query, key, value, padding.mask)


def zero_pad_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, padding: dit.Padding
) -> torch.Tensor:
    """`dit.masked_attention` without an attention mask: padded keys and values are
    zeroed, so each padded key adds exactly exp(0) = 1 to a query's softmax
    denominator and nothing to its numerator; the log-sum-exp that cuDNN returns
    gives the denominator, and the output is rescaled to leave those out.
    Measured and dropped (H200): the step 2.951 against 2.964 ms at 1,024 frames."""
    mask = padding.mask
    keep = mask[:, :, None, None]
    key, value = key.masked_fill(~keep, 0.0), value.masked_fill(~keep, 0.0)
    query, key, value = (t.transpose(1, 2) for t in (query, key, value))
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        query, key, value, None, True, 0.0, False, False, scale=query.shape[-1] ** -0.5
    )[:2]
    pads = (~mask).sum(dim=-1, dtype=torch.float32)[:, None, None, None]
    kept = 1.0 - pads * torch.exp(-lse.reshape(*out.shape[:-1], 1))
    return (out.float() / kept).to(out.dtype).transpose(1, 2)


_ROTARY_TABLES = dit.rotary_tables
_CUDNN_INSTALLED = cudnn_attention.INSTALLED


def _rope_per_block(transformer: Any, length: int) -> Any:
    """The rotary embedding as the package passes it: each block's attention takes
    the cosine and sine itself (inside its compiled rotation)."""
    return transformer.rotary_embed.forward_from_seq_len(length)


_PADDED_CALL = dit.PaddedAttention.__call__


def _rope_kernel_call(
    self: dit.PaddedAttention,
    attn: Any,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    rope: Any = None,
) -> torch.Tensor:
    """`PaddedAttention` compiled, with `bench.rope_keys`'s kernel for the rotation
    and the penalty column (then SDPA unmasked, as the engine's column does)."""
    from bench import rope_keys

    qkv = self.qkv(x)
    heads = attn.heads
    if (
        mask is None
        or not torch.compiler.is_compiling()
        or attn.q_norm is not None
        or self.pe_attn_head is not None
        or not rope_keys.usable(qkv, rope, heads)
    ):
        out: torch.Tensor = _PADDED_CALL(self, attn, x, mask, rope)
        return out
    batch, dim = x.shape[0], qkv.shape[-1] // (3 * heads)
    mask = mask.mask if isinstance(mask, dit.Padding) else mask
    query, key = rope_keys.op(qkv, rope.cos, rope.sin, mask, heads)
    value = qkv[..., 2 * heads * dim :].reshape(batch, -1, heads, dim)
    out = dit.attention(query, key, value, scale=dim**-0.5).reshape(batch, -1, heads * dim)
    out = attn.to_out[1](attn.to_out[0](out))
    return out.masked_fill(~mask[..., None], 0.0)


def _separate_ff(ff: Any, x: torch.Tensor) -> torch.Tensor:
    """The package's feed-forward: GELU as its own kernel after the matmul."""
    out: torch.Tensor = ff(x)
    return out


def build(files: ModelFiles, arch: ArchConfig, opts: dict[str, bool]) -> Any:
    torch._dynamo.reset()
    torch._dynamo.config.automatic_dynamic_shapes = not opts.get("static", False)
    torch._dynamo.config.cache_size_limit = 64
    torch.backends.cudnn.benchmark = opts.get("benchmark", False)
    graphs.WARMUP_RUNS = 1 if opts.get("warmup1") else 2
    dit.feed_forward = _separate_ff if opts.get("ff_separate") else _FEED_FORWARD  # type: ignore[assignment]
    model = load_f5(files, arch, "cuda", torch.float16)
    transformer = model.transformer
    dit.prepare(transformer)
    dit.masked_attention = (  # type: ignore[assignment]
        _additive
        if opts.get("additive_mask")
        else zero_pad_lse
        if opts.get("zero_pad_lse")
        else _MASKED
    )
    # Without cuDNN's padding mask: the penalty column (compiled), as before it.
    cudnn_attention.INSTALLED = _CUDNN_INSTALLED and not opts.get("no_cudnn_padding")
    conv_pos.supported = _no_triton_conv if opts.get("cudnn_conv") else _SUPPORTED  # type: ignore[assignment]
    dit.rotary_tables = _rope_per_block if opts.get("rope_per_block") else _ROTARY_TABLES
    if opts.get("fp8_row") or opts.get("fp8_tensor"):
        to_fp8(transformer, rowwise=bool(opts.get("fp8_row")))
    if opts.get("unfold"):
        patch_unfold(model)
    if opts.get("compile_input"):
        transformer.input_embed.compile(dynamic=True)
    if opts.get("autotune"):
        for wrapped in dit.blocks(transformer):
            wrapped.compile(dynamic=True, mode="max-autotune-no-cudagraphs")
    elif opts.get("static"):
        for wrapped in dit.blocks(transformer):
            wrapped.compile(dynamic=False)
    else:
        dit.compile_regions(transformer)
    dit.PaddedAttention.__call__ = (  # type: ignore[method-assign]
        _rope_kernel_call if opts.get("rope_kernel") else _PADDED_CALL
    )
    return model


def graph_step_ms(model: Any, length: int = 1024) -> tuple[float, torch.Tensor, float]:
    """One replayed step's time, one step's result from seeded inputs, and the
    capture's time (ms)."""
    runner = GraphSteps()
    torch.manual_seed(0)
    with torch.inference_mode():
        request = inputs(model, length)
        x, dts = request.x.clone(), request.dts
        request.dts = torch.ones_like(dts)
        torch.cuda.synchronize()
        started = time.perf_counter()
        runner.start(request)
        torch.cuda.synchronize()
        capture_ms = (time.perf_counter() - started) * 1000
        runner.step(0)
        first = runner.result()
        request.x, request.dts = x, dts
        runner.start(request)
        ms = cuda_ms(lambda: runner.step(0), reps=100)
        runner.result()
    return ms, first, capture_ms


def step_parts(model: Any, length: int = 1024) -> None:
    """Each part of one guided step (`dit.velocity` and the Euler update), replayed
    as a graph, eager and compiled: what the step costs outside its blocks."""
    t = model.transformer
    torch.manual_seed(0)
    x = torch.randn(1, length, 100, device="cuda", dtype=torch.float16)
    cond = torch.randn_like(x)
    mask = (torch.arange(length, device="cuda") < FRAMES)[None]
    ids = dit.pad_ids([torch.randint(0, 100, (1, TEXT_LEN), device="cuda")], length)
    times = torch.full((1,), 0.5, device="cuda", dtype=torch.float16)
    dt = torch.tensor(0.1, device="cuda", dtype=torch.float16)
    out: dict[str, float] = {}
    with torch.inference_mode():
        embeds = dit.text_embeds(t, ids)
        mod = dit.modulations(t, times)
        width = 6 * 1024
        depth = len(t.transformer_blocks)

        def doubling() -> tuple[torch.Tensor, ...]:
            return (torch.cat((x, x)), torch.cat((cond, torch.zeros_like(cond))),
                    torch.cat((embeds.cond, embeds.uncond)), torch.cat((mask, mask)))  # fmt: skip

        x2, cond2, text2, mask2 = doubling()
        h = torch.randn(2, length, 1024, device="cuda", dtype=torch.float16)
        rope = t.rotary_embed.forward_from_seq_len(length)

        def head() -> torch.Tensor:
            xs, conds, texts, masks = doubling()
            out: torch.Tensor = t.input_embed(xs, conds, texts, audio_mask=masks)
            return out

        def run_blocks() -> None:
            hh = h
            for i, block in enumerate(dit.blocks(t)):
                hh = block(hh, mod[:, i * width : (i + 1) * width], mask2, rope)

        def tail() -> torch.Tensor:
            scale, shift = torch.chunk(mod[:, depth * width :], 2, dim=1)
            hh = t.norm_out.norm(h) * (1 + scale)[:, None, :] + shift[:, None, :]
            pred, null = torch.chunk(t.proj_out(hh), 2, dim=0)
            v = pred + (pred - null) * 2.0
            return (x + dt * v) * mask[..., None]

        out["step_ms"] = graphed_ms(lambda: dit.velocity(t, x, cond, embeds, mask, mod, 2.0))
        out["doubling_ms"] = graphed_ms(doubling)
        joined = torch.cat((x2, cond2, text2), -1)
        out["input_proj_ms"] = graphed_ms(lambda: t.input_embed.proj(joined))
        pos = t.input_embed.conv_pos_embed
        out["conv_pos_ms"] = graphed_ms(lambda: pos(h, mask=mask2) + h)
        fused = lambda: conv_pos.fused_position_embedding(pos, h, mask2)  # noqa: E731
        out["conv_pos_triton_ms"] = graphed_ms(fused)
        out["conv_pos_triton_diff"] = float((fused() - (pos(h, mask=mask2) + h)).abs().max())
        out["head_ms"] = graphed_ms(head)
        out["rope_ms"] = graphed_ms(lambda: t.rotary_embed.forward_from_seq_len(length))
        out["blocks_ms"] = graphed_ms(run_blocks)
        out["tail_ms"] = graphed_ms(tail)
        out["head_compiled_ms"] = graphed_ms(torch.compile(head, dynamic=True))
        out["tail_compiled_ms"] = graphed_ms(torch.compile(tail, dynamic=True))
    emit({"event": "step_parts", "length": length, **{k: round(v, 4) for k, v in out.items()}})


def capture_profile(model: Any, lengths: tuple[int, ...] = (1152, 1280)) -> None:
    """Where the host time of recording a new length's graphs goes (cProfile)."""
    import cProfile
    import io
    import pstats

    graph_step_ms(model, 960)  # compiled and recorded once, as at start-up
    for length in lengths:
        profiler = cProfile.Profile()
        profiler.enable()
        _, _, capture_ms = graph_step_ms(model, length)
        profiler.disable()
        for key in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(25)
            stats = text.getvalue()[-6000:]
            emit({"event": "capture_profile", "length": length, "sort": key,
                  "capture_ms": round(capture_ms, 1), "stats": stats})  # fmt: skip


def native_convs(files: ModelFiles, arch: ArchConfig, lengths: tuple[int, ...]) -> None:
    """Recording the text embedding's and the vocoder backbone's graphs at a new
    length, with cuDNN's convolutions and with PyTorch's own: record time,
    replay time and how far the results move. cuDNN runs first at each length,
    so its record time includes the plan it builds for a new length."""
    from engine.vocoder import masked_backbone

    model = load_f5(files, arch, "cuda", torch.float16)
    t = model.transformer
    backbone = load_vocos(files, "cuda").backbone
    torch.manual_seed(0)
    for length in lengths:
        ids = dit.pad_ids([torch.randint(0, 100, (1, TEXT_LEN), device="cuda")], length)
        mel = torch.randn(1, 100, length, device="cuda")
        keep = torch.ones(1, 1, length, device="cuda")
        row: dict[str, Any] = {"event": "native_convs", "length": length}
        outs: dict[str, torch.Tensor] = {}
        parts: dict[str, Callable[[], Any]] = {
            "embed": lambda ids=ids: dit.text_embeds(t, ids).cond,
            "vocoder": lambda mel=mel, keep=keep: masked_backbone(backbone, mel, keep),
        }
        with torch.inference_mode():
            for cudnn in (True, False):
                tag = "cudnn" if cudnn else "native"
                recorder = graphs.Recorder()
                for name, fn in parts.items():
                    torch.cuda.synchronize()
                    started = time.perf_counter()
                    graph, out = recorder.record(fn, cudnn=cudnn)
                    torch.cuda.synchronize()
                    row[f"{name}_record_ms_{tag}"] = round((time.perf_counter() - started) * 1e3, 1)
                    row[f"{name}_replay_ms_{tag}"] = round(cuda_ms(graph.replay, reps=100), 4)
                    outs[f"{name}_{tag}"] = out.float().clone()
            for name in parts:
                diff = (outs[f"{name}_cudnn"] - outs[f"{name}_native"]).abs().max()
                row[f"{name}_max_diff"] = float(diff)
        emit(row)


def quality(files: ModelFiles, arch: ArchConfig, names: list[str]) -> None:
    """Mel of a whole request (8 steps, guidance, same noise) from each variant
    against fp32 eager: how far it moves, next to how far plain fp16 moves."""
    torch._dynamo.reset()
    torch.manual_seed(1)
    cond = torch.randn(1, 656, 100, device="cuda")
    text = torch.randint(0, 100, (1, TEXT_LEN), device="cuda")

    def mel(model: Any, dtype: torch.dtype, runner: Any = None) -> torch.Tensor:
        out = sampler.sample(model, cond.to(dtype), text, FRAMES, seed=0, steps=8,
                             cfg_strength=2.0, sway=-1.0, runner=runner)  # fmt: skip
        return out[0, 656:].float()

    with torch.inference_mode():
        reference = mel(load_f5(files, arch, "cuda", torch.float32), torch.float32)
        rms = float(reference.pow(2).mean().sqrt())
        for name in names:
            got = mel(build(files, arch, VARIANTS[name]), torch.float16, GraphSteps())
            diff = got - reference
            emit({"event": "quality", "variant": name, "ref_rms": round(rms, 4),
                  "max_abs_diff": round(float(diff.abs().max()), 4),
                  "rel_rms_diff": round(float(diff.pow(2).mean().sqrt()) / rms, 5)})  # fmt: skip


CATEGORIES = (
    ("attention", ("fmha", "flash", "attention", "attn", "cudnn_generated_fort_native_sdpa")),
    ("conv", ("conv", "implicit", "winograd", "xmma_fprop", "sm90_xmma", "fft")),
    ("gemm", ("gemm", "nvjet", "cutlass", "sm90", "s16816", "cublas", "splitk")),
    ("triton", ("triton",)),
)


def profile(model: Any, steps: int = 4) -> None:
    """Kernel time per step by category (the engine's step, eagerly launched:
    kernel durations are what a graph replays)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runner = sampler.EagerSteps(128)
    with torch.inference_mode():
        request = inputs(model, 1024)
        runner.start(request)
        for _ in range(3):
            runner.step(0)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                runner.step(0)
            torch.cuda.synchronize()
        runner.result()
    by_name: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        by_name[event.name] += event.time_range.elapsed_us() / steps
        counts[event.name] += 1
    categories: dict[str, float] = collections.defaultdict(float)
    for name, us in by_name.items():
        low = name.lower()
        category = next((c for c, keys in CATEGORIES if any(k in low for k in keys)), "other")
        categories[category] += us
    emit({"event": "profile", "kernels_per_step": sum(counts.values()) // steps,
          "us_per_step": {k: round(v, 1) for k, v in sorted(categories.items())},
          "total_us": round(sum(by_name.values()), 1)})  # fmt: skip
    for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:30]:
        emit({"event": "kernel", "us": round(us, 1), "per_step": counts[name] // steps,
              "name": name[:140]})  # fmt: skip


def attention_cases(frames: int = FRAMES, length: int = 1024) -> None:
    """The step's attention (guided: 2 rows, `frames` real of `length`) each way,
    from the QKV projection's output to the output projection's input, replayed
    as a graph: launched eagerly, kernels this small time the launch instead."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads, dim = 16, 64
    torch.manual_seed(0)
    qkv = torch.randn(2, length, 3 * heads * dim, device="cuda", dtype=torch.float16)
    mask = (torch.arange(length, device="cuda") < frames)[None].expand(2, length)

    def split() -> tuple[torch.Tensor, ...]:
        """(batch, length, heads, dim), as the engine's attention takes them."""
        return tuple(t.reshape(2, length, heads, dim) for t in qkv.chunk(3, -1))

    def out(o: torch.Tensor) -> torch.Tensor:
        return o.reshape(2, length, heads * dim)

    def sdpa(backend: Any, masked: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with sdpa_kernel(backend):
                if masked:
                    return out(dit.additive_mask_attention(*split(), mask))
                return out(dit.attention(*split()))

        return run

    cases: dict[str, Callable[[], torch.Tensor]] = {
        "cudnn_mask": sdpa(SDPBackend.CUDNN_ATTENTION, True),  # the engine's
        "cudnn_nomask": sdpa(SDPBackend.CUDNN_ATTENTION, False),
        "flash_nomask": sdpa(SDPBackend.FLASH_ATTENTION, False),
        "efficient_mask": sdpa(SDPBackend.EFFICIENT_ATTENTION, True),
        "penalty_column": lambda: out(dit.penalty_column_attention(*split(), mask)),
    }
    # With the rotary embedding too: op by op, and bench.rope_keys's kernel.
    from x_transformers.x_transformers import RotaryEmbedding

    from bench import rope_keys

    freqs, _ = RotaryEmbedding(dim).to("cuda").half().forward_from_seq_len(length)
    contiguous_mask = mask.contiguous()

    tables = dit.rotary(freqs, None)

    def rope_then_mask() -> torch.Tensor:
        q, k, v = split()
        q, k = (dit.rotate(t, tables.cos, tables.sin, 1.0) for t in (q, k))
        return out(dit.additive_mask_attention(q, k, v, mask))

    def fused_rope_keys() -> torch.Tensor:
        q, k = rope_keys.launch(qkv, tables.cos, tables.sin, contiguous_mask, heads)
        return out(dit.attention(q, k, split()[2], scale=dim**-0.5))

    cases["zero_pad_lse"] = lambda: out(zero_pad_lse(*split(), dit.Padding.of(mask)))
    counts = cudnn_attention.lengths(mask)
    cases["cudnn_padding"] = lambda: out(cudnn_attention.attention(*split(), mask, counts))
    reference_case = {"rope_cudnn_mask": rope_then_mask, "fused_rope_keys": fused_rope_keys}
    cases.update(reference_case)
    results: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name, fn in cases.items():
            try:
                us = graphed_ms(fn) * 1000
                results[name] = fn().float()
            except Exception as exc:  # a backend that does not take this case
                emit({"event": "attention", "case": name, "error": str(exc)[:200]})
                continue
            against = "rope_cudnn_mask" if name in reference_case else "cudnn_mask"
            diff = float((results[name] - results[against])[:, :frames].abs().max())
            nonfinite = int((~torch.isfinite(results[name])).sum())
            emit({"event": "attention", "case": name, "length": length, "frames": frames,
                  "graphed_us": round(us, 1), "max_diff_real_rows": diff,
                  "nonfinite": nonfinite})  # fmt: skip


def gemm_rates() -> None:
    for m, k, n in ((2048, 1024, 1024), (2048, 1024, 3072), (2048, 1024, 2048),
                    (2048, 2048, 1024), (2, 1024, 6144)):  # fmt: skip
        a = torch.randn(m, k, device="cuda", dtype=torch.float16)
        b = torch.randn(n, k, device="cuda", dtype=torch.float16)
        ms = cuda_ms(lambda a=a, b=b: F.linear(a, b), reps=200)
        emit({"event": "gemm", "mkn": [m, k, n], "us": round(ms * 1000, 1),
              "tflops": round(2 * m * k * n / ms / 1e9, 1)})  # fmt: skip


def vocoder_parts(files: ModelFiles) -> None:
    vocoder = load_vocos(files, "cuda")
    mel = torch.randn(1, 100, 284, device="cuda")
    with torch.inference_mode():
        out = {
            "decode_fp32_wall_ms": wall_ms(lambda: vocoder.decode(mel).cpu()),
            "decode_fp32_gpu_ms": cuda_ms(lambda: vocoder.decode(mel)),
            "backbone_fp32_gpu_ms": cuda_ms(lambda: vocoder.backbone(mel)),
        }
        hidden = vocoder.backbone(mel)
        out["head_fp32_gpu_ms"] = cuda_ms(lambda: vocoder.head(hidden))
        graph = torch.cuda.CUDAGraph()
        static = mel.clone()
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        with torch.cuda.stream(side):
            for _ in range(2):
                vocoder.backbone(static)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            hidden_static = vocoder.backbone(static)
        out["backbone_graph_then_head_wall_ms"] = wall_ms(
            lambda: (graph.replay(), vocoder.head(hidden_static).cpu())
        )
        half = vocoder.backbone.half()
        out["backbone_fp16_gpu_ms"] = cuda_ms(lambda: half(mel.half()))
        h16 = half(mel.half()).float()
        out["fp16_backbone_max_diff"] = float((h16 - hidden).abs().max())
    emit({"event": "vocoder", **{k: round(v, 4) for k, v in out.items()}})


def setup_parts(model: Any) -> None:
    """The per-request work before the first step, piece by piece."""
    transformer = model.transformer
    text = torch.randint(0, 100, (1, TEXT_LEN), device="cuda")
    cond = torch.randn(1, 656, 100, device="cuda", dtype=torch.float16)
    runner = GraphSteps()
    h512 = torch.randn(1, 1024, 512, device="cuda", dtype=torch.float16)
    ids = dit.pad_ids([text], 1024)
    with torch.inference_mode():
        sampler.sample(model, cond, text, FRAMES, seed=0, steps=8, cfg_strength=2.0,
                       sway=-1.0, runner=runner)  # fmt: skip
        out = {
            "text_embeds_gpu_ms": cuda_ms(lambda: dit.text_embeds(transformer, ids), reps=20),
            "text_embeds_ms": wall_ms(lambda: dit.text_embeds(transformer, ids)),
            "text_block_graphed_ms": graphed_ms(
                lambda: transformer.text_embed.text_blocks[0](h512)
            ),
            "text_dwconv_graphed_ms": graphed_ms(
                lambda: transformer.text_embed.text_blocks[0].dwconv(h512.transpose(1, 2))
            ),
            "text_embeds_graphed_ms": graphed_ms(lambda: dit.text_embeds(transformer, ids)),
            "timesteps_ms": wall_ms(
                lambda: sampler.timesteps(8, -1.0, torch.device("cuda"), torch.float16)
            ),
            "sample_ms": wall_ms(
                lambda: sampler.sample(
                    model,
                    cond,
                    text,
                    FRAMES,
                    seed=0,
                    steps=8,
                    cfg_strength=2.0,
                    sway=-1.0,
                    runner=runner,
                )
            ),
        }
        request = inputs(model, 1024)
        runner.start(request)
        out["graph_step_wall_ms"] = wall_ms(lambda: runner.step(0))
        runner.result()
    emit({"event": "setup", **{k: round(v, 3) for k, v in out.items()}})


def memory(files: ModelFiles, arch: ArchConfig) -> None:
    """GPU memory through the engine's warm-up: DiT graphs, then vocoder graphs."""
    from engine.vocoder import GraphVocoder

    def report(stage: str) -> None:
        emit({"event": "memory", "stage": stage,
              "allocated_gb": round(torch.cuda.memory_allocated() / 2**30, 3),
              "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3),
              "reserved_gb": round(torch.cuda.memory_reserved() / 2**30, 3)})  # fmt: skip

    model = build(files, arch, {})
    vocos = load_vocos(files, "cuda")
    report("loaded")
    runner, decoder = GraphSteps(), GraphVocoder(vocos)
    cond = torch.zeros(1, 1, 100, device="cuda", dtype=torch.float16)
    text = torch.zeros(1, 1, dtype=torch.long, device="cuda")
    for frames in range(128, 2048 + 1, 128):
        sampler.sample(model, cond, text, frames, steps=1, cfg_strength=2.0, sway=-1.0,
                       runner=runner)  # fmt: skip
    report("dit_graphs")
    for frames in range(128, 2048 + 1, 128):
        decoder.capture(frames, "cuda")
        if frames in (128, 256, 1024):
            report(f"vocoder_graph_{frames}")
    report("vocoder_graphs")
    mel = torch.randn(1, 100, 281, device="cuda")
    with torch.inference_mode():
        decoder.decode(mel)
    report("decoded")


def engine_memory(files: ModelFiles, arch: ArchConfig, root: Path) -> None:
    """GPU memory through an Engine's start (graphs, no compile) and one line."""
    import asyncio

    from engine.config import EngineConfig
    from engine.synth import Engine
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import write_voice

    def report(stage: str) -> None:
        emit({"event": "engine_memory", "stage": stage,
              "allocated_gb": round(torch.cuda.memory_allocated() / 2**30, 3),
              "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)})  # fmt: skip

    write_voice(root / "voices", "ref", "Hello everyone and welcome back to the stream.", seconds=7)
    original = Engine._capture_graphs

    def capture(self: Engine, runner: Any) -> None:
        report("before_capture_graphs")
        original(self, runner)
        report("after_capture_graphs")

    Engine._capture_graphs = capture  # type: ignore[method-assign]
    original_warm = Engine._warm_up_once

    def warm(self: Engine) -> dict[str, float]:
        report("before_warm_up")
        return original_warm(self)

    Engine._warm_up_once = warm  # type: ignore[method-assign]

    async def run() -> None:
        config = EngineConfig(nfe_steps=8, compile=False, cuda_graphs=True, arch=arch)
        engine = Engine(config, VoiceLibrary(root / "voices"), files)
        engine.start()
        await engine.wait_ready()
        report("ready")
        async for _ in engine.stream("Thanks for the follow, welcome in!", "ref", seed=0):
            pass
        report("spoken")
        engine.close()

    asyncio.run(run())


def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="step-"))
    arch = ArchConfig()
    model_path, vocab = write_f5(root / "f5", arch)
    vocos = write_vocos(root / "vocos", config_doc=PUBLISHED_VOCOS_CONFIG)
    files = ModelFiles(model_path, vocab, vocos / "config.yaml", vocos / "pytorch_model.bin")
    emit({"event": "setup", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__})
    if args.memory:
        engine_memory(files, arch, root)
        memory(files, arch)
        return
    if args.conv:
        torch._dynamo.reset()
        conv_configs(load_f5(files, arch, "cuda", torch.float16))
        return
    if args.embed:
        torch._dynamo.reset()
        embed_parts(load_f5(files, arch, "cuda", torch.float16))
        return
    if args.attention or not args.variants:
        attention_cases()
        attention_cases(1024, 1024)
    if not args.variants:
        gemm_rates()
        vocoder_parts(files)
    reference = None
    if args.quality:
        quality(files, arch, args.quality)
    if args.capture_profile:
        capture_profile(build(files, arch, {}))
        return
    if args.native_convs:
        native_convs(files, arch, (384, 1152, 1408, 2048))
        return
    for name in args.variants or list(VARIANTS):
        started = time.perf_counter()
        model = build(files, arch, VARIANTS[name])
        diff = float("nan")
        for length in args.lengths:
            try:
                ms, out, capture_ms = graph_step_ms(model, length)
            except Exception as exc:  # e.g. a shape FP8 matmuls do not take
                emit({"event": "variant", "name": name, "length": length, "error": str(exc)[:300]})
                continue
            if length == args.lengths[0]:
                reference = out if reference is None else reference
                diff = float((out.float() - reference.float()).abs().max())
            emit({"event": "variant", "name": name, "length": length,
                  "graph_step_ms": round(ms, 3), "capture_ms": round(capture_ms, 1),
                  "max_diff_vs_first": diff,
                  "build_s": round(time.perf_counter() - started, 1)})  # fmt: skip
        if name == "baseline" and args.parts:
            step_parts(model)
        if name == "baseline" and not args.no_profile:
            profile(model)
            setup_parts(model)
        if name in args.profile_also:
            profile(model)
        del model
        torch.cuda.empty_cache()


# the input embedding (the grouped position convolutions) -----------------------------
def conv_configs(model: Any, length: int = 1024) -> None:
    """The Triton position convolutions at each launch setting, against cuDNN's."""
    pos = model.transformer.input_embed.conv_pos_embed
    torch.manual_seed(0)
    h = torch.randn(2, length, 1024, device="cuda", dtype=torch.float16)
    mask = (torch.arange(length, device="cuda") < FRAMES)[None].expand(2, length)
    defaults = conv_pos.BLOCK_FRAMES, conv_pos.NUM_WARPS, conv_pos.NUM_STAGES
    with torch.inference_mode():
        ref = pos(h, mask=mask) + h
        emit(
            {
                "event": "conv",
                "path": "cudnn",
                "graphed_ms": round(graphed_ms(lambda: pos(h, mask=mask) + h), 4),
            }
        )
        for block in (32, 64, 128):
            for warps in (2, 4, 8):
                for stages in (2, 3, 4):
                    conv_pos.BLOCK_FRAMES, conv_pos.NUM_WARPS, conv_pos.NUM_STAGES = (
                        block,
                        warps,
                        stages,
                    )
                    fused = lambda: conv_pos.fused_position_embedding(pos, h, mask)  # noqa: E731
                    try:
                        ms = graphed_ms(fused)
                        diff = float((fused() - ref).abs().max())
                    except Exception as exc:
                        emit(
                            {
                                "event": "conv",
                                "block": block,
                                "warps": warps,
                                "stages": stages,
                                "error": str(exc)[:200],
                            }
                        )
                        continue
                    emit({"event": "conv", "path": "triton", "block": block,
                          "warps": warps, "stages": stages,
                          "graphed_ms": round(ms, 4), "max_diff": diff})  # fmt: skip
    conv_pos.BLOCK_FRAMES, conv_pos.NUM_WARPS, conv_pos.NUM_STAGES = defaults


def nhwc_conv(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The grouped conv1d as a channels-last conv2d (cuDNN then needs no layout copies)."""
    k = conv.weight.shape[-1]
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    w4 = conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    out = F.conv2d(x4, w4, conv.bias, padding=(0, k // 2), groups=conv.groups)
    return out.squeeze(2)


def embed_with(conv: Callable[[torch.nn.Conv1d, torch.Tensor], torch.Tensor], model: Any,
               x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
    pos = model.transformer.input_embed.conv_pos_embed
    m = mask.unsqueeze(1)
    h = x.permute(0, 2, 1).masked_fill(~m, 0.0)
    for layer in pos.conv1d:
        h = conv(layer, h).masked_fill(~m, 0.0) if isinstance(layer, torch.nn.Conv1d) else layer(h)
    return h.permute(0, 2, 1)


def graphed_ms(fn: Callable[[], object]) -> float:
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return cuda_ms(graph.replay, reps=100)


def embed_parts(model: Any) -> None:
    """The position convolutions of one step (guided: 2 rows), each way, as a graph."""
    pos = model.transformer.input_embed.conv_pos_embed
    h1 = torch.randn(1, 1024, 1024, device="cuda", dtype=torch.float16)
    h2 = torch.randn(2, 1024, 1024, device="cuda", dtype=torch.float16)
    m1 = (torch.arange(1024, device="cuda") < FRAMES)[None]
    m2 = m1.expand(2, 1024)
    cudnn = lambda conv, x: conv(x)  # noqa: E731
    out: dict[str, float] = {}
    with torch.inference_mode():
        ref = embed_with(cudnn, model, h2, m2).float()
        out["cudnn_2x_batch1_ms"] = graphed_ms(lambda: (pos(h1, m1), pos(h1, m1)))
        out["cudnn_batch2_ms"] = graphed_ms(lambda: pos(h2, m2))
        out["nhwc_batch2_ms"] = graphed_ms(lambda: embed_with(nhwc_conv, model, h2, m2))
        out["unfold_batch2_ms"] = graphed_ms(lambda: embed_with(unfold_conv, model, h2, m2))
        out["nhwc_diff"] = float((embed_with(nhwc_conv, model, h2, m2).float() - ref).abs().max())
        out["unfold_diff"] = float(
            (embed_with(unfold_conv, model, h2, m2).float() - ref).abs().max()
        )
        torch.backends.cudnn.benchmark = True
        out["cudnn_benchmark_batch2_ms"] = graphed_ms(lambda: pos(h2, m2))
        out["nhwc_benchmark_batch2_ms"] = graphed_ms(lambda: embed_with(nhwc_conv, model, h2, m2))
        torch.backends.cudnn.benchmark = False
        blocks = dit.blocks(model.transformer)
        time = torch.tensor([0.5], device="cuda").half()
        mods = dit.modulations(model.transformer, time)
        width = 6 * 1024
        rope = model.transformer.rotary_embed.forward_from_seq_len(1024)

        def run_blocks() -> None:
            h = h2
            for i, block in enumerate(blocks):
                h = block(h, mods[:, i * width : (i + 1) * width], m2, rope)

        out["blocks_eager_uncompiled_ms"] = graphed_ms(run_blocks)

        # What the blocks' AdaLN modulations cost when computed in every step.
        out["adaln_linears_ms"] = graphed_ms(lambda: dit.modulations(model.transformer, time))
        dit.compile_regions(model.transformer)
        out["blocks_compiled_ms"] = graphed_ms(run_blocks)
    emit({"event": "embed", **{k: round(v, 4) for k, v in out.items()}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="*")
    parser.add_argument("--embed", action="store_true")
    parser.add_argument("--conv", action="store_true", help="the Triton convolutions' settings")
    parser.add_argument("--attention", action="store_true", help="time the attention each way")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--lengths", nargs="*", type=int, default=[1024])
    parser.add_argument("--quality", nargs="*", default=[], help="variants to compare to fp32")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--parts", action="store_true", help="time the step's parts")
    parser.add_argument("--capture-profile", action="store_true")
    parser.add_argument("--native-convs", action="store_true")
    parser.add_argument("--profile-also", nargs="*", default=[], help="variants profiled too")
    main(parser.parse_args())
