"""The position convolutions: the Triton kernel against f5-tts's module, and the
fallback to the module where the kernel cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from f5_tts.model.modules import ConvPositionEmbedding
from structlog.testing import capture_logs

from engine import conv_pos, kernels
from engine.config import ArchConfig, EngineConfig

# Runs the real kernel in Triton's interpreter (on the CPU, in numpy): the same
# source that is compiled for a GPU. The interpreter is switched on by an
# environment variable read at import, hence a process of its own. Small shapes
# (5 taps, groups 16 wide) keep it to seconds; rows of different lengths, a
# frame count that is not a whole block, an expanded (non-contiguous) mask and
# no mask at all.
INTERPRETED = """
import torch
from f5_tts.model.modules import ConvPositionEmbedding
from engine import conv_pos

torch.manual_seed(0)
module = ConvPositionEmbedding(128, kernel_size=5, groups=8).eval()
worst = 0.0
for batch, frames, real in [(2, 150, (150, 97)), (1, 40, (3,))]:
    h = torch.randn(batch, frames, 128)
    lengths = torch.tensor(real)[:, None]
    masks = [torch.arange(frames)[None] < lengths, None]
    masks.append((torch.arange(frames) < real[0])[None].expand(batch, frames))
    for mask in masks:
        with torch.inference_mode():
            want = module(h, mask) + h
            got = conv_pos.fused_position_embedding(conv_pos.PositionConv(module), h, mask)
        assert got.shape == want.shape and got.is_contiguous()
        worst = max(worst, float((got - want).abs().max()))
print("max_diff", worst)
"""


def test_the_triton_kernel_computes_the_package_convolutions() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETED], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    diff = float(done.stdout.split("max_diff")[1])
    assert diff < 1e-4


def test_the_kernel_is_chosen_on_a_gpu_for_widths_its_matrix_products_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernels, "triton_installed", lambda: True)

    def conv(dim: int, device: str = "cuda") -> str:
        config = EngineConfig(arch=ArchConfig(dim=dim, heads=dim // 64))
        return kernels.choose(config, device, torch.float16).conv

    assert conv(1024, "cpu") == "package"
    assert conv(1024) == "triton"  # 16 groups of 64
    assert conv(256) == "triton"  # of 16
    assert conv(384) == "package"  # of 24
    assert conv(128) == "package"  # of 8
    monkeypatch.setattr(kernels, "triton_installed", lambda: False)
    assert conv(1024) == "package"


def test_elsewhere_the_package_module_runs() -> None:
    module = ConvPositionEmbedding(64).eval()
    h = torch.randn(2, 30, 64)
    mask = torch.arange(30)[None] < torch.tensor([[30], [12]])
    with torch.inference_mode():
        got = conv_pos.position_embedding(conv_pos.PositionConv(module), h, mask, "package")
        want = module(h, mask) + h
    assert torch.equal(got, want)
    assert got.is_contiguous()


def test_a_kernel_that_fails_to_build_costs_one_warning_and_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def broken(*args: Any) -> torch.Tensor:
        calls.append(args)
        raise RuntimeError("no C compiler to build the launcher")

    monkeypatch.setattr(conv_pos, "fused_position_embedding", broken)
    module = ConvPositionEmbedding(256).eval()
    h = torch.randn(1, 20, 256)
    kernels.failures()
    with torch.inference_mode():
        got = conv_pos.position_embedding(conv_pos.PositionConv(module), h, None, "triton")
        want = module(h, None) + h
    assert torch.equal(got, want)  # the failing call still gives the right result
    assert len(calls) == 1
    ((piece, error),) = kernels.failures()
    on_triton = kernels.Kernels(True, True, "triton", "cudnn")
    with capture_logs() as logs:
        lower = kernels.step_down(on_triton, piece, error)
        assert lower == kernels.Kernels(True, True, "package", "cudnn")
        assert kernels.step_down(lower, piece, error) is None  # logged once
    warnings = [e for e in logs if e["event"] == "engine.conv_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["fallback"] == "cudnn" and "C compiler" in warnings[0]["error"]
