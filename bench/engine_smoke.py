"""GPU smoke run of the engine: F5TTS_v1_Base shape with random weights (the
cost does not depend on their values), published Vocos shape, fp16, compiled.

Prints JSON lines: load time, compile/warm-up time, and for a short and a
medium chat line the time to first audio, total time and real-time factor.
Random weights: the audio is noise; nothing here says anything about quality.

Run: python -m bench.engine_smoke [--out DIR] [--runs 3] [--no-compile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import torch

from bot.config import ArchConfig, EngineConfig
from engine.checkpoints import SAMPLE_RATE, ModelFiles
from engine.synth import Engine
from engine.voices import VoiceLibrary
from tests.engine.tiny import PUBLISHED_VOCOS_CONFIG, write_f5, write_vocos, write_voice

LINES = {
    "short": "Thanks for the follow, welcome in!",
    "medium": (
        "That was an amazing play, I honestly did not expect the comeback in the last round, "
        "well done everyone."
    ),
    "long": (
        "Okay chat, quick update. We are taking a short break in five minutes. "
        "Grab some water, stretch a little, and I will be right back with the next map."
    ),
}
REFERENCE_TEXT = (
    "Hello everyone and welcome back to the stream, today we are going to try something new."
)


def emit(record: dict[str, object], sink: list[dict[str, object]]) -> None:
    sink.append(record)
    print(json.dumps(record), flush=True)


def graphs() -> int:
    """Graphs torch.compile has built so far: a rise after warm-up is a recompile on air."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


async def measure(engine: Engine, text: str) -> dict[str, float]:
    before = graphs()
    started = time.perf_counter()
    first = None
    samples = 0
    async for chunk in engine.stream(text, "ref", seed=0):
        if first is None:
            first = time.perf_counter() - started
        samples += len(chunk)
    total = time.perf_counter() - started
    seconds = samples / SAMPLE_RATE
    return {
        "ttfa_ms": round((first or total) * 1000, 1),
        "total_ms": round(total * 1000, 1),
        "audio_s": round(seconds, 2),
        "rtf": round(total / seconds, 4) if seconds else 0.0,
        "new_graphs": graphs() - before,
    }


async def main(args: argparse.Namespace, records: list[dict[str, object]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="smoke-"))
    t0 = time.perf_counter()
    model, vocab = write_f5(root / "f5", ArchConfig())
    vocos_dir = write_vocos(root / "vocos", config_doc=PUBLISHED_VOCOS_CONFIG)
    write_voice(root / "voices", "ref", REFERENCE_TEXT, seconds=7.0)
    emit(
        {
            "event": "checkpoint_written",
            "s": round(time.perf_counter() - t0, 1),
            "model_bytes": model.stat().st_size,
        },
        records,
    )
    files = ModelFiles(model, vocab, vocos_dir / "config.yaml", vocos_dir / "pytorch_model.bin")
    config = EngineConfig(nfe_steps=8, compile=not args.no_compile, device="auto", dtype="auto")
    engine = Engine(config, VoiceLibrary(root / "voices"), files)
    t1 = time.perf_counter()
    engine.start()
    await engine.wait_ready()
    emit(
        {
            "event": "engine_ready",
            "device": engine.device,
            "dtype": str(engine.dtype),
            "compile": config.compile,
            "load_and_warmup_s": round(time.perf_counter() - t1, 1),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        },
        records,
    )
    for name, text in LINES.items():
        cold = await measure(engine, text)
        emit({"event": "line", "line": name, "run": "cold", **cold}, records)
        runs = [await measure(engine, text) for _ in range(args.runs)]
        for i, r in enumerate(runs):
            emit({"event": "line", "line": name, "run": i, **r}, records)
    if torch.cuda.is_available():
        emit(
            {"event": "memory", "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)},
            records,
        )
    engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    records: list[dict[str, object]] = []
    asyncio.run(main(args, records))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "engine_smoke.json").write_text(json.dumps(records, indent=1))
