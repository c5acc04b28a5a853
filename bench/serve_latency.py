"""What the network costs first audio: the same engine asked in-process
(`Engine.stream`) and through `ishowtts serve` over loopback (`RemoteEngine` to
an `EngineServer` in this process), interleaved, for the same line and seed.

Model as bench/engine.py builds it: F5TTS_v1_Base and Vocos in their published
shapes with random weights, fp16, NFE 8, compiled with CUDA graphs on a GPU; a
7 s reference. Per run it measures time to first audio both ways, and the
wire's own share of the remote one: the remote time minus the engine's own
time to its first chunk for that request (taken inside the server), so the
engine's run-to-run noise drops out. Prints a JSON line per run and one line of
figures at the end; the remote audio is checked to equal the local audio.

On the GPU:  python -m bench.serve_latency [--runs 30]
Check the script on the CPU (tiny random model): python -m bench.serve_latency --tiny
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from bench.engine import LINES, NFE, write_model
from bot.remote_engine import RemoteEngine
from engine.config import EngineConfig, ServeConfig
from engine.serve import EngineServer, engine_info
from engine.synth import Engine
from engine.voices import VoiceLibrary


class TimedEngine:
    """The engine as the server sees it, noting when each request reached it and
    when its first chunk came out."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.called_at = 0.0
        self.first_at = 0.0

    async def stream(
        self, text: str, voice: str, seed: int | None = None, **options: Any
    ) -> AsyncGenerator[np.ndarray, None]:
        self.called_at = time.perf_counter()
        self.first_at = 0.0
        async for chunk in self.engine.stream(text, voice, seed, **options):
            if not self.first_at:
                self.first_at = time.perf_counter()
            yield chunk


async def first_audio(stream: AsyncGenerator[np.ndarray, None]) -> tuple[float, np.ndarray]:
    """Seconds to the first chunk, and the whole audio."""
    started = time.perf_counter()
    first = 0.0
    chunks = []
    async for chunk in stream:
        if not first:
            first = time.perf_counter() - started
        chunks.append(chunk)
    return first, np.concatenate(chunks)


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    files, arch = write_model(root, args.tiny)
    gpu = device == "cuda"
    config = EngineConfig(nfe_steps=NFE, arch=arch, device=device, compile=gpu, cuda_graphs=gpu)
    engine = Engine(config, VoiceLibrary(root / "voices"), files)
    engine.start()
    await engine.wait_ready()
    timed = TimedEngine(engine)
    server = EngineServer(
        timed,  # type: ignore[arg-type]  # stream() is all the server asks of it
        engine.voices,
        ServeConfig(requests_per_minute=100_000, burst=100_000),
        default_voice="ref",
        info=engine_info(engine),
    )
    url = await server.start(socket.create_server(("127.0.0.1", 0)))
    client = RemoteEngine(EngineConfig(url=url))
    client.start()
    await client.wait_ready()
    text = LINES[args.line]
    try:
        for _ in range(3):  # warm both paths
            await first_audio(engine.stream(text, "ref", 0))
            await first_audio(client.stream(text, "ref", 0))
        local: list[float] = []
        remote: list[float] = []
        wire: list[float] = []
        equal = True
        for run in range(args.runs):
            # Alternate which goes first, so drift (clocks, caches) favours neither.
            order = ("local", "remote") if run % 2 == 0 else ("remote", "local")
            audio: dict[str, np.ndarray] = {}
            for path in order:
                if path == "local":
                    seconds, audio[path] = await first_audio(engine.stream(text, "ref", 0))
                    local.append(seconds)
                else:
                    seconds, audio[path] = await first_audio(client.stream(text, "ref", 0))
                    remote.append(seconds)
                    # Network, framing and both event loops: the remote time less the
                    # engine's own time to its first chunk for this very request.
                    wire.append(seconds - (timed.first_at - timed.called_at))
            equal = equal and np.array_equal(audio["local"], audio["remote"])
            record = {
                "event": "run",
                "run": run,
                "local_ms": round(local[-1] * 1000, 3),
                "remote_ms": round(remote[-1] * 1000, 3),
                "wire_ms": round(wire[-1] * 1000, 3),
            }
            print(json.dumps(record), flush=True)
        summary = {
            "event": "summary",
            "device": torch.cuda.get_device_name() if gpu else "cpu",
            "path": engine.path,
            "line": args.line,
            "runs": args.runs,
            "local_ms_median": median_ms(local),
            "remote_ms_median": median_ms(remote),
            "difference_ms": round(median_ms(remote) - median_ms(local), 3),
            "wire_ms_median": median_ms(wire),
            "wire_ms_max": round(max(wire) * 1000, 3),
            "same_audio": bool(equal),
        }
        print(json.dumps(summary), flush=True)
        print(
            f"first audio, {summary['device']} ({summary['path']}), {args.line} line, "
            f"{args.runs} runs: in-process {summary['local_ms_median']} ms, over loopback "
            f"{summary['remote_ms_median']} ms (difference of medians "
            f"{summary['difference_ms']:+} ms); the wire's own share: median "
            f"{summary['wire_ms_median']} ms, worst {summary['wire_ms_max']} ms; "
            f"same audio: {'yes' if equal else 'NO'}",
            flush=True,
        )
        return summary
    finally:
        await client.aclose()
        await server.close()
        engine.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, help="measured runs (default: 30; --tiny: 3)")
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the script on CPU")
    parser.add_argument("--line", choices=sorted(LINES), default="short", help="which line")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.tiny else 30
    return args


if __name__ == "__main__":
    # The engine's and the server's log lines go to stderr; stdout is the figures.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(parse()))
