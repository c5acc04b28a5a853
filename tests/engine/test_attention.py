"""The padded attention's kernels: when cuDNN's padding mask is chosen, its
fallback where it cannot run, the dispatch, and (on a GPU) its result against SDPA's."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from structlog.testing import capture_logs

from engine import attention, kernels
from engine.config import EngineConfig


def gpu(test: Any) -> Any:
    """A test of cuDNN itself: in the GPU suite (`-m gpu`), skipped without CUDA."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN runs on a GPU")
    return pytest.mark.gpu(skip(test))


@pytest.fixture(autouse=True)
def no_failures() -> None:
    """Each test starts with no failure reported by an earlier one."""
    kernels.failures()


def padded(batch_counts: list[int], length: int, device: str = "cpu") -> torch.Tensor:
    positions = torch.arange(length, device=device)[None]
    return positions < torch.tensor(batch_counts, device=device)[:, None]


def test_counts_are_each_rows_real_frames() -> None:
    mask = padded([55, 70, 1], 70)
    counts = attention.lengths(mask)
    assert counts.dtype == torch.int32
    assert counts.tolist() == [55, 70, 1]
    assert torch.equal(attention.Padding.of(mask).counts, counts)


def test_cudnn_is_chosen_only_for_half_precision_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def chosen(device: str, dtype: torch.dtype, compile: bool = True) -> str:
        config = EngineConfig(compile=compile)
        return kernels.choose(config, device, dtype).attention

    monkeypatch.setattr(kernels, "triton_installed", lambda: True)
    assert kernels.cudnn_frontend_installed()  # a project dependency on Linux and Windows
    assert chosen("cuda", torch.float16) == "cudnn"
    assert chosen("cuda:1", torch.bfloat16) == "cudnn"
    assert chosen("cuda", torch.float32) == "column"
    assert chosen("cuda", torch.float32, compile=False) == "mask"
    assert chosen("cpu", torch.float16) == "mask"
    monkeypatch.setattr(kernels, "cudnn_frontend_installed", lambda: False)
    assert chosen("cuda", torch.float16) == "column"


def test_masked_attention_runs_the_kernel_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[torch.Tensor] = []

    def fake(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor
    ) -> torch.Tensor:
        taken.append(rest[1])
        return attention.additive_mask_attention(q, k, v, rest[0])

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 10, 2, 8) for _ in range(3))
    padding = attention.Padding.of(padded([7, 10], 10))
    monkeypatch.setattr(attention, "cudnn_attention", fake)
    mask = attention.masked_attention(q, k, v, padding, "mask")
    column = attention.masked_attention(q, k, v, padding, "column")
    assert taken == []
    attention.masked_attention(q, k, v, padding, "cudnn")
    assert len(taken) == 1 and taken[0] is padding.counts
    for row, n in enumerate((7, 10)):
        assert torch.allclose(mask[row, :n], column[row, :n], atol=1e-5)


def test_a_failure_falls_back_to_sdpa_in_the_same_call_and_steps_down_once() -> None:
    # The real op, where cuDNN cannot run it (here: no GPU, so no cuDNN handle):
    # the caller still gets the attention, from SDPA with an additive mask; the
    # failure is reported, and the engine steps its kernels down (one warning).
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 12, 2, 8) * 2 for _ in range(3))
    mask = padded([9, 12], 12)
    want = attention.additive_mask_attention(q, k, v, mask)
    first = attention.cudnn_attention(q, k, v, mask, attention.lengths(mask))
    assert torch.equal(first, want) and first.is_contiguous()
    ((piece, error),) = kernels.failures()
    on_cudnn = kernels.Kernels(True, True, "triton", "cudnn")
    with capture_logs() as logs:
        lower = kernels.step_down(on_cudnn, piece, error)
        assert lower == kernels.Kernels(True, True, "triton", "column")
        assert kernels.step_down(lower, piece, error) is None
    warnings = [e for e in logs if e["event"] == "engine.attention_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["fallback"] == "sdpa" and warnings[0]["error"]
    uncompiled = kernels.Kernels(False, True, "triton", "cudnn")
    assert kernels.step_down(uncompiled, piece, error) == kernels.Kernels(
        False, True, "triton", "mask"
    )


@gpu
@pytest.mark.parametrize("length", [128, 1024, 1536])
def test_cudnn_leaves_the_padded_keys_out_as_sdpa_does(length: int) -> None:
    # Rows of different lengths, one not padded at all; queries and keys as the
    # rotation writes them, values a view into the QKV projection's output.
    torch.manual_seed(length)
    heads, dim, batch = 16, 64, 3
    qkv = torch.randn(batch, length, 3 * heads * dim, device="cuda", dtype=torch.float16)
    q, k = (
        torch.randn(batch, length, heads, dim, device="cuda", dtype=torch.float16) * 2
        for _ in range(2)
    )
    v = qkv[..., 2 * heads * dim :].reshape(batch, length, heads, dim)
    counts = [length - 37, length, 5]
    mask = padded(counts, length, "cuda")
    with torch.inference_mode():
        want = attention.additive_mask_attention(q, k, v, mask)
        got = attention.cudnn_attention(q, k, v, mask, attention.lengths(mask))
    torch.cuda.synchronize()
    assert not kernels.failures()
    for row, real in enumerate(counts):
        diff = (got[row, :real] - want[row, :real]).abs().max().item()
        assert diff < 2e-3, (row, diff)
    unmasked = attention.attention(q, k, v)
    assert (got[0, : counts[0]] - unmasked[0, : counts[0]]).abs().max().item() > 1e-2


@gpu
def test_one_recorded_graph_serves_every_line_of_its_bucket() -> None:
    # The counts are read from device memory at each replay: a graph recorded
    # for one line gives the right attention for another line's length.
    torch.manual_seed(1)
    length, heads, dim = 256, 4, 64
    q, k, v = (
        torch.randn(2, length, heads, dim, device="cuda", dtype=torch.float16) for _ in range(3)
    )
    counts = torch.tensor([200, 256], device="cuda", dtype=torch.int32)
    mask = torch.arange(length, device="cuda")[None] < counts[:, None]
    with torch.inference_mode():
        attention.cudnn_attention(q, k, v, mask, counts)  # built outside the recording
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = attention.cudnn_attention(q, k, v, mask, counts)
        for real in ([200, 256], [17, 130]):
            counts.copy_(torch.tensor(real))
            mask.copy_(torch.arange(length, device="cuda")[None] < counts[:, None])
            graph.replay()
            want = attention.additive_mask_attention(q, k, v, mask)
            for row, n in enumerate(real):
                assert (out[row, :n] - want[row, :n]).abs().max().item() < 2e-3
    assert not kernels.failures()


@gpu
def test_compiled_blocks_take_the_op() -> None:
    # Inside torch.compile the op is opaque: the compiled padded attention
    # equals the eager one.
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 384, 8, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    padding = attention.Padding.of(padded([300, 384], 384, "cuda"))
    compiled = torch.compile(attention.masked_attention, dynamic=True, fullgraph=True)
    with torch.inference_mode():
        want = attention.additive_mask_attention(q, k, v, padding.mask)
        got = compiled(q, k, v, padding, "cudnn")
    for row, n in enumerate((300, 384)):
        assert (got[row, :n] - want[row, :n]).abs().max().item() < 2e-3
    assert not kernels.failures()
