"""Engine speed, ours against stock f5-tts, side by side in one process.

F5TTS_v1_Base shape with random weights (the cost does not depend on their
values), published Vocos shape, fp16 on the GPU, NFE 8, a 7 s reference.
For a short, a medium and a long chat line it prints JSON lines with cold,
median and min time to first audio (request -> first chunk on the host) and
total time, real-time factor, peak GPU memory, start-up time, the ratio
ours/stock, and the floor: FLOPs of one guided denoising step at that length
divided by this GPU's measured dense fp16 matmul rate, times the steps.

Results are stored as JSON; each run is compared with the previous one and
any figure more than 20 % worse is flagged.

Run on the GPU:  python -m bench.engine [--out bench/results] [--runs 5]
Check the script on the CPU (tiny random model, eager path, writes nothing):
python -m bench.engine --tiny
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import chunking, dit, kernels, sampler
from engine.audio import SAMPLE_RATE
from engine.checkpoints import HOP_LENGTH, ModelFiles, load_f5, load_vocos
from engine.config import ArchConfig, EngineConfig
from engine.graphs import GraphSteps
from engine.synth import Engine
from engine.vocoder import GraphVocoder
from engine.voices import VoiceLibrary
from tests.engine.tiny import PUBLISHED_VOCOS_CONFIG, TINY_ARCH, write_f5, write_vocos, write_voice

NFE = 8
REFERENCE_S = 7.0
REFERENCE_TEXT = (
    "Hello everyone and welcome back to the stream, today we are going to try something new."
)
LINES = {
    "short": "Thanks for the follow, welcome in!",
    "medium": (
        "That was an amazing play, I honestly did not expect the comeback in the last round, "
        "well done everyone."
    ),
    "long": (
        "Okay chat, quick update. We are taking a short break in five minutes, so grab some "
        "water and stretch a little. When we come back we will try the hardest map again, "
        "and this time I promise I will not fall off the bridge. Thanks for all the support "
        "today, it really means a lot to me and to the whole team."
    ),
}
#: A figure this much worse than the previous run is flagged.
REGRESSION = 0.20


def emit(record: dict[str, Any], sink: list[dict[str, Any]]) -> None:
    sink.append(record)
    print(json.dumps(record), flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    cold, warm = runs[0], runs[1:]
    return {
        "cold_ttfa_ms": cold["ttfa_ms"],
        "ttfa_ms_median": round(statistics.median(r["ttfa_ms"] for r in warm), 2),
        "ttfa_ms_min": round(min(r["ttfa_ms"] for r in warm), 2),
        "total_ms_median": round(statistics.median(r["total_ms"] for r in warm), 2),
        "total_ms_min": round(min(r["total_ms"] for r in warm), 2),
        "audio_s": warm[-1]["audio_s"],
        "rtf": round(
            statistics.median(r["total_ms"] for r in warm) / 1000 / warm[-1]["audio_s"], 5
        ),
        # Graphs compiled during measured calls: above 0 means a recompile on air.
        "new_graphs": sum(r.get("new_graphs", 0) for r in runs),
    }


# stock ---------------------------------------------------------------------------
def load_stock(files: ModelFiles, arch: ArchConfig, device: str) -> tuple[Any, Any]:
    from f5_tts.infer.utils_infer import load_model, load_vocoder
    from f5_tts.model.backbones.dit import DiT

    cfg = {
        "dim": arch.dim, "depth": arch.depth, "heads": arch.heads, "ff_mult": arch.ff_mult,
        "text_dim": arch.text_dim, "conv_layers": arch.conv_layers,
    }  # fmt: skip
    model = load_model(DiT, cfg, str(files.model), vocab_file=str(files.vocab), device=device)
    vocoder = load_vocoder(
        "vocos", is_local=True, local_path=str(files.vocoder_config.parent), device=device
    )
    return model, vocoder


def run_stock(
    model: Any, vocoder: Any, ref: tuple[torch.Tensor, int], text: str, device: str
) -> dict[str, float]:
    from f5_tts.infer.utils_infer import chunk_text, infer_batch_process

    audio, sr = ref
    ref_s = audio.shape[-1] / sr
    max_chars = int(len(REFERENCE_TEXT.encode()) / ref_s * (22 - ref_s))
    batches = chunk_text(text, max_chars=max_chars)
    sync()
    started = time.perf_counter()
    first = None
    samples = 0
    for chunk, _ in infer_batch_process(
        ref, REFERENCE_TEXT, batches, model, vocoder, progress=None, nfe_step=NFE,
        cfg_strength=2.0, sway_sampling_coef=-1.0, device=device, streaming=True,
        chunk_size=1 << 30,
    ):  # fmt: skip
        if first is None:
            first = time.perf_counter() - started
        samples += len(chunk)
    total = time.perf_counter() - started
    return {"ttfa_ms": round((first or total) * 1000, 2), "total_ms": round(total * 1000, 2),
            "audio_s": round(samples / SAMPLE_RATE, 3)}  # fmt: skip


# ours ------------------------------------------------------------------------------
def graphs() -> int:
    """Graphs torch.compile has built so far: a rise after warm-up is a recompile on air."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


