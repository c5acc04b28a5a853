"""Where one guided sampling step's time goes on the GPU, on the engine's default path.

The step as the bot runs it: an `Engine` with its default settings (regional
compile, the step padded to its bucket and replayed as a CUDA graph), at the
issue's reference length, a short line after a 7 s reference (940 frames,
padded to 1,024), batch 1 with guidance. Prints JSON lines: the replayed
step's time, its kernel time by category, and the top kernels. What was tried
against this path, and what it measured, is in bench/FINDINGS.md.

Run on the GPU:  python -m bench.step_profile [--frames 940] [--top 30]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import DeviceType, ProfilerActivity, profile

from bench.engine import NFE, one_step, write_model
from engine.config import EngineConfig
from engine.synth import Engine
from engine.voices import VoiceLibrary

#: Text ids of the reference's and the short line's text together.
TEXT_LEN = 130

#: Kernel categories, by what their names contain (first match wins).
CATEGORIES = (
    ("attention", ("fmha", "flash", "attention", "attn", "sdpa")),
    ("conv", ("conv", "implicit", "winograd", "xmma_fprop", "fft")),
    ("gemm", ("gemm", "nvjet", "cutlass", "sm90", "s16816", "cublas", "splitk")),
    ("triton", ("triton",)),
)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def category(kernel: str) -> str:
    """The category of a kernel, by its name; "other" when none matches."""
    low = kernel.lower()
    return next((c for c, keys in CATEGORIES if any(k in low for k in keys)), "other")


def cuda_ms(fn: Callable[[], object], reps: int = 100, warm: int = 5) -> float:
    """GPU time of one call of `fn`, in ms, from CUDA events around `reps` calls."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / reps


def kernel_times(fn: Callable[[], object], calls: int = 4) -> dict[str, tuple[float, int]]:
    """Each kernel's time per call of `fn` (µs) and its launches per call; the kernels
    of a replayed CUDA graph are traced one by one."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    us: dict[str, float] = collections.defaultdict(float)
    launches: dict[str, int] = collections.defaultdict(int)
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            us[event.name] += event.time_range.elapsed_us() / calls
            launches[event.name] += 1
    return {name: (us[name], launches[name] // calls) for name in us}


def by_category(kernels: dict[str, tuple[float, int]]) -> dict[str, float]:
    """Kernel time (µs) per category."""
    totals: dict[str, float] = collections.defaultdict(float)
    for name, (us, _) in kernels.items():
        totals[category(name)] += us
    return {name: round(us, 1) for name, us in sorted(totals.items())}


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="step-"))
    files, arch = write_model(root)
    engine = Engine(EngineConfig(nfe_steps=NFE, arch=arch), VoiceLibrary(root / "voices"), files)
    engine.start()
    await engine.wait_ready()
    emit({"event": "setup", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
          "path": engine.path, "conv": engine.kernels.conv,
          "kernels": str(engine.kernels)})  # fmt: skip
    with one_step(engine, args.frames, TEXT_LEN) as step:
        length = engine._runner.length(args.frames)
        step_ms = cuda_ms(step)
        kernels = kernel_times(step)
    engine.close()
    emit({"event": "step", "frames": args.frames, "length": length,
          "graph_step_ms": round(step_ms, 3),
          "kernels_per_step": sum(n for _, n in kernels.values()),
          "us_per_step": by_category(kernels),
          "total_us": round(sum(us for us, _ in kernels.values()), 1)})  # fmt: skip
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[: args.top]
    for name, (us, n) in top:
        emit({"event": "kernel", "us": round(us, 1), "per_step": n, "name": name[:140]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=940, help="real frames of the step")
    parser.add_argument("--top", type=int, default=30, help="kernels listed one by one")
    asyncio.run(main(parser.parse_args()))
