"""Which device the engine takes, what it says about it, and its way off Apple's GPU.

CUDA and MPS are not on the test machine: their queries are faked, and a real
MPS failure is what this Linux torch raises on any `.to("mps")`."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from engine import kernels, startup
from engine.checkpoints import ModelFiles
from engine.config import EngineConfig
from engine.startup import resolve_device
from engine.synth import Engine, SynthesisError
from engine.voices import VoiceLibrary
from tests.engine.tiny import TINY_ARCH


def config(**update: Any) -> EngineConfig:
    """An EngineConfig with fields set past validation ("mps" before bot/config.py takes it)."""
    return EngineConfig(arch=TINY_ARCH, nfe_steps=4).model_copy(update=update)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """A fake machine, with a CUDA build of torch: what torch says about CUDA and
    MPS, and whether an NVIDIA driver is installed."""
    facts = {"cuda": False, "mps": False, "driver": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: facts["cuda"])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: facts["mps"])
    monkeypatch.setattr(startup, "nvidia_driver_present", lambda: facts["driver"])
    monkeypatch.setattr(startup, "_warned", set())
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    return facts


def cpu_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)


# Choosing ----------------------------------------------------------------------


def test_auto_takes_cuda_first_in_fp16(machine: dict[str, bool]) -> None:
    machine.update(cuda=True, mps=True)
    choice = resolve_device(config())
    assert (choice.device, choice.dtype, choice.reason) == ("cuda", torch.float16, "cuda available")


def test_auto_takes_apples_gpu_without_cuda_in_fp16(machine: dict[str, bool]) -> None:
    machine.update(mps=True)
    choice = resolve_device(config())
    assert (choice.device, choice.dtype, choice.reason) == ("mps", torch.float16, "mps available")


def test_auto_takes_the_cpu_without_either_in_fp32(machine: dict[str, bool]) -> None:
    choice = resolve_device(config())
    assert (choice.device, choice.dtype, choice.reason) == ("cpu", torch.float32, "no cuda or mps")


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [
        ("cpu", "auto", ("cpu", torch.float32)),
        ("cuda:1", "auto", ("cuda:1", torch.float16)),
        ("mps", "auto", ("mps", torch.float16)),
        ("mps", "float32", ("mps", torch.float32)),
        ("cuda", "bfloat16", ("cuda", torch.bfloat16)),
    ],
)
def test_a_configured_device_and_dtype_are_taken_as_they_are(
    machine: dict[str, bool], device: str, dtype: str, expected: tuple[str, torch.dtype]
) -> None:
    machine.update(cuda=True, mps=True)
    choice = resolve_device(config(device=device, dtype=dtype))
    assert (choice.device, choice.dtype, choice.reason) == (*expected, "configured")


def test_mps_runs_the_portable_convolutions_and_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    # Triton and cuDNN's frontend may be installed on a Mac (or look so): on MPS
    # the paths are still the package's own, decided without a CUDA call.
    monkeypatch.setattr(kernels, "triton_installed", lambda: True)
    monkeypatch.setattr(kernels, "cudnn_frontend_installed", lambda: True)
    assert kernels.choose(EngineConfig(), "mps", torch.float16) == kernels.EAGER


# A CPU-only torch on an NVIDIA machine ------------------------------------------


def test_a_cpu_only_torch_beside_an_nvidia_driver_is_told_once_with_the_fix(
    machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu_torch(monkeypatch)
    machine.update(driver=True)
    with capture_logs() as logs:
        first = resolve_device(config())
        resolve_device(config())
        resolve_device(config(device="cuda"))
    assert first.device == "cpu"
    (warning,) = [e for e in logs if e["event"] == "engine.cpu_torch"]
    assert warning["log_level"] == "warning"
    assert warning["command"] == (
        "pip install --force-reinstall torch==2.11.0 torchaudio==2.11.0"
        " --index-url https://download.pytorch.org/whl/cu128"
    )


@pytest.mark.parametrize("case", ["cuda build", "no driver", "cpu configured"])
def test_no_cpu_torch_warning_where_there_is_nothing_to_fix(
    machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    if case != "cuda build":
        cpu_torch(monkeypatch)
    machine.update(driver=case != "no driver")
    with capture_logs() as logs:
        resolve_device(config(device="cpu" if case == "cpu configured" else "auto"))
    assert [e for e in logs if e["event"] == "engine.cpu_torch"] == []


def test_the_driver_is_found_in_windows_system32(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("SYSTEMROOT", str(tmp_path))
    (tmp_path / "System32").mkdir()
    assert not startup.nvidia_driver_present()
    (tmp_path / "System32" / "nvml.dll").write_bytes(b"")
    assert startup.nvidia_driver_present()


def test_the_driver_is_found_by_nvidia_smi_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not startup.nvidia_driver_present()
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/bin/{name}")
    assert startup.nvidia_driver_present()


# Off Apple's GPU -----------------------------------------------------------------


async def collect(engine: Engine, text: str) -> list[np.ndarray]:
    return [chunk async for chunk in engine.stream(text, "alice", seed=1)]


async def test_an_mps_failure_at_start_costs_a_warning_and_the_engine_starts_on_the_cpu(
    tiny_files: ModelFiles, voices_dir: Path
) -> None:
    eng = Engine(config(device="mps"), VoiceLibrary(voices_dir), tiny_files)
    assert (eng.device, eng.dtype) == ("mps", torch.float16)
    with capture_logs() as logs:
        eng.start()
        await eng.wait_ready()
    try:
        (failed,) = [e for e in logs if e["event"] == "engine.mps_failed"]
        assert failed["log_level"] == "warning"
        assert failed["fallback"] == "cpu" and failed["during"] == "start"
        assert "mps" in failed["error"]
        (ready,) = [e for e in logs if e["event"] == "engine.ready"]
        assert ready["device"] == "cpu" and ready["dtype"] == "float32"
        assert ready["device_reason"] == "mps failed"
        assert len(await collect(eng, "Speaking on the CPU.")) == 1
        assert eng.errors == 0
    finally:
        eng.close()


@pytest.fixture
async def mps_engine(tiny_files: ModelFiles, voices_dir: Path) -> AsyncIterator[Engine]:
    """An engine as it would be once ready on MPS: loaded on the CPU here, then
    named "mps", so that its next tensor for the device fails as MPS would.
    (Set while its thread waits for a job: it reads these only with a job.)"""
    eng = Engine(config(), VoiceLibrary(voices_dir), tiny_files)
    eng.start()
    await eng.wait_ready()
    eng.device, eng.dtype = "mps", torch.float16
    yield eng
    eng.close()


async def test_an_mps_failure_in_a_request_retries_it_on_the_cpu_and_stays_there(
    mps_engine: Engine,
) -> None:
    with capture_logs() as logs:
        chunks = await collect(mps_engine, "This line fails on MPS.")
        more = await collect(mps_engine, "And this one runs on the CPU.")
    assert len(chunks) == 1 and len(more) == 1
    (failed,) = [e for e in logs if e["event"] == "engine.mps_failed"]
    assert failed["fallback"] == "cpu" and failed["during"] == "request"
    assert not [e for e in logs if e["event"] == "engine.error"]
    assert (mps_engine.device, mps_engine.dtype) == ("cpu", torch.float32)
    assert mps_engine.errors == 0


async def test_a_line_that_fails_on_mps_after_its_first_sentence_is_not_repeated(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its first sentence has played by then: the line fails as any failed line
    # does rather than start again, and the engine carries on on the CPU.
    real = engine._chunk
    calls: list[int] = []

    def second_fails(*args: Any) -> np.ndarray:
        """The line's second sentence fails on MPS; every other runs."""
        calls.append(1)
        if len(calls) == 2:
            engine.device = "mps"  # as if it had been there all along
            raise RuntimeError("MPS backend out of memory")
        return real(*args)

    monkeypatch.setattr(engine, "_chunk", second_fails)
    with capture_logs() as logs:
        stream = engine.stream("First sentence. Second sentence.", "alice", seed=1)
        assert len(await stream.__anext__()) > 0
        with pytest.raises(SynthesisError, match="out of memory"):
            await stream.__anext__()
    assert [e["event"] for e in logs] == ["engine.mps_failed", "engine.error"]
    assert engine.device == "cpu" and engine.errors == 1
    assert len(await collect(engine, "Back on the CPU.")) == 1