async def run_ours(engine: Engine, text: str) -> dict[str, float]:
    before = graphs()
    started = time.perf_counter()
    first = None
    samples = 0
    async for chunk in engine.stream(text, "ref", seed=0):
        if first is None:
            first = time.perf_counter() - started
        samples += len(chunk)
    total = time.perf_counter() - started
    return {
        "ttfa_ms": round((first or total) * 1000, 2),
        "total_ms": round(total * 1000, 2),
        "audio_s": round(samples / SAMPLE_RATE, 3),
        "new_graphs": graphs() - before,
    }


# floor -------------------------------------------------------------------------------
def matmul_tflops(device: str) -> float:
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    sync()
    reps = 20
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - started) / 1e12


def step_flops(model: Any, frames: int, text_len: int, device: str) -> float:
    """FLOPs of one guided denoising step (the batch-2 forward) at `frames` mel frames."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, frames, 100, device=device, dtype=torch.float16)
    text = torch.randint(0, 100, (1, text_len), device=device)
    t = torch.tensor(0.5, device=device, dtype=torch.float16)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.transformer(x=x, cond=x, text=text, time=t,
                          mask=None, cfg_infer=True, cache=False)  # fmt: skip
    return float(counter.get_total_flops())


def time_step(model: Any, frames: int, text_len: int, device: str, reps: int = 20) -> float:
    x = torch.randn(1, frames, 100, device=device, dtype=torch.float16)
    text = torch.randint(0, 100, (1, text_len), device=device)
    t = torch.tensor(0.5, device=device, dtype=torch.float16)
    with torch.inference_mode():
        for _ in range(3):
            model.transformer(
                x=x, cond=x, text=text, time=t, mask=None, cfg_infer=True, cache=False
            )
        sync()
        started = time.perf_counter()
        for _ in range(reps):
            model.transformer(
                x=x, cond=x, text=text, time=t, mask=None, cfg_infer=True, cache=False
            )
        sync()
    return (time.perf_counter() - started) / reps * 1000


@contextlib.contextmanager
def one_step(engine: Engine, frames: int, text_len: int) -> Iterator[Callable[[], None]]:
    """One guided step on the engine's own path (its runner) at `frames` frames,
    to run as often as wanted: its time step is 0, so x stays as it is."""
    model, runner = engine._model, engine._runner
    device = torch.device(engine.device)
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, frames, 100, device=device, dtype=dtype)
    text = torch.randint(0, 100, (1, text_len), device=device)
    t = torch.tensor(0.5, device=device, dtype=dtype)
    with torch.inference_mode():
        length = runner.length(frames)
        pad = (0, 0, 0, length - frames)
        mask = (torch.arange(length, device=device) < frames)[None] if length != frames else None
        xp = torch.nn.functional.pad(x, pad)
        ids = dit.pad_ids([text], length)
        mods = dit.modulations(model.transformer, t.reshape(1))
        dts = torch.zeros(1, device=device, dtype=dtype)
        runner.start(
            sampler.StepInputs(
                model.transformer, xp, xp.clone(), ids, mask, 2.0, mods, dts, engine.kernels
            )
        )
        try:
            yield lambda: runner.step(0)
        finally:
            runner.result()


def time_engine_step(engine: Engine, frames: int, text_len: int, reps: int = 50) -> float:
    """One guided step on the engine's own path, in ms."""
    with one_step(engine, frames, text_len) as step:
        for _ in range(3):
            step()
        sync()
        started = time.perf_counter()
        for _ in range(reps):
            step()
        sync()
    return (time.perf_counter() - started) / reps * 1000


