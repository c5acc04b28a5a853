"""cuDNN's padding mask for the padded attention: the rules for when it runs, its
fallback where it cannot, and (on a GPU) its result against SDPA's."""

from __future__ import annotations

import pytest
import torch
from structlog.testing import capture_logs

from engine import cudnn_attention, dit

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN runs on a GPU")


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no failure recorded (the engine records one for good)."""
    monkeypatch.setattr(cudnn_attention, "_failed", [])


def padded(batch_counts: list[int], length: int, device: str = "cpu") -> torch.Tensor:
    positions = torch.arange(length, device=device)[None]
    return positions < torch.tensor(batch_counts, device=device)[:, None]


def test_counts_are_each_rows_real_frames() -> None:
    mask = padded([55, 70, 1], 70)
    counts = cudnn_attention.lengths(mask)
    assert counts.dtype == torch.int32
    assert counts.tolist() == [55, 70, 1]
    assert torch.equal(dit.Padding.of(mask).counts, counts)


def test_the_path_is_cudnn_only_for_half_precision_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cudnn_attention.INSTALLED  # a project dependency on Linux and Windows
    assert cudnn_attention.path("cuda", torch.float16) == "cudnn"
    assert cudnn_attention.path("cuda:1", torch.bfloat16) == "cudnn"
    assert cudnn_attention.path("cuda", torch.float32) == "sdpa"
    assert cudnn_attention.path("cpu", torch.float16) == "sdpa"
    assert not cudnn_attention.usable(torch.zeros(1, 4, 2, 64, dtype=torch.float16))  # CPU
    monkeypatch.setattr(cudnn_attention, "_failed", ["it failed once"])
    assert cudnn_attention.path("cuda", torch.float16) == "sdpa"
    monkeypatch.setattr(cudnn_attention, "_failed", [])
    monkeypatch.setattr(cudnn_attention, "INSTALLED", False)
    assert cudnn_attention.path("cuda", torch.float16) == "sdpa"


def test_masked_attention_takes_cudnn_where_it_is_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dispatch: cuDNN's padding mask first, wherever it takes the query,
    # compiled or not; the counts it gets are the padding's own.
    taken: list[torch.Tensor] = []

    def fake(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor
    ) -> torch.Tensor:
        taken.append(rest[1])
        return dit.additive_mask_attention(q, k, v, rest[0])

    q, k, v = (torch.randn(2, 10, 2, 8) for _ in range(3))
    padding = dit.Padding.of(padded([7, 10], 10))
    monkeypatch.setattr(cudnn_attention, "attention", fake)
    dit.masked_attention(q, k, v, padding)
    assert taken == []  # a CPU tensor: not usable
    monkeypatch.setattr(cudnn_attention, "usable", lambda query: query is q)
    dit.masked_attention(q, k, v, padding)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    dit.masked_attention(q, k, v, padding)
    assert len(taken) == 2 and all(t is padding.counts for t in taken)


def test_a_failure_falls_back_to_sdpa_in_the_same_call_and_is_logged_once() -> None:
    # The real op, where cuDNN cannot run it (here: no GPU, so no cuDNN handle):
    # the caller still gets the attention, from SDPA with an additive mask; the
    # warning comes once, and the engine then stops choosing this path.
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 12, 2, 8) * 2 for _ in range(3))
    mask = padded([9, 12], 12)
    want = dit.additive_mask_attention(q, k, v, mask)
    with capture_logs() as logs:
        first = cudnn_attention.attention(q, k, v, mask, cudnn_attention.lengths(mask))
        second = cudnn_attention.attention(q, k, v, mask, cudnn_attention.lengths(mask))
    warnings = [e for e in logs if e["event"] == "engine.attention_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["fallback"] == "sdpa" and warnings[0]["error"]
    assert torch.equal(first, want) and torch.equal(second, want)
    assert first.is_contiguous()
    assert cudnn_attention.path("cuda", torch.float16) == "sdpa"


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
        want = dit.additive_mask_attention(q, k, v, mask)
        got = cudnn_attention.attention(q, k, v, mask, cudnn_attention.lengths(mask))
    torch.cuda.synchronize()
    assert not cudnn_attention._failed
    for row, real in enumerate(counts):
        diff = (got[row, :real] - want[row, :real]).abs().max().item()
        assert diff < 2e-3, (row, diff)
    unmasked = dit.attention(q, k, v)
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
        cudnn_attention.attention(q, k, v, mask, counts)  # built outside the recording
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = cudnn_attention.attention(q, k, v, mask, counts)
        for real in ([200, 256], [17, 130]):
            counts.copy_(torch.tensor(real))
            mask.copy_(torch.arange(length, device="cuda")[None] < counts[:, None])
            graph.replay()
            want = dit.additive_mask_attention(q, k, v, mask)
            for row, n in enumerate(real):
                assert (out[row, :n] - want[row, :n]).abs().max().item() < 2e-3
    assert not cudnn_attention._failed


@gpu
def test_compiled_blocks_take_the_op() -> None:
    # Inside torch.compile the op is opaque: the compiled padded attention
    # equals the eager one.
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 384, 8, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    padding = dit.Padding.of(padded([300, 384], 384, "cuda"))
    compiled = torch.compile(dit.masked_attention, dynamic=True, fullgraph=True)
    with torch.inference_mode():
        want = dit.additive_mask_attention(q, k, v, padding.mask)
        got = compiled(q, k, v, padding)
    for row, n in enumerate((300, 384)):
        assert (got[row, :n] - want[row, :n]).abs().max().item() < 2e-3
    assert not cudnn_attention._failed
