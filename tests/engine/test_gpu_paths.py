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