def warm_startup(label: str) -> float:
    """Start-up of a fresh process (load, warm-up, compile from the cache, graphs)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.engine", "--startup-only", label],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    record = next(json.loads(line) for line in out.splitlines() if '"startup_only"' in line)
    return float(record["startup_s"])


def write_model(root: Path, tiny: bool = False) -> tuple[ModelFiles, ArchConfig]:
    """F5TTS_v1_Base and Vocos in their published shapes with random weights (or the
    tests' tiny ones), and the reference voice "ref", under `root`."""
    arch = TINY_ARCH if tiny else ArchConfig()
    model_path, vocab = write_f5(root / "f5", arch)
    vocos_config: dict[str, object] | None = None if tiny else dict(PUBLISHED_VOCOS_CONFIG)
    vocos_dir = write_vocos(root / "vocos", config_doc=vocos_config)
    write_voice(root / "voices", "ref", REFERENCE_TEXT, seconds=REFERENCE_S)
    files = ModelFiles(
        model_path, vocab, vocos_dir / "config.yaml", vocos_dir / "pytorch_model.bin"
    )
    return files, arch


async def startup_only(label: str) -> None:
    compile_, graphs_ = {"ours_compiled_graphs": (True, True), "ours_compiled": (True, False),
                         "ours_graphs": (False, True)}.get(label, (False, False))  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    files, arch = write_model(root)
    config = EngineConfig(nfe_steps=NFE, compile=compile_, cuda_graphs=graphs_, arch=arch)
    engine = Engine(config, VoiceLibrary(root / "voices"), files)
    started = time.perf_counter()
    engine.start()
    await engine.wait_ready()
    startup = round(time.perf_counter() - started, 1)
    print(json.dumps({"event": "startup_only", "path": label, "startup_s": startup}), flush=True)
    engine.close()


def time_vocoder(engine: Engine, seconds: float, reps: int = 20) -> float:
    """Decoding `seconds` of audio the engine's way, to samples on the host."""
    mel = torch.randn(1, 100, int(seconds * SAMPLE_RATE / HOP_LENGTH), device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            engine._decoder.decode(mel)
        sync()
        started = time.perf_counter()
        for _ in range(reps):
            engine._decoder.decode(mel).cpu()
        sync()
    return (time.perf_counter() - started) / reps * 1000


def vocoder_diff(engine: Engine, seconds: float) -> float:
    """The engine's decode against Vocos's own, on the same mel: largest sample difference."""
    mel = torch.randn(1, 100, int(seconds * SAMPLE_RATE / HOP_LENGTH), device="cuda")
    with torch.inference_mode():
        ours, theirs = engine._decoder.decode(mel), engine._vocoder.decode(mel)
    return float((ours - theirs).abs().max())


def phase_times(engine: Engine, text: str, reps: int = 10) -> dict[str, float]:
    """Where a short line's first audio goes: text to ids on the CPU, sampling
    (text embedding and the steps), decoding; the rest of first audio is the
    engine's thread hand-offs."""
    model = engine._model
    ref = engine._reference(engine.voices.get("ref"))
    device = torch.device(engine.device)
    frames = chunking.duration_frames(ref.frames, ref.text, text)
    totals = {"text_ids_ms": 0.0, "sample_ms": 0.0, "vocoder_ms": 0.0}
    for _ in range(reps + 1):
        sync()
        t0 = time.perf_counter()
        ids = sampler.text_ids(ref.text + text, engine._vocab, device)
        sync()
        t1 = time.perf_counter()
        mel = sampler.sample(model, ref.mel, ids, frames, seed=0, steps=NFE, cfg_strength=2.0,
                             sway=-1.0, runner=engine._runner)  # fmt: skip
        sync()
        t2 = time.perf_counter()
        with torch.inference_mode():
            engine._decoder.decode(mel[:, ref.frames :].float().permute(0, 2, 1))[0].cpu()
        t3 = time.perf_counter()
        if _ == 0:
            continue  # warm
        totals["text_ids_ms"] += (t1 - t0) * 1000
        totals["sample_ms"] += (t2 - t1) * 1000
        totals["vocoder_ms"] += (t3 - t2) * 1000
    return {k: round(v / reps, 2) for k, v in totals.items()}


#: Short chat lines of a flood, synthesised B at a time.
FLOOD = ["Thanks for the follow, welcome in!", "gg", "lol that was so close", "hype hype hype"]


def batch_throughput(
    engine: Engine, sizes: tuple[int, ...] = (1, 4, 16), reps: int = 3, texts: list[str] = FLOOD
) -> dict[int, float]:
    """Lines per second (sampling + decoding) when B wait and go in one batch; the
    short lines of a flood unless `texts` says."""
    model, runner, decoder = engine._model, engine._runner, engine._decoder
    ref = engine._reference(engine.voices.get("ref"))
    device = torch.device(engine.device)
    rates = {}
    for size in sizes:
        lines = []
        for i in range(size):
            text = texts[i % len(texts)]
            ids = sampler.text_ids(ref.text + text, engine._vocab, device)
            frames = chunking.duration_frames(ref.frames, ref.text, text)
            lines.append(sampler.Line(ref.mel, ids, frames, seed=i))

        def once(lines: list[sampler.Line] = lines) -> None:
            mels = sampler.sample_batch(model, lines, steps=NFE, cfg_strength=2.0, sway=-1.0,
                                        runner=runner)  # fmt: skip
            for mel in mels:
                decoder.decode(mel[:, ref.frames :].float().permute(0, 2, 1)).cpu()

        once()  # records this batch size's graphs
        sync()
        started = time.perf_counter()
        for _ in range(reps):
            once()
        sync()
        rates[size] = round(size * reps / (time.perf_counter() - started), 1)
    return rates


# regression check -------------------------------------------------------------------------
#: msgs_per_s is higher-is-better and left out of the check.
LOWER_IS_BETTER = (
    "ttfa_ms_median",
    "ttfa_ms_min",
    "total_ms_median",
    "rtf",
    "peak_gb",
    "startup_s",
    "step_ms",
    "step_940_ms",
    "vocoder_ms",
    "warm_s",
)


def compare(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    flags = []
    for key, record in current.items():
        old = previous.get(key)
        if not isinstance(record, dict) or not isinstance(old, dict):
            continue
        for field in LOWER_IS_BETTER:
            a, b = old.get(field), record.get(field)
            if (
                isinstance(a, int | float)
                and isinstance(b, int | float)
                and a > 0
                and b > a * (1 + REGRESSION)
            ):
                flags.append(f"{key}.{field}: {a} -> {b} (+{(b / a - 1) * 100:.0f} %)")
    return flags


async def main(args: argparse.Namespace) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    # --tiny: a check of the script itself on the CPU; its figures mean nothing.
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    files, arch = write_model(root, args.tiny)
    lines = {"short": LINES["short"]} if args.tiny else LINES
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    emit(
        {"event": "setup", "device": device, "gpu": gpu, "torch": torch.__version__, "nfe": NFE},
        records,
    )

    # Stock, as a user of the package gets it (eager fp16).
    started = time.perf_counter()
    stock_model, stock_vocoder = load_stock(files, arch, device)
    import soundfile as sf

    wav, sr = sf.read(str(root / "voices" / "ref.wav"), dtype="float32")
    ref = (torch.from_numpy(wav)[None], sr)
    stock_start = time.perf_counter() - started
    for name, text in lines.items():
        runs = [
            run_stock(stock_model, stock_vocoder, ref, text, device) for _ in range(args.runs + 1)
        ]
        summary[f"stock.{name}"] = {**summarise(runs), "startup_s": round(stock_start, 1)}
        emit(
            {"event": "result", "path": "stock", "line": name, **summary[f"stock.{name}"]}, records
        )

    # Floor and per-step cost at the medium line's length.
    ref_frames = int(REFERENCE_S * SAMPLE_RATE) // HOP_LENGTH
    frames = chunking.duration_frames(ref_frames, REFERENCE_TEXT + " ", LINES["medium"])
    text_len = sampler.text_ids(
        REFERENCE_TEXT + " " + LINES["medium"], stock_model.vocab_char_map, torch.device(device)
    ).shape[1]
    if device == "cuda":
        rate = matmul_tflops(device)
        flops = step_flops(stock_model, frames, text_len, device)
        step_ms = time_step(stock_model, frames, text_len, device)
        summary["floor"] = {
            "frames": frames,
            "step_tflop": round(flops / 1e12, 3),
            "matmul_tflops": round(rate, 1),
            "floor_step_ms": round(flops / (rate * 1e12) * 1000, 3),
            "floor_request_ms": round(flops / (rate * 1e12) * 1000 * NFE, 2),
            "stock_step_ms": round(step_ms, 2),
            "stock_step_tflops": round(flops / step_ms / 1e9, 1),
        }
        emit({"event": "floor", **summary["floor"]}, records)
    del stock_model, stock_vocoder
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    # Ours, as the bot uses it, on each path the engine can take.
    # compiled+graphs (the default) first, so its start-up is a cold compile.
    paths = {
        "ours_eager": (False, False),
        "ours_graphs": (False, True),
        "ours_compiled_graphs": (True, True),
        "ours_compiled": (True, False),
    }
    for label, (compile_, graphs_) in paths.items():
        if device != "cuda" and (compile_ or graphs_):
            continue
        if args.paths and label not in args.paths:
            continue
        config = EngineConfig(
            device=device, nfe_steps=NFE, compile=compile_, cuda_graphs=graphs_, arch=arch
        )
        dtype = torch.float16 if device == "cuda" else torch.float32
        chosen = kernels.choose(config, device, dtype)
        if not compile_:
            # The paths without compile stand for a machine without Triton (Windows,
            # mostly): there the position convolutions are the package's (cuDNN) too.
            chosen = dataclasses.replace(chosen, conv="package")
        engine = Engine(config, VoiceLibrary(root / "voices"), files, kernels=chosen)
        # Peak memory counts what this engine adds, not what an earlier one left.
        before = torch.cuda.memory_allocated() if device == "cuda" else 0
        started = time.perf_counter()
        engine.start()
        await engine.wait_ready()
        startup = time.perf_counter() - started
        memory = {}
        if device == "cuda":
            gb = 2**30
            memory = {
                "before_gb": round(before / gb, 3),
                "ready_gb": round(torch.cuda.memory_allocated() / gb, 3),
                "ready_peak_gb": round(torch.cuda.max_memory_allocated() / gb, 3),
            }
        emit({"event": "engine", "path": label, "engine_path": engine.path,
              "conv": engine.kernels.conv, "kernels": str(engine.kernels),
              "startup_s": round(startup, 1),
              "dynamo_graphs": graphs(), **memory},
             records)  # fmt: skip
        for name, text in lines.items():
            runs = [await run_ours(engine, text) for _ in range(args.runs + 1)]
            peak = (torch.cuda.max_memory_allocated() - before) / 2**30 if device == "cuda" else 0.0
            record = {**summarise(runs), "startup_s": round(startup, 1), "peak_gb": round(peak, 2)}
            stock = summary[f"stock.{name}"]
            record["speedup_ttfa_vs_stock"] = round(
                stock["ttfa_ms_median"] / record["ttfa_ms_median"], 2
            )
            record["speedup_total_vs_stock"] = round(
                stock["total_ms_median"] / record["total_ms_median"], 2
            )
            summary[f"{label}.{name}"] = record
            emit({"event": "result", "path": label, "line": name, **record}, records)
        if device == "cuda":
            step = {
                "step_ms": round(time_engine_step(engine, frames, text_len), 3),
                # The reference length (a short line after a 7 s reference).
                "step_940_ms": round(time_engine_step(engine, 940, text_len), 3),
                # The short line's decode: what first audio costs beyond the steps.
                "vocoder_ms": round(time_vocoder(engine, summary["stock.short"]["audio_s"]), 3),
                "vocoder_max_diff": vocoder_diff(engine, summary["stock.short"]["audio_s"]),
            }
            summary[f"{label}.step"] = step
            emit({"event": "step", "path": label, "frames": frames, **step}, records)
        if device == "cuda" and compile_ and graphs_:
            phases = phase_times(engine, LINES["short"])
            summary[f"{label}.phases"] = phases
            emit({"event": "phases", "path": label, "line": "short", **phases}, records)
            for size, rate in batch_throughput(engine).items():
                summary[f"{label}.batch{size}"] = {"msgs_per_s": rate}
                emit({"event": "batch", "path": label, "batch": size, "msgs_per_s": rate}, records)
        engine.close()
        del engine  # its weights and graphs must not count in the next path's peak
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        if compile_ and graphs_:
            # A restart: a new process, with the compile cache the run above left.
            warm = warm_startup(label)
            summary[f"{label}.startup"] = {"cold_s": round(startup, 1), "warm_s": warm}
            emit({"event": "startup", "path": label, **summary[f"{label}.startup"]}, records)

    # Same weights, same noise: ours equals stock's sampler (checked on this device).
    model = load_f5(files, arch, device, torch.float16 if device == "cuda" else torch.float32)
    cond = model.mel_spec(ref[0].to(device)).permute(0, 2, 1).to(next(model.parameters()).dtype)
    ids = sampler.text_ids(
        REFERENCE_TEXT + " " + LINES["short"], model.vocab_char_map, torch.device(device)
    )
    # Stock, then ours on the same weights (dit.prepare builds our modules beside the package's).
    theirs, _ = model.sample(
        cond=cond, text=ids, duration=cond.shape[1] + 100, steps=NFE, cfg_strength=2.0,
        sway_sampling_coef=-1.0, seed=1,
    )  # fmt: skip
    ours = sampler.sample(
        model, cond, ids, cond.shape[1] + 100, seed=1, steps=NFE, cfg_strength=2.0, sway=-1.0
    )
    diff = float((ours.float() - theirs.float()).abs().max())
    summary["equivalence"] = {"max_abs_diff": diff, "ok": bool(np.isfinite(diff) and diff < 5e-2)}
    emit({"event": "equivalence", **summary["equivalence"]}, records)
    if device == "cuda":
        # The default path (compiled regions, padded and masked CUDA graphs)
        # against the same stock sampler.
        dit.compile_regions(model.transformer)
        graphed = sampler.sample(
            model, cond, ids, cond.shape[1] + 100, seed=1, steps=NFE, cfg_strength=2.0,
            sway=-1.0, runner=GraphSteps(),
        )  # fmt: skip
        diff = float((graphed.float() - theirs.float()).abs().max())
        summary["equivalence_graphs"] = {
            "max_abs_diff": diff,
            "ok": bool(np.isfinite(diff) and diff < 5e-2),
        }
        emit({"event": "equivalence", "path": "compiled+graphs", **summary["equivalence_graphs"]},
             records)  # fmt: skip
        # The vocoder's graph path (padded, masked backbone) against Vocos.decode.
        vocos = load_vocos(files, device)
        mel = torch.randn(1, 100, 281, device=device)
        with torch.inference_mode():
            diff = float((GraphVocoder(vocos).decode(mel) - vocos.decode(mel)).abs().max())
        summary["equivalence_vocoder"] = {"max_abs_diff": diff, "ok": bool(diff < 1e-3)}
        emit({"event": "equivalence", "path": "vocoder_graphs",
              **summary["equivalence_vocoder"]}, records)  # fmt: skip
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--out", type=Path, help="where results go (default: bench/results; with --tiny, nowhere)"
    )
    parser.add_argument("--runs", type=int, help="measured runs per line (default: 5; --tiny: 2)")
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the script on CPU")
    parser.add_argument("--paths", nargs="*", help="only these of our paths (default: all)")
    parser.add_argument("--startup-only", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.startup_only:
        asyncio.run(startup_only(args.startup_only))
        raise SystemExit(0)
    if args.runs is None:
        args.runs = 2 if args.tiny else 5
    result = asyncio.run(main(args))
    out = args.out or (None if args.tiny else Path("bench/results"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        latest = out / "engine-latest.json"
        if latest.exists():
            flags = compare(json.loads(latest.read_text()), result)
            print(
                json.dumps({"event": "regression_check", "flags": flags, "ok": not flags}),
                flush=True,
            )
            latest.replace(out / "engine-previous.json")
        latest.write_text(json.dumps(result, indent=1))
