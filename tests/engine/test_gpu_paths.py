"""Every `Kernels` combination the engine can choose, on a CUDA GPU, against the
fp32 eager reference: eager, graphs, compiled and compiled+graphs, each with
both position convolutions and every padded attention, at a short length and
at a bucket's edge; a recorded graph replayed with other inputs; the vocoder's
graph against Vocos. `pytest -m gpu tests/engine`; skipped without CUDA."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import dit, graphs, sampler
from engine.checkpoints import ModelFiles, load_f5, load_vocos
from engine.config import ArchConfig, EngineConfig
from engine.kernels import Attention, Conv, Kernels, choose
from tests.engine.tiny import write_f5, write_vocos

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU paths need CUDA"),
]

#: Small, but wide enough for every kernel: 16 convolution groups of 16 channels
#: (the Triton kernel's narrowest) and heads of 64 (cuDNN's).
GPU_ARCH = ArchConfig(dim=256, depth=2, heads=4, ff_mult=2, text_dim=64, conv_layers=1)

#: What fp16 against fp32 moves a velocity on these random weights.
ATOL = RTOL = 2e-2

CONVS: tuple[Conv, ...] = ("triton", "package")
ATTENTIONS: tuple[Attention, ...] = ("cudnn", "column", "mask")
COMBINATIONS = [
    Kernels(compiled, graphed, conv, attention)
    for compiled, graphed, conv, attention in itertools.product(
        (False, True), (False, True), CONVS, ATTENTIONS
    )
]

#: A short line (padded up to its bucket) and one exactly at a bucket's edge.
LENGTHS = (100, graphs.BUCKET_FRAMES * 2)


@pytest.fixture(scope="module")
def gpu_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    root: Path = tmp_path_factory.mktemp("gpu")
    model, vocab = write_f5(root / "f5", GPU_ARCH)
    vocos = write_vocos(root / "vocos")
    return ModelFiles(model, vocab, vocos / "config.yaml", vocos / "pytorch_model.bin")


@pytest.fixture(scope="module")
def reference(gpu_files: ModelFiles) -> Any:
    return load_f5(gpu_files, GPU_ARCH, "cuda", torch.float32)


def inputs(frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise, condition (fp32) and text ids for one line of `frames` frames."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(1, frames, 100, device="cuda", generator=generator)
    cond = torch.randn(1, frames, 100, device="cuda", generator=generator)
    cond[:, frames // 2 :] = 0  # the frames to generate
    text = torch.randint(0, 50, (1, 20 + seed), device="cuda", generator=generator)
    return x, cond, text


def one_step(
    model: Any, runner: sampler.Steps, kernels: Kernels, frames: int, seed: int
) -> torch.Tensor:
    """x + v after one guided Euler step (dt = 1) on `runner`, the real frames, fp32."""
    transformer = model.transformer
    dtype = next(transformer.parameters()).dtype
    x, cond, text = inputs(frames, seed)
    length = runner.length(frames)
    pad = (0, 0, 0, length - frames)
    x, cond = (torch.nn.functional.pad(t, pad).to(dtype) for t in (x, cond))
    mask = (torch.arange(length, device="cuda") < frames)[None] if length != frames else None
    with torch.inference_mode():
        ids = dit.pad_ids([text], length)
        mods = dit.modulations(transformer, torch.full((1,), 0.4, device="cuda", dtype=dtype))
        dts = torch.ones(1, device="cuda", dtype=dtype)
        runner.start(sampler.StepInputs(transformer, x, cond, ids, mask, 2.0, mods, dts, kernels))
        try:
            runner.step(0)
        finally:
            out = runner.result()
    return out[0, :frames].float()


def expected(reference: Any, frames: int, seed: int) -> torch.Tensor:
    eager = Kernels(False, False, "package", "mask")
    return one_step(reference, sampler.EagerSteps(), eager, frames, seed)


@pytest.fixture
def model_on(gpu_files: ModelFiles) -> Iterator[Any]:
    """A fresh fp16 model per combination (compiling changes its blocks)."""
    model = load_f5(gpu_files, GPU_ARCH, "cuda", torch.float16)
    yield model
    dit.uncompile_regions(model.transformer)
    torch._dynamo.reset()


@pytest.mark.parametrize("kernels", COMBINATIONS, ids=str)
def test_every_path_gives_the_fp32_eager_result(
    kernels: Kernels, reference: Any, model_on: Any
) -> None:
    from engine import kernels as chosen_kernels

    chosen_kernels.failures()
    if kernels.compiled:
        dit.compile_regions(model_on.transformer)
    runner: sampler.Steps
    runner = graphs.GraphSteps() if kernels.graphs else sampler.EagerSteps(graphs.BUCKET_FRAMES)
    for frames in LENGTHS:
        for seed in (1, 2):  # with graphs, the second replays the first's recording
            got = one_step(model_on, runner, kernels, frames, seed)
            want = expected(reference, frames, seed)
            assert torch.allclose(got, want, atol=ATOL, rtol=RTOL), (
                frames,
                seed,
                (got - want).abs().max().item(),
            )
    assert not chosen_kernels.failures()  # no kernel fell back on the way


def test_the_engine_chooses_the_fastest_path_on_this_gpu() -> None:
    config = EngineConfig(arch=GPU_ARCH)
    assert str(choose(config, "cuda", torch.float16)) == "compiled+graphs/triton/cudnn"
    assert str(choose(config, "cuda", torch.float32)) == "compiled+graphs/triton/column"
    uncompiled = EngineConfig(arch=GPU_ARCH, compile=False, cuda_graphs=False)
    assert str(choose(uncompiled, "cuda", torch.float16)) == "eager/triton/cudnn"


def test_the_vocoder_graph_decodes_as_vocos_does(gpu_files: ModelFiles) -> None:
    from engine.vocoder import GraphVocoder

    vocos = load_vocos(gpu_files, "cuda")
    decoder = GraphVocoder(vocos)
    torch.manual_seed(0)
    for frames in (100, graphs.BUCKET_FRAMES, 300):
        mel = torch.randn(1, 100, frames, device="cuda")
        with torch.inference_mode():
            ours, theirs = decoder.decode(mel), vocos.decode(mel)
        assert ours.shape == theirs.shape
        # The graph is recorded with TF32 matmuls (engine.vocoder.tf32_matmuls).
        assert torch.allclose(ours, theirs, atol=2e-3), (frames, (ours - theirs).abs().max())


def batch_step(
    model: Any,
    runner: sampler.Steps,
    kernels: Kernels,
    lines: list[tuple[int, int]],
) -> list[torch.Tensor]:
    """`one_step` for several (frames, seed) lines in one batch, padded to the
    runner's length and batch size as the engine pads them: each line's real frames."""
    transformer = model.transformer
    dtype = next(transformer.parameters()).dtype
    length = runner.length(max(frames for frames, _ in lines))
    rows = [*lines, *[lines[-1]] * (runner.rows(len(lines)) - len(lines))]
    xs, conds, texts = [], [], []
    for frames, seed in rows:
        x, cond, text = inputs(frames, seed)
        pad = (0, 0, 0, length - frames)
        xs.append(torch.nn.functional.pad(x, pad).to(dtype))
        conds.append(torch.nn.functional.pad(cond, pad).to(dtype))
        texts.append(text)
    positions = torch.arange(length, device="cuda")
    mask = torch.stack([positions < frames for frames, _ in rows])
    with torch.inference_mode():
        ids = dit.pad_ids(texts, length)
        mods = dit.modulations(transformer, torch.full((1,), 0.4, device="cuda", dtype=dtype))
        dts = torch.ones(1, device="cuda", dtype=dtype)
        runner.start(
            sampler.StepInputs(
                transformer, torch.cat(xs), torch.cat(conds), ids, mask, 2.0, mods, dts, kernels
            )
        )
        try:
            runner.step(0)
        finally:
            out = runner.result()
    return [out[row, :frames].float() for row, (frames, _) in enumerate(lines)]


@pytest.mark.parametrize("kernels", [k for k in COMBINATIONS if k.graphs], ids=str)
def test_a_batch_on_every_graphed_path_gives_each_line_its_fp32_eager_result(
    kernels: Kernels, reference: Any, model_on: Any
) -> None:
    # Three lines of different lengths in one batch (padded to four rows, the
    # engine's batch graphs), each against itself alone on the fp32 eager path.
    from engine import kernels as chosen_kernels

    chosen_kernels.failures()
    if kernels.compiled:
        dit.compile_regions(model_on.transformer)
    runner = graphs.GraphSteps(max_rows=4)
    lines = [(100, 1), (LENGTHS[1], 2), (180, 3)]
    for _ in range(2):  # the second replays the first's recording
        batched = batch_step(model_on, runner, kernels, lines)
        for (frames, seed), got in zip(lines, batched, strict=True):
            want = expected(reference, frames, seed)
            assert torch.allclose(got, want, atol=ATOL, rtol=RTOL), (
                frames,
                seed,
                (got - want).abs().max().item(),
            )
    assert not chosen_kernels.failures()


async def test_a_batching_engine_records_every_batch_size_at_start_and_none_on_air(
    gpu_files: ModelFiles, tmp_path: Path
) -> None:
    # The default path (compiled + CUDA graphs) with batches of up to four: the
    # graphs of batch sizes 1, 2 and 4 are recorded at start-up, so three requests
    # together record nothing and compile nothing on air, and each sounds as it
    # does alone (fp16: the batch's matmuls round a little differently).
    import asyncio

    import numpy as np
    from torch._dynamo.utils import counters

    from engine.config import BatchConfig
    from engine.synth import Engine
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import write_voice

    write_voice(tmp_path / "voices", "alice", "This is the reference clip.")
    write_voice(tmp_path / "voices", "mei", "这是参考音频。", seconds=2.5)
    config = EngineConfig(arch=GPU_ARCH, nfe_steps=4, batch=BatchConfig(max_size=4, window_ms=50.0))
    engine = Engine(config, VoiceLibrary(tmp_path / "voices"), gpu_files)
    engine.start()
    await engine.wait_ready()
    try:
        assert engine.path == "compiled+graphs"
        runner = engine._runner
        assert isinstance(runner, graphs.GraphSteps) and runner.batch_sizes == [1, 2, 4]
        recorded = {key[0] for key in runner._graphs}
        assert recorded == {1, 2, 4}
        before = (len(runner._graphs), counters["stats"]["unique_graphs"])
        requests = [
            ("Hello chat. A second sentence.", "alice", 1),
            ("大家好，欢迎！", "mei", 2),
            ("A single line.", "alice", 3),
        ]

        async def collect(text: str, voice: str, seed: int) -> np.ndarray:
            return np.concatenate([c async for c in engine.stream(text, voice, seed=seed)])

        together = await asyncio.gather(*(collect(*r) for r in requests))
        alone = [await collect(*r) for r in requests]
        assert engine.batch_sizes[3] == 1
        assert (len(runner._graphs), counters["stats"]["unique_graphs"]) == before
        for got, want in zip(together, alone, strict=True):
            assert got.shape == want.shape and np.isfinite(got).all()
            assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()
    finally:
        engine.close()
        if engine._model is not None:
            dit.uncompile_regions(engine._model.transformer)
        torch._dynamo.reset()
